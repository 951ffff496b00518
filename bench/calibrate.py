"""Fit the cosine -> confidence map on the LFW calibration folds and report verification accuracy.

Usage::

    python bench/calibrate.py [--models fr_feature,mobilefacenet] [--lfw ../shared/lfw-calib]
                              [--write] [--results bench/RESULTS.md] [--cache DIR]

What it measures, per embedding model, on the pipeline the product runs (YuNet landmarks,
similarity alignment, the model):

* the map is fitted on every detected face (quality gates are measured, not applied): from
  *every* pair of images in the set (millions of impostor pairs, thousands of genuine ones);
* protocol accuracy on the folds' pairs, cross-validated by fold (threshold chosen on the other
  folds, accuracy on the held-out one), as in LFW's 10-fold protocol;
* held-out folds: thresholds for FAR 1e-3 and 1e-4 fitted on two folds' identities, TAR and FAR
  measured on the third fold's (never seen by the fit): what a held-out set would show;
* per quality level, in the ISO/IEC 19795-1 way: FTA (images with no usable face, and comparisons
  that therefore never happen), then FNMR / FMR among acquired comparisons at the default
  ``verify_confidence``, then the generalised rates (GFRR = FTA + (1 - FTA) FNMR,
  GFAR = (1 - FTA) FMR) and accuracy with a failure-to-acquire counted as a non-match;
* what hurts matching: TAR of genuine pairs by the worse face's pose and sharpness, from which the
  quality gates in ``shared/config.py`` were derived.

``--write`` saves each fitted map to ``shared/data/calibration-<model>.json`` (shipped as data).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared import calibration  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.engine import KYCDeepFace  # noqa: E402
from shared.models import get_spec  # noqa: E402
from shared.schemas import QualityGate, QualityLevel  # noqa: E402

Pair = tuple[str, int, str, int]


def read_pairs(lfw: Path) -> list[list[Pair]]:
    lines = (lfw / "pairs.txt").read_text().splitlines()
    n_folds, n = (int(x) for x in lines[0].split())
    rows = [line.split("\t") for line in lines[1:]]
    folds: list[list[Pair]] = []
    for f in range(n_folds):
        chunk = rows[f * 2 * n : (f + 1) * 2 * n]
        pairs: list[Pair] = []
        for r in chunk:
            if len(r) == 3:
                pairs.append((r[0], int(r[1]), r[0], int(r[2])))
            else:
                pairs.append((r[0], int(r[1]), r[2], int(r[3])))
        folds.append(pairs)
    return folds


def image_path(lfw: Path, name: str, idx: int) -> Path:
    return lfw / "images" / name / f"{name}_{idx:04d}.jpg"


MEASURES = ("detected", "cropped", "width", "yaw", "pitch", "luma", "sharpness")


def embed_all(engine: KYCDeepFace, paths: list[Path]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One embedding per image, the detected face nearest the centre (LFW's labelled face), and
    that face's quality measures. Every detected face is embedded: gates are applied afterwards.
    """
    vectors = np.zeros((len(paths), engine.embedder.spec.dim), np.float32)
    measures = {k: np.zeros(len(paths)) for k in MEASURES}
    centre = np.array([125.0, 125.0])
    for i, path in enumerate(paths):
        faces = [f for f in engine.analyse(path.read_bytes(), embed_partial=True) if f.vector is not None]
        if not faces:
            continue
        best = min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
        g, a = best.geometry, best.appearance
        if best.vector is None or a is None:
            continue
        vectors[i] = best.vector
        for key, value in zip(MEASURES, (1, g.cropped, g.width, g.yaw, g.pitch, a.luma, a.sharpness), strict=True):
            measures[key][i] = float(value)
    return vectors, measures


def acquired(measures: dict[str, np.ndarray], gate: QualityGate | None) -> np.ndarray:
    """Which images give a usable face under ``gate`` (None: every detected face)."""
    ok = measures["detected"] > 0
    if gate is None:
        return ok
    yaw, pitch = np.abs(measures["yaw"]), measures["pitch"]
    return (
        ok
        & (measures["cropped"] == 0)
        & (measures["width"] >= gate.min_face_px)
        & (yaw <= gate.max_yaw)
        & (pitch >= gate.min_pitch)
        & (pitch <= gate.max_pitch)
        & (measures["luma"] >= gate.min_luma)
        & ((measures["sharpness"] >= gate.min_sharpness) | (measures["luma"] < gate.min_luma))
    )


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    candidates = np.unique(scores)
    acc = [((scores >= t) == labels).mean() for t in candidates]
    return float(candidates[int(np.argmax(acc))])


