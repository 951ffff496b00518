"""Verify against phone photos of ID cards, beside the same pairs with the plain photo as document.

Usage::

    python bench/documents.py [--pairs 200] [--seed 26] [--lfw ../shared/lfw-calib]
                              [--cache DIR] [--timing 40] [--jobs 2] [--json PATH]

For each LFW pair of ``lfw-calib`` (folds 1-3), the first photo is the selfie and the second is
the document twice: as it is (the "plain" column) and printed as the portrait of a synthetic ID-1
card photographed by a phone (``harness/cards.py``, seeded by ``--seed``; a quarter of the cards
at each of 0, 90, 180 and 270 degrees, tilted up to 45). In the same run both documents also go
through an engine with ``KYC_ORIENTATION_SEARCH=false`` (the "upright only" columns: the path
before the orientation search). Everything runs through ``engine.selfie_faces`` / ``document_faces`` and
``verification.decide`` at the default ``verify_confidence``, as a ``verify`` job does.

Printed: accuracy (a failure to acquire counts as "not verified"), TAR, FAR and document FTA
(no usable face on the document), overall and per orientation, tilt and portrait style; then the
cost of a document ``describe`` (median ms and detector passes per card), upright and turned,
against the upright-only path, on ``--timing`` cards of each orientation.

``--pairs N`` takes N pairs spread evenly over the set (same-person and different-person alike)
for a quick look; the full set is 1,800 pairs. Generated cards are cached in ``--cache`` (default
a directory under the system's temporary directory named for the seed): the generator is
deterministic, so a cached card is the card.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.calibrate import Pair, image_path, read_pairs  # noqa: E402
from bench.results import command_line, machine  # noqa: E402
from harness.cards import CardSpec, card_photo  # noqa: E402
from shared import features  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.engine import KYCDeepFace  # noqa: E402
from shared.models import Detection  # noqa: E402
from shared.schemas import FacesResult, InvalidImageResult  # noqa: E402
from shared.verification import VerificationResult, decide  # noqa: E402

COLUMNS = ("plain", "plain, upright only", "card", "card, upright only")


@dataclass
class Row:
    genuine: bool
    spec: CardSpec
    verified: dict[str, bool]
    doc_acquired: dict[str, bool]
    confidence: dict[str, float | None]
    selfie_identity: str
    document_identity: str
    selfie_vector: np.ndarray | None
    portrait_vector: dict[str, np.ndarray | None]


def _vectors(answer: VerificationResult) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The compared selfie face's and portrait's unit embeddings, where the pair was compared."""
    if answer.selfie_face is None or answer.document_face is None:
        return None, None
    if not isinstance(answer.selfie, FacesResult) or not isinstance(answer.document, FacesResult):
        return None, None
    selfie = features.decode(answer.selfie.faces[answer.selfie_face].template()).vector
    return selfie, features.decode(answer.document.faces[answer.document_face].template()).vector


def cross_far(rows: list[Row], engine: KYCDeepFace) -> str:
    """FAR at the default over every different-identity selfie x document pair of the run."""
    lines = [
        "| document | impostor pairs | FAR at verify_confidence | highest impostor confidence |",
        "|---|---:|---:|---:|",
    ]
    compared = [r for r in rows if r.selfie_vector is not None]
    if not compared:
        return ""
    selfies = np.stack([r.selfie_vector for r in compared if r.selfie_vector is not None])
    names = np.array([r.selfie_identity for r in compared])
    for column in ("plain", "card"):
        kept = [r for r in rows if r.portrait_vector[column] is not None]
        portraits = np.stack([r.portrait_vector[column] for r in kept])  # type: ignore[misc]
        owners = np.array([r.document_identity for r in kept])
        cosines = selfies @ portraits.T
        impostor = names[:, None] != owners[None, :]
        scores = cosines[impostor]
        confidence = engine.confidence_map.confidence(scores)
        accepted = float(np.mean(confidence >= engine.verify_confidence))
        lines.append(
            f"| {column} | {int(impostor.sum()):,} | {100 * accepted:.3f} % | {float(np.max(confidence)):.3f} |"
        )
    return "\n".join(lines)


