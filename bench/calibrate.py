"""Fit the cosine -> confidence map on the LFW calibration folds and report verification accuracy.

Usage::

    python bench/calibrate.py [--lfw ../shared/lfw-calib] [--write] [--results bench/RESULTS.md]

What it measures, on the pipeline the product runs (YuNet landmarks, similarity alignment, the
configured embedding model):

* protocol accuracy on the folds' 1,800 pairs, cross-validated by fold (threshold chosen on the
  other folds, accuracy on the held-out one), as in LFW's 10-fold protocol;
* from *every* pair of images in the set (millions of impostor pairs, thousands of genuine ones):
  TAR at FAR 0.1 %, and FAR / FRR at the default ``verify_confidence``;
* an out-of-fold check: the FAR 0.1 % threshold fitted on two folds' identities, its FAR measured
  on the third fold's identities (never seen by the fit) — what a held-out set would show.

``--write`` saves the fitted map to ``shared/data/calibration-<model>.json`` (shipped as data).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared import calibration  # noqa: E402
from shared.alignment import align  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.engine import KYCDeepFace  # noqa: E402
from shared.quality import inner_face, pose, sharpness  # noqa: E402

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


def embed_all(engine: KYCDeepFace, paths: list[Path]) -> tuple[np.ndarray, np.ndarray, dict[str, list[float]]]:
    """One embedding per image: the detected face nearest the centre (LFW's labelled face).

    Quality gates are reported, not applied: calibration must score every face the set has.
    """
    dim = engine.embedder.spec.dim
    vectors = np.zeros((len(paths), dim), np.float32)
    found = np.zeros(len(paths), bool)
    stats: dict[str, list[float]] = {"yaw": [], "pitch": [], "sharpness": [], "flagged": []}
    for i, path in enumerate(paths):
        faces = engine.analyse(path.read_bytes(), embed_partial=True)
        if not faces:
            continue
        centre = np.array([125.0, 125.0])
        best = min(faces, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))
        if best.vector is None:
            continue
        vectors[i], found[i] = best.vector, True
        yaw, pitch = pose(best.landmarks)
        stats["yaw"].append(yaw)
        stats["pitch"].append(pitch)
        stats["flagged"].append(0.0 if best.reason is None else 1.0)
        image = engine.decode(path.read_bytes())
        pixels, _ = image.source(1)
        stats["sharpness"].append(sharpness(inner_face(align(pixels, best.landmarks))))
    return vectors, found, stats


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    candidates = np.unique(scores)
    acc = [((scores >= t) == labels).mean() for t in candidates]
    return float(candidates[int(np.argmax(acc))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "lfw-calib")
    parser.add_argument("--far", type=float, default=1e-3)
    parser.add_argument("--anchor", type=float, default=0.76)
    parser.add_argument("--write", action="store_true", help="save the fitted map as the shipped data")
    parser.add_argument("--results", type=Path, help="append the report to this Markdown file")
    parser.add_argument("--cache", type=Path, help="reuse/save embeddings in this .npz (speeds refits)")
    args = parser.parse_args()

    settings = Settings()
    engine = KYCDeepFace(settings=settings)
    folds = read_pairs(args.lfw)
    keys = sorted({(n, i) for fold in folds for p in fold for n, i in ((p[0], p[1]), (p[2], p[3]))})
    index = {k: j for j, k in enumerate(keys)}
    names = np.array([k[0] for k in keys])
    fold_of_name: dict[str, int] = {}
    for f, fold in enumerate(folds):
        for p in fold:
            fold_of_name[p[0]] = f
            fold_of_name[p[2]] = f

    t0 = time.perf_counter()
    if args.cache and args.cache.is_file():
        data = np.load(args.cache)
        vectors, found = data["vectors"], data["found"]
        stats: dict[str, list[float]] = {}
    else:
        vectors, found, stats = embed_all(engine, [image_path(args.lfw, n, i) for n, i in keys])
        if args.cache:
            np.savez(args.cache, vectors=vectors, found=found)
    embed_s = time.perf_counter() - t0

    # Protocol pairs; a pair whose face was not found scores -1 (counted as "not the same").
    pair_scores, pair_labels, pair_fold = [], [], []
    for f, fold in enumerate(folds):
        for a_name, a_i, b_name, b_i in fold:
            a, b = index[(a_name, a_i)], index[(b_name, b_i)]
            s = float(vectors[a] @ vectors[b]) if found[a] and found[b] else -1.0
            pair_scores.append(s)
            pair_labels.append(a_name == b_name)
            pair_fold.append(f)
    ps, pl, pf = np.array(pair_scores), np.array(pair_labels), np.array(pair_fold)
    fold_acc = []
    for f in range(len(folds)):
        t = best_threshold(ps[pf != f], pl[pf != f])
        fold_acc.append(float(((ps[pf == f] >= t) == pl[pf == f]).mean()))

    # Every pair of images: genuine = same name, impostor = different names.
    ok = np.nonzero(found)[0]
    sims = vectors[ok] @ vectors[ok].T
    iu = np.triu_indices(ok.size, k=1)
    all_scores = sims[iu]
    same = names[ok][iu[0]] == names[ok][iu[1]]
    genuine, impostor = all_scores[same], all_scores[~same]
    folds_a = np.array([fold_of_name[n] for n in names[ok]])
    fa, fb = folds_a[iu[0]], folds_a[iu[1]]

    cmap = calibration.fit(
        engine.model_id, genuine, impostor, far=args.far, anchor=args.anchor,
        fitted_on=f"{args.lfw.name}: {len(keys)} images, {genuine.size} genuine / {impostor.size} impostor pairs",
    )  # fmt: skip
    t_far = cmap.threshold
    t_default = cmap.cosine_for(0.76)
    # Out-of-fold: threshold from impostors within folds != f, FAR on impostors within fold f.
    oof = []
    for f in range(len(folds)):
        train = (~same) & (fa != f) & (fb != f)
        test = (~same) & (fa == f) & (fb == f)
        t = calibration.threshold_at_far(all_scores[train], args.far)
        oof.append((float((all_scores[test] >= t).mean()), int(test.sum())))
    metrics = {
        "protocol_accuracy": float(np.mean(fold_acc)),
        "protocol_accuracy_std": float(np.std(fold_acc)),
        "faces_found": float(found.mean()),
        "tar_at_far": float((genuine >= t_far).mean()),
        "far_at_default": float((impostor >= t_default).mean()),
        "frr_at_default": float((genuine < t_default).mean()),
        "out_of_fold_far": float(np.mean([f for f, _ in oof])),
    }
    cmap = cmap.model_copy(update={"metrics": metrics})

    report = [
        f"### Verification calibration — {dt.date.today().isoformat()}",
        "",
        f"Command: `python bench/calibrate.py{' --write' if args.write else ''}`; "
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, {len(folds)} LFW folds "
        f"({len(keys)} images, embedding took {embed_s:.0f} s). Model `{engine.model_id}`.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| faces found (centre face) | {found.sum()}/{found.size} |",
        f"| protocol accuracy, fold-cross-validated ({len(ps)} pairs) | {100 * np.mean(fold_acc):.2f} % "
        f"± {100 * np.std(fold_acc):.2f} |",
        f"| genuine / impostor pairs (all pairs of the set) | {genuine.size} / {impostor.size} |",
        f"| cosine at FAR {100 * args.far:g} % | {t_far:.4f} |",
        f"| TAR at FAR {100 * args.far:g} % | {100 * metrics['tar_at_far']:.2f} % |",
        f"| FAR / FRR at verify_confidence 0.76 | {100 * metrics['far_at_default']:.3f} % / "
        f"{100 * metrics['frr_at_default']:.2f} % |",
        "| out-of-fold FAR of the FAR-0.1 % threshold (per held-out fold) | "
        + ", ".join(f"{100 * f:.3f} % of {n}" for f, n in oof)
        + " |",
        f"| logistic slope | {cmap.slope:.2f} |",
        "| cosine threshold by FAR (1:N table) | " + ", ".join(f"{f:g}: {c:.3f}" for f, c in cmap.far_table) + " |",
    ]
    if stats.get("yaw"):
        yaw, pitch, sharp = np.abs(stats["yaw"]), np.array(stats["pitch"]), np.array(stats["sharpness"])
        report += [
            "",
            f"Quality gates on LFW faces (all usable photos): {100 * np.mean(stats['flagged']):.1f} % flagged partial; "
            f"|yaw| p50/p99 {np.percentile(yaw, 50):.2f}/{np.percentile(yaw, 99):.2f}, "
            f"pitch p1/p50/p99 {np.percentile(pitch, 1):.2f}/{np.percentile(pitch, 50):.2f}/"
            f"{np.percentile(pitch, 99):.2f}, sharpness p1/p5/p50 {np.percentile(sharp, 1):.0f}/"
            f"{np.percentile(sharp, 5):.0f}/{np.percentile(sharp, 50):.0f}.",
        ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.write:
        spec = engine.embedder.spec
        calibration.save(cmap, calibration.calibration_path(spec))
        print(f"wrote {calibration.calibration_path(spec)}")
    if args.results:
        with args.results.open("a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