@dataclass
class PairSet:
    """Every pair of images of the set (upper triangle), with labels and folds."""

    i: np.ndarray
    j: np.ndarray
    scores: np.ndarray
    same: np.ndarray
    fold_i: np.ndarray
    fold_j: np.ndarray


def all_pairs(vectors: np.ndarray, names: np.ndarray, folds: np.ndarray) -> PairSet:
    iu = np.triu_indices(len(vectors), k=1)
    scores = (vectors @ vectors.T)[iu]
    return PairSet(iu[0], iu[1], scores, names[iu[0]] == names[iu[1]], folds[iu[0]], folds[iu[1]])


def held_out(pairs: PairSet, detected: np.ndarray, far: float, n_folds: int) -> tuple[float, float]:
    """(TAR, FAR) on each fold's pairs at the threshold fitted on the other folds, averaged."""
    both = detected[pairs.i] & detected[pairs.j]
    tars, fars = [], []
    for f in range(n_folds):
        train = both & ~pairs.same & (pairs.fold_i != f) & (pairs.fold_j != f)
        test = both & (pairs.fold_i == f) & (pairs.fold_j == f)
        t = calibration.threshold_at_far(pairs.scores[train], far)
        tars.append(float((pairs.scores[test & pairs.same] >= t).mean()))
        fars.append(float((pairs.scores[test & ~pairs.same] >= t).mean()))
    return float(np.mean(tars)), float(np.mean(fars))


def iso_rates(pairs: PairSet, ok: np.ndarray, threshold: float) -> dict[str, float]:
    """FTA, FNMR/FMR among acquired comparisons, and the generalised rates (ISO/IEC 19795-1)."""
    acq = ok[pairs.i] & ok[pairs.j]
    gen, imp = pairs.same, ~pairs.same
    fta_gen, fta_imp = 1 - float(acq[gen].mean()), 1 - float(acq[imp].mean())
    fnmr = float((pairs.scores[gen & acq] < threshold).mean())
    fmr = float((pairs.scores[imp & acq] >= threshold).mean())
    return {
        "fta_images": 1 - float(ok.mean()),
        "fta_genuine_pairs": fta_gen,
        "fnmr": fnmr,
        "fmr": fmr,
        "gfrr": fta_gen + (1 - fta_gen) * fnmr,
        "gfar": (1 - fta_imp) * fmr,
    }


def protocol_accuracy(ps: np.ndarray, pl: np.ndarray, pf: np.ndarray, n_folds: int) -> tuple[float, float]:
    accs = []
    for f in range(n_folds):
        t = best_threshold(ps[pf != f], pl[pf != f])
        accs.append(float(((ps[pf == f] >= t) == pl[pf == f]).mean()))
    return float(np.mean(accs)), float(np.std(accs))


def _tar_by_bin(
    pairs: PairSet, values: np.ndarray, edges: list[float], threshold: float, worse: str
) -> list[tuple[str, int, float]]:
    """TAR of genuine pairs grouped by the worse of the two faces' values."""
    gen = pairs.same
    a, b = values[pairs.i[gen]], values[pairs.j[gen]]
    key = np.maximum(a, b) if worse == "max" else np.minimum(a, b)
    matched = pairs.scores[gen] >= threshold
    rows = []
    for lo, hi in itertools.pairwise(edges):
        sel = (key >= lo) & (key < hi)
        if sel.any():
            rows.append((f"{lo:g}-{hi:g}", int(sel.sum()), float(matched[sel].mean())))
    return rows


