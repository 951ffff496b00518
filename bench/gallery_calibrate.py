"""Check the gallery's 1:N operating point on LFW: measured FPIR and rank-1 hit rate per gallery size.

    python bench/gallery_calibrate.py [--lfw ../shared/lfw-calib] [--sizes 100 500 1000]
        [--splits 20] [--cache /tmp/kyc-gallery-lfw.npz] [--results bench/RESULTS.md]

For each gallery size N and each random split of LFW's identities:

- N identities are enrolled with one image each, and every other identity is a stranger (both
  drawn in proportion from identities with one image and with several, so the enrolled ones
  with several images can probe the gallery with their other images);
- every image of a stranger is searched: a hit at or above the gallery threshold for N is a
  false positive (FPIR = share of strangers' searches with any hit);
- every other image of an enrolled identity is searched: a hit is its own identity ranked first
  at or above the threshold (rank-1 hit rate = 1 - FNIR).

The threshold is what ``KYCDeepFaceDB.find_face`` uses (``shared.gallery.threshold``), from the
shipped confidence map. It is also compared with the 1:1 threshold (FAR 0.1 %) used as is.
Embeddings (face nearest the centre of each 250x250 LFW image) are cached per model in /tmp so
reruns take seconds. An image whose face the gallery's probe gate (``KYC_QUALITY_DEFAULT``) would
refuse is counted as a failure to acquire and neither enrolled nor searched: the FTA is printed
beside FPIR and FNIR (ISO/IEC 19795-1), never folded into a miss.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gallery_common import machine  # noqa: E402
from bench.results import write_section  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.engine import KYCDeepFace  # noqa: E402
from shared.gallery.threshold import gallery_threshold, per_comparison_far  # noqa: E402

HEADING = "Gallery operating point"


def embed_lfw(engine: KYCDeepFace, lfw: Path, cache: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(vectors, identity names) of every LFW image with a usable face, and the number of images
    without one (failures to acquire), cached as .npz."""
    if cache.is_file():
        data = np.load(cache)
        return data["vectors"], data["names"], int(data["fta"])
    paths = sorted((lfw / "images").glob("*/*.jpg"))
    vectors: list[np.ndarray] = []
    names: list[str] = []
    centre = np.array([125.0, 125.0])
    started = time.perf_counter()
    for i, path in enumerate(paths):
        faces = engine.analyse(path.read_bytes())
        if faces:
            best = min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
            if best.vector is not None:
                vectors.append(best.vector)
                names.append(path.parent.name)
        if (i + 1) % 500 == 0:
            print(f"embedded {i + 1}/{len(paths)} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    arr, labels, fta = np.stack(vectors).astype(np.float32), np.array(names), len(paths) - len(vectors)
    np.savez(cache, vectors=arr, names=labels, fta=fta)
    return arr, labels, fta


def run_split(
    vectors: np.ndarray, names: np.ndarray, size: int, rng: np.random.Generator, cuts: tuple[float, float]
) -> dict[str, int]:
    """Counts for one random split: stranger searches and hits, mated searches and rank-1 hits."""
    by_name: dict[str, np.ndarray] = {}
    for name in np.unique(names):
        by_name[name] = np.flatnonzero(names == name)
    identities = list(by_name)
    rng.shuffle(identities)
    mated = [n for n in identities if len(by_name[n]) >= 2]
    single = [n for n in identities if len(by_name[n]) == 1]
    # Every identity not enrolled is a stranger; both kinds in proportion.
    n_strangers = len(identities) - size
    if n_strangers < 100:
        raise SystemExit(f"LFW has too few identities for a gallery of {size} and 100 strangers")
    take_mated = round(n_strangers * len(mated) / len(identities))
    strangers = mated[:take_mated] + single[: n_strangers - take_mated]
    enrolled = (mated[take_mated:] + single[n_strangers - take_mated :])[:size]
    gallery_rows = np.array([rng.choice(by_name[n]) for n in enrolled])
    gallery = vectors[gallery_rows]
    counts = {"strangers": 0, "fp": 0, "fp_1to1": 0, "mated": 0, "hit": 0, "rank1": 0, "hit_1to1": 0}
    stranger_rows = np.concatenate([by_name[n] for n in strangers])
    best = (vectors[stranger_rows] @ gallery.T).max(axis=1)
    counts["strangers"] = len(stranger_rows)
    counts["fp"] = int((best >= cuts[0]).sum())
    counts["fp_1to1"] = int((best >= cuts[1]).sum())
    enrolled_set = {n: i for i, n in enumerate(enrolled)}
    for name, row in zip(enrolled, gallery_rows, strict=True):
        probes = [r for r in by_name[name] if r != row]
        if not probes:
            continue
        sims = vectors[probes] @ gallery.T
        top = sims.argmax(axis=1)
        right = top == enrolled_set[name]
        counts["mated"] += len(probes)
        counts["rank1"] += int(right.sum())
        counts["hit"] += int((right & (sims.max(axis=1) >= cuts[0])).sum())
        counts["hit_1to1"] += int((right & (sims.max(axis=1) >= cuts[1])).sum())
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "lfw-calib")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--cache", type=Path, help="embeddings cache (default: /tmp/kyc-gallery-lfw-<model>.npz)")
    parser.add_argument("--results", type=Path, help="write the table into this Markdown file")
    args = parser.parse_args()

    settings = Settings()
    engine = KYCDeepFace(settings=settings.model_copy(update={"liveness": "off"}))
    cache = args.cache or Path(f"/tmp/kyc-gallery-lfw-{engine.model_id}.npz")
    vectors, names, fta = embed_lfw(engine, args.lfw, cache)
    cmap = engine.confidence_map
    one_to_one = cmap.cosine_for(settings.verify_confidence)
    rng = np.random.default_rng(0)
    rows = [
        "| gallery N | per-comparison FAR | threshold (cosine) | stranger searches | FPIR measured | "
        "rank-1 hit rate at threshold (1 - FNIR) | rank-1 accuracy, no threshold | "
        "FPIR at the 1:1 threshold | hit rate at the 1:1 threshold |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in args.sizes:
        cut = gallery_threshold(cmap, settings.gallery_fpir, size, settings.verify_confidence)
        totals: dict[str, int] = {}
        fpirs = []
        for _ in range(args.splits):
            counts = run_split(vectors, names, size, rng, (cut, one_to_one))
            fpirs.append(counts["fp"] / counts["strangers"])
            for key, value in counts.items():
                totals[key] = totals.get(key, 0) + value
        fpir = totals["fp"] / totals["strangers"]
        rows.append(
            f"| {size} | {per_comparison_far(settings.gallery_fpir, size):.2e} | {cut:.3f} | {totals['strangers']} | "
            f"{100 * fpir:.2f} % (split sd {100 * float(np.std(fpirs)):.2f}) | "
            f"{100 * totals['hit'] / totals['mated']:.1f} % of {totals['mated']} | "
            f"{100 * totals['rank1'] / totals['mated']:.1f} % | "
            f"{100 * totals['fp_1to1'] / totals['strangers']:.1f} % | "
            f"{100 * totals['hit_1to1'] / totals['mated']:.1f} % |"
        )
    text = (
        f"Target FPIR {100 * settings.gallery_fpir:g} % (`KYC_GALLERY_FPIR`), model {cmap.model_id}, "
        f"{len(vectors)} LFW images of {len(np.unique(names))} identities (`{args.lfw.name}`); "
        f"failure to acquire at the probe gate `{settings.quality_default.value}`: {fta} of {len(vectors) + fta} "
        f"images ({100 * fta / (len(vectors) + fta):.2f} %), neither enrolled nor searched; "
        f"{args.splits} random splits per size. 1:1 threshold: cosine {one_to_one:.3f} (FAR 0.1 %). "
        "The FAR table behind the threshold was measured on impostor pairs of these same identities, "
        "so this is an in-sample check of the 1 - (1 - FPIR)^(1/N) model, not a held-out estimate.\n\n"
        + "\n".join(rows)
        + "\n\n"
        + machine()
    )
    print(text)
    if args.results:
        write_section(args.results, HEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