class CountingDetector:
    """The engine's detector, counting its passes (the cost that the orientation search adds)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.calls = 0

    def detect(self, bgr: object) -> Detection:
        self.calls += 1
        return self._inner.detect(bgr)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def card_bytes(lfw: Path, cache: Path, pair: Pair, spec: CardSpec) -> bytes:
    path = cache / f"{spec.seed}-{spec.index:04d}.jpg"
    if path.exists():
        return path.read_bytes()
    portrait = cv2.imread(str(image_path(lfw, pair[2], pair[3])))
    if portrait is None:
        raise FileNotFoundError(f"cannot read the portrait of {pair}")
    data = card_photo(portrait, spec)
    partial = path.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(path)  # a run stopped half-way leaves no truncated card behind
    return data


def _make_card(job: tuple[Path, Path, Pair, CardSpec]) -> None:
    card_bytes(*job)


def generate(lfw: Path, cache: Path, jobs: list[tuple[Pair, CardSpec]], processes: int) -> None:
    """Make the cards missing from ``cache`` in ``processes`` processes (a 12 MP card takes ~1 s)."""
    missing = [
        (lfw, cache, pair, spec) for pair, spec in jobs if not (cache / f"{spec.seed}-{spec.index:04d}.jpg").exists()
    ]
    if not missing:
        return
    print(f"[documents] generating {len(missing)} cards in {processes} processes", file=sys.stderr)
    with multiprocessing.Pool(processes) as pool:
        for _ in pool.imap_unordered(_make_card, missing, chunksize=4):
            pass


def acquired(result: FacesResult | InvalidImageResult) -> bool:
    return isinstance(result, FacesResult) and bool(result.faces)


def tilt_band(tilt: float) -> str:
    t = abs(tilt)
    return "tilt < 5" if t < 5 else "tilt 5-20" if t < 20 else "tilt 20-45"


def summarise(rows: list[Row], column: str) -> tuple[float, float, float, float]:
    """(accuracy, TAR, FAR, document FTA), in per cent."""
    n = len(rows)
    genuine = [r for r in rows if r.genuine]
    impostor = [r for r in rows if not r.genuine]
    correct = sum(r.verified[column] == r.genuine for r in rows)
    tar = sum(r.verified[column] for r in genuine) / max(1, len(genuine))
    far = sum(r.verified[column] for r in impostor) / max(1, len(impostor))
    fta = sum(not r.doc_acquired[column] for r in rows) / max(1, n)
    return 100 * correct / max(1, n), 100 * tar, 100 * far, 100 * fta


def grouped(rows: list[Row]) -> dict[str, list[Row]]:
    """The rows of every line of the table: all, per orientation, tilt band and portrait style."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups["all"].append(r)
        groups[f"{r.spec.rotation} deg"].append(r)
        groups[tilt_band(r.spec.tilt)].append(r)
        groups[r.spec.style].append(r)
    return groups


def table(rows: list[Row]) -> str:
    groups = grouped(rows)
    order = ["all", "0 deg", "90 deg", "180 deg", "270 deg", "tilt < 5", "tilt 5-20", "tilt 20-45"]
    order += ["colour", "grey", "faded"]
    head = "| cards | pairs (genuine) |"
    rule = "|---|---:|"
    for c in COLUMNS:
        head += f" {c}: acc / TAR / FAR / doc FTA % |"
        rule += "---:|"
    lines = [head, rule]
    for key in order:
        group = groups.get(key, [])
        if not group:
            continue
        line = f"| {key} | {len(group)} ({sum(r.genuine for r in group)}) |"
        for c in COLUMNS:
            acc, tar, far, fta = summarise(group, c)
            line += f" {acc:.2f} / {tar:.2f} / {far:.2f} / {fta:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def timed(describe: Callable[[bytes], object], counter: CountingDetector, data: bytes) -> tuple[float, int]:
    before = counter.calls
    start = time.perf_counter()
    describe(data)
    return 1000 * (time.perf_counter() - start), counter.calls - before