def report_model(
    name: str, args: argparse.Namespace, settings: Settings, folds: list[list[Pair]], keys: list[tuple[str, int]]
) -> tuple[list[str], calibration.ConfidenceMap]:
    engine = KYCDeepFace(settings=settings.model_copy(update={"embedding_model": name, "liveness": "off"}))
    index = {k: j for j, k in enumerate(keys)}
    names = np.array([k[0] for k in keys])
    fold_of_name = {p[x]: f for f, fold in enumerate(folds) for p in fold for x in (0, 2)}
    image_fold = np.array([fold_of_name[n] for n in names])

    t0 = time.perf_counter()
    cache = args.cache / f"calibrate-{engine.model_id}.npz" if args.cache else None
    if cache is not None and cache.is_file():
        data = np.load(cache)
        vectors, measures = data["vectors"], {k: data[k] for k in MEASURES}
    else:
        vectors, measures = embed_all(engine, [image_path(args.lfw, n, i) for n, i in keys])
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, vectors=vectors, **measures)  # type: ignore[arg-type]
    embed_s = time.perf_counter() - t0
    detected = measures["detected"] > 0

    pairs = all_pairs(vectors, names, image_fold)
    fit_sel = detected[pairs.i] & detected[pairs.j]
    genuine, impostor = pairs.scores[fit_sel & pairs.same], pairs.scores[fit_sel & ~pairs.same]
    cmap = calibration.fit(
        engine.model_id, genuine, impostor, far=args.far, anchor=args.anchor,
        fitted_on=f"{args.lfw.name}: {len(keys)} images, {genuine.size} genuine / {impostor.size} impostor pairs",
    )  # fmt: skip
    t_default = cmap.cosine_for(args.anchor)
    tar3, far3 = held_out(pairs, detected, 1e-3, len(folds))
    tar4, far4 = held_out(pairs, detected, 1e-4, len(folds))

    # Protocol pairs at each level: a comparison that never happens counts as "not the same".
    proto = [(index[(p[0], p[1])], index[(p[2], p[3])], p[0] == p[2], f) for f, fold in enumerate(folds) for p in fold]
    pa, pb = np.array([p[0] for p in proto]), np.array([p[1] for p in proto])
    pl, pf = np.array([p[2] for p in proto]), np.array([p[3] for p in proto])
    raw = np.einsum("ij,ij->i", vectors[pa], vectors[pb])
    levels: dict[str, dict[str, float]] = {}
    for level in QualityLevel:
        ok = acquired(measures, settings.quality_gate(level))
        rates = iso_rates(pairs, ok, t_default)
        ps = np.where(ok[pa] & ok[pb], raw, -1.0)
        rates["accuracy_at_default"] = float(((ps >= t_default) == pl).mean())
        rates["protocol_accuracy"], rates["protocol_accuracy_std"] = protocol_accuracy(ps, pl, pf, len(folds))
        levels[level.value] = rates
    default = levels[settings.quality_default.value]
    metrics = {
        "protocol_accuracy": levels["none"]["protocol_accuracy"],
        "protocol_accuracy_std": levels["none"]["protocol_accuracy_std"],
        "faces_found": float(detected.mean()),
        "fta_at_default_quality": default["fta_images"],
        "tar_at_far": float((genuine >= cmap.threshold).mean()),
        "tar_at_far_1e-4": float((genuine >= cmap.cosine_at_far(1e-4)).mean()),
        "held_out_tar_at_far_1e-3": tar3,
        "held_out_tar_at_far_1e-4": tar4,
        "far_at_default": float((impostor >= t_default).mean()),
        "frr_at_default": float((genuine < t_default).mean()),
        "out_of_fold_far": far3,
        "out_of_fold_far_1e-4": far4,
    }
    cmap = cmap.model_copy(update={"metrics": metrics})

    pct = lambda x: f"{100 * x:.2f} %"  # noqa: E731
    lines = [
        f"#### `{engine.model_id}` ({engine.embedder.spec.dim}-d, {4 * engine.embedder.spec.dim} B template)",
        "",
        f"{len(keys)} images, {int(detected.sum())} with a detected face; embedding took {embed_s:.0f} s. "
        f"Map fitted on {genuine.size} genuine / {impostor.size} impostor pairs.",
        "",
        "| quality level | FTA images | FTA genuine pairs | FNMR (acquired) | FMR (acquired) | GFRR | GFAR "
        "| accuracy at default | protocol accuracy (fold CV) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in levels.items():
        mark = " (get_faces default)" if name == settings.quality_default.value else ""
        lines.append(
            f"| {name}{mark} | {pct(r['fta_images'])} | {pct(r['fta_genuine_pairs'])} | {pct(r['fnmr'])} "
            f"| {100 * r['fmr']:.3f} % | {pct(r['gfrr'])} | {100 * r['gfar']:.3f} % | {pct(r['accuracy_at_default'])} "
            f"| {pct(r['protocol_accuracy'])} ± {100 * r['protocol_accuracy_std']:.2f} |"
        )
    lines += [
        "",
        "| figure (every detected face) | value |",
        "|---|---|",
        f"| TAR at FAR 1e-3 / 1e-4 (all pairs, in sample) | {pct(metrics['tar_at_far'])} / "
        f"{pct(metrics['tar_at_far_1e-4'])} |",
        f"| held-out folds: TAR at FAR 1e-3 / 1e-4 | {pct(tar3)} / {pct(tar4)} |",
        f"| held-out folds: FAR of the 1e-3 / 1e-4 thresholds | {100 * far3:.3f} % / {100 * far4:.4f} % |",
        f"| FAR / FRR at verify_confidence {args.anchor} | {100 * metrics['far_at_default']:.3f} % / "
        f"{pct(metrics['frr_at_default'])} |",
        f"| cosine at FAR 0.1 % / logistic slope | {cmap.threshold:.4f} / {cmap.slope:.2f} |",
        "| cosine threshold by FAR (1:N table) | " + ", ".join(f"{f:g}: {c:.3f}" for f, c in cmap.far_table) + " |",
        "",
        f"What hurts matching (genuine pairs by the worse face; TAR at the default, {pct(1 - metrics['frr_at_default'])}"
        " overall):",
        "",
    ]
    sections: tuple[tuple[str, np.ndarray, list[float], str], ...] = (
        ("|yaw|", np.abs(measures["yaw"]), [0, 0.15, 0.3, 0.45, 0.6, 0.75, 10], "max"),
        ("|pitch - 0.5|", np.abs(measures["pitch"] - 0.5), [0, 0.25, 0.35, 0.45, 10], "max"),
        ("sharpness", measures["sharpness"], [0, 8, 15, 30, 40, 60, 1e9], "min"),
        ("face luma", measures["luma"], [0, 25, 40, 50, 70, 256], "min"),
    )
    for label, values, edges, worse in sections:
        v = np.where(detected, values, np.nan if worse == "max" else np.inf)
        rows = _tar_by_bin(pairs, v, edges, t_default, worse)
        lines.append(f"- {label}: " + "; ".join(f"{b}: {pct(t)} of {n}" for b, n, t in rows))
    return lines, cmap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "lfw-calib")
    parser.add_argument("--models", default="fr_feature,mobilefacenet", help="comma-separated embedding models")
    parser.add_argument("--far", type=float, default=1e-3)
    parser.add_argument("--anchor", type=float, default=0.76)
    parser.add_argument("--write", action="store_true", help="save the fitted maps as the shipped data")
    parser.add_argument("--results", type=Path, help="append the report to this Markdown file")
    parser.add_argument("--cache", type=Path, help="reuse/save embeddings in this directory (speeds refits)")
    args = parser.parse_args()

    settings = Settings()
    folds = read_pairs(args.lfw)
    keys = sorted({(n, i) for fold in folds for p in fold for n, i in ((p[0], p[1]), (p[2], p[3]))})
    report = [
        f"### Verification calibration — {dt.date.today().isoformat()}",
        "",
        f"Command: `python bench/calibrate.py --models {args.models}{' --write' if args.write else ''}`; "
        f"machine: {platform.machine()}, {len(folds)} LFW folds ({len(keys)} images). Default quality level "
        f"`{settings.quality_default.value}`; verify uses `{settings.quality_selfie.value}` for the selfie and "
        f"`{settings.quality_document.value}` for the document.",
        "",
    ]
    maps = []
    for name in args.models.split(","):
        lines, cmap = report_model(name.strip(), args, settings, folds, keys)
        report += [*lines, ""]
        maps.append(cmap)
    text = "\n".join(report)
    print(text)
    if args.write:
        for cmap in maps:
            spec = get_spec(cmap.model_id.split("@")[0], "embedding", settings.model_registry_file)
            calibration.save(cmap, calibration.calibration_path(spec))
            print(f"wrote {calibration.calibration_path(spec)}")
    if args.results:
        with args.results.open("a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
