"""Fit and ship the gallery's first-pass projection of a model (``shared/gallery/projection.py``).

    python bench/gallery_projection.py [--model fr_feature] [--lfw ../shared/lfw-calib]
        [--cache /tmp/kyc-gallery-lfw-fr_feature.npz] [--write] [--results bench/RESULTS.md]

Fits on every ``lfw-calib`` embedding of the model; ``--write`` stores it as
``shared/data/projection-<model>.npz``. Before that, the held-out check: fitted on half of the
identities, how much of each template of the other half's identities the 128-d subspace keeps
(|P x|^2, 1 = all) and how far the projected cosine of two such templates is from the full
one, and the eigenvalue spectrum that explains why. Recall of the whole search
with such a held-out projection at 1M templates is ``bench/gallery.py``'s job.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gallery_common import lfw_embeddings, machine, publish, split_identities  # noqa: E402
from shared.gallery import projection  # noqa: E402
from shared.models.registry import get_spec  # noqa: E402

HEADING = "Gallery first-pass projection"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fr_feature")
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "lfw-calib")
    parser.add_argument("--cache", type=Path, help="embeddings cache (default /tmp/kyc-gallery-lfw-<model>.npz)")
    parser.add_argument("--write", action="store_true", help="write shared/data/projection-<model>.npz")
    parser.add_argument("--results", type=Path, help="write the report into this Markdown file")
    args = parser.parse_args()

    spec = get_spec(args.model, "embedding")
    cache = args.cache or Path(f"/tmp/kyc-gallery-lfw-{spec.name}.npz")
    vectors, names = lfw_embeddings(args.lfw, spec.name, cache)
    lines = [f"Model {spec.model_id}, {len(vectors):,} embeddings of {len(np.unique(names)):,} identities."]

    second = vectors.astype(np.float64).T @ vectors.astype(np.float64) / len(vectors)
    eig = np.linalg.eigvalsh(second)[::-1]
    cumulative = np.cumsum(eig) / eig.sum()
    marks = [d for d in (32, 64, 96, 128, 160, 192, 256) if d <= len(eig)]
    lines.append(
        "Energy in the strongest d directions (all images): "
        + ", ".join(f"d = {d}: {cumulative[d - 1]:.4f}" for d in marks)
        + "."
    )
    for side in (True, False):
        fit_on = split_identities(names) == side
        basis = projection.fit(vectors[fit_on])
        held = vectors[~fit_on]
        kept = np.square(held @ basis).sum(axis=1)
        # What the first pass gets wrong: projected cosine minus full cosine, over held-out pairs.
        error = np.abs((held @ basis) @ (held @ basis).T - held @ held.T)[np.triu_indices(len(held), 1)]
        lines.append(
            f"Fitted on {fit_on.sum():,} images of half the identities, on the other {len(held):,}: "
            f"mean energy kept {kept.mean():.4f}, 1st percentile {np.percentile(kept, 1):.4f}, "
            f"least {kept.min():.4f}; first-pass cosine error over their {error.size:,} pairs: median "
            f"{np.median(error):.4f}, 99th percentile {np.percentile(error, 99):.4f}, largest {error.max():.4f}."
        )
    if args.write:
        path = projection.projection_path(spec.name)
        projection.save(path, spec.model_id, projection.fit(vectors))
        lines.append(f"Written: `shared/data/{path.name}` (fitted on all {len(vectors):,} images).")
    text = "\n\n".join(lines) + "\n\n" + machine()
    return publish(text, args.results, HEADING)


if __name__ == "__main__":
    sys.exit(main())