def cost_table(engines: dict[str, tuple[KYCDeepFace, CountingDetector]], cards: dict[str, list[bytes]]) -> str:
    """Median ms and mean detector passes of a document describe, per orientation and engine."""
    lines = ["| card orientation | cards | " + " | ".join(f"{name}: ms (passes)" for name in engines) + " | ratio |"]
    lines.append("|---|---:|" + "---:|" * len(engines) + "---:|")
    for label, batch in sorted(cards.items(), key=lambda item: (int(item[0].split()[0]), len(item[0]))):
        cells, medians = [], []
        for engine, counter in engines.values():
            runs = [timed(engine.document_faces, counter, data) for data in batch]
            ms = statistics.median(t for t, _ in runs)
            medians.append(ms)
            cells.append(f"{ms:.1f} ({statistics.mean(p for _, p in runs):.2f})")
        ratio = medians[0] / medians[-1] if medians[-1] else float("nan")
        lines.append(f"| {label} | {len(batch)} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "lfw-calib")
    parser.add_argument("--pairs", type=int, default=0, help="pairs spread over the set (0: all 1,800)")
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--timing", type=int, default=40, help="cards per orientation in the cost table")
    parser.add_argument("--jobs", type=int, default=2, help="processes generating the missing cards")
    parser.add_argument("--json", type=Path, default=None, help="write accuracy, TAR, FAR and FTA per line here")
    args = parser.parse_args()
    cache = args.cache or Path(tempfile.gettempdir()) / f"kyc-cards-{args.seed}"
    cache.mkdir(parents=True, exist_ok=True)

    pairs = [p for fold in read_pairs(args.lfw) for p in fold]
    indices = list(range(len(pairs)))
    if args.pairs and args.pairs < len(pairs):
        step = len(pairs) / args.pairs
        indices = [int(i * step) for i in range(args.pairs)]
    generate(args.lfw, cache, [(pairs[i], CardSpec.draw(args.seed, i)) for i in indices], args.jobs)
    settings = Settings(intra_op_threads=1)
    engines: dict[str, tuple[KYCDeepFace, CountingDetector]] = {}
    for name, search in (("search", True), ("upright only", False)):
        engine = KYCDeepFace(settings=settings.model_copy(update={"orientation_search": search}))
        counter = CountingDetector(engine.detector)
        engine.detector = counter  # type: ignore[assignment]
        engine.warm_up()
        engines[name] = (engine, counter)
    new, old = engines["search"][0], engines["upright only"][0]

    rows: list[Row] = []
    by_rotation: dict[str, list[bytes]] = defaultdict(list)
    started = time.perf_counter()
    for n, i in enumerate(indices):
        pair = pairs[i]
        spec = CardSpec.draw(args.seed, i)
        selfie = new.selfie_faces(image_path(args.lfw, pair[0], pair[1]).read_bytes())
        plain = image_path(args.lfw, pair[2], pair[3]).read_bytes()
        card = card_bytes(args.lfw, cache, pair, spec)
        documents = {
            "plain": new.document_faces(plain),
            "plain, upright only": old.document_faces(plain),
            "card": new.document_faces(card),
            "card, upright only": old.document_faces(card),
        }
        for label in (f"{spec.rotation} deg", "0 deg, tilt < 5" if spec.rotation == 0 and abs(spec.tilt) < 5 else ""):
            if label and len(by_rotation[label]) < args.timing:
                by_rotation[label].append(card)
        answers: dict[str, VerificationResult] = {
            c: decide(selfie, doc, new.compare, new.enforced_liveness) for c, doc in documents.items()
        }
        selfie_vector = _vectors(answers["plain"])[0]
        rows.append(
            Row(
                genuine=pair[0] == pair[2],
                spec=spec,
                verified={c: a.verified for c, a in answers.items()},
                doc_acquired={c: acquired(doc) for c, doc in documents.items()},
                confidence={c: a.confidence for c, a in answers.items()},
                selfie_identity=pair[0],
                document_identity=pair[2],
                selfie_vector=selfie_vector if selfie_vector is not None else _vectors(answers["card"])[0],
                portrait_vector={c: _vectors(answers[c])[1] for c in ("plain", "card")},
            )
        )
        if not rows[-1].doc_acquired["card"]:
            card_doc = documents["card"]
            why = sorted({p.reason.value for p in card_doc.partial_faces}) if isinstance(card_doc, FacesResult) else []
            print(f"[documents] no portrait on card {i} ({spec}): {why or 'no face'}", file=sys.stderr)
        if (n + 1) % 100 == 0:
            print(f"[documents] {n + 1}/{len(indices)} pairs, {time.perf_counter() - started:.0f} s", file=sys.stderr)

    genuine_by_turn = {
        rot: [r for r in rows if r.genuine and r.spec.rotation == rot and r.verified["card"]] for rot in (0, 180)
    }
    print(f"`{command_line('bench/documents.py')}` on {machine()}; {len(rows)} pairs, card seed {args.seed}.\n")
    print(table(rows))
    upright = sum(1 for r in rows if r.genuine and r.spec.rotation == 0)
    down = sum(1 for r in rows if r.genuine and r.spec.rotation == 180)
    print(
        f"\nGenuine cards verified: upright {len(genuine_by_turn[0])}/{upright}, "
        f"upside down {len(genuine_by_turn[180])}/{down}.\n"
    )
    print(cross_far(rows, new) + "\n")
    if args.json is not None:
        measured = {
            key: {c: dict(zip(("accuracy", "tar", "far", "fta"), summarise(group, c), strict=True)) for c in COLUMNS}
            for key, group in grouped(rows).items()
        }
        args.json.write_text(json.dumps({"pairs": len(rows), "seed": args.seed, "percent": measured}, indent=1))
    print(cost_table(engines, by_rotation))


if __name__ == "__main__":
    main()
