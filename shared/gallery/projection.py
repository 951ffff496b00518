"""The first-pass view of a model's templates: a shipped projection onto the subspace they occupy.

The 512-d ``fr_feature`` model spreads its 512 numbers over a much smaller subspace: on
``lfw-calib`` 128 directions hold 97 % of the embeddings' energy and 160 hold 99.99 % (the
eigenvalues drop by four orders of magnitude past ~150), and fitted on half of the identities
the 128 directions keep 96 % of the other half's (``bench/gallery_projection.py``). Scanning
8-bit codes of the 128 coordinates in that subspace reads as many bytes per template as a
128-d model does, and ranks so close to the full cosine that a shortlist of 128 holds the exact
top-10 at 1M templates (``bench/gallery.py``, on identities the projection was not fitted on).
The re-rank stays exact, so the projection only decides which rows get re-scored.

A projection is fitted per model on ``lfw-calib`` (eigenvectors of the second-moment matrix,
times a fixed random rotation so that 8-bit codes spread their range evenly, as a 128-d
model's components do) and shipped as ``shared/data/projection-<model>.npz`` with the model id
it was fitted for. A model without one is scanned at its full dimension: slower, not wrong.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

from shared.calibration import DATA_DIR

log = logging.getLogger(__name__)

# Templates this short are scanned as they are: projecting would not shrink the scan.
FIRST_PASS_DIM = 128


def projection_path(model_name: str) -> Path:
    return DATA_DIR / f"projection-{model_name}.npz"


def fit(vectors: np.ndarray, dim: int = FIRST_PASS_DIM, seed: int = 0) -> np.ndarray:
    """(D, dim) orthonormal basis of the ``dim`` strongest directions of unit ``vectors`` (n, D).

    The second-moment matrix rather than the covariance: search ranks raw dot products, and the
    embeddings' shared mean direction is part of them.
    """
    x = np.asarray(vectors, np.float64)
    _, eigvecs = np.linalg.eigh(x.T @ x / len(x))
    top = eigvecs[:, ::-1][:, :dim]
    # A rotation inside the subspace leaves every dot product unchanged, and spreads the first
    # principal directions' large components over all coordinates, so no 8-bit code clips.
    rotation = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))[0]
    return (top @ rotation).astype(np.float32)


def save(path: Path, model_id: str, basis: np.ndarray) -> None:
    np.savez_compressed(path, basis=basis.astype(np.float32), model_id=np.array(model_id))


@lru_cache(maxsize=8)
def projection_for(model_id: str | None, dim: int) -> np.ndarray | None:
    """The shipped first-pass basis (dim, 128) for ``model_id`` (``name@sha256-prefix``), or None.

    None for short templates and for models without a projection fitted for exactly these
    weights (another file under the same name gets none, never a wrong one).
    """
    if model_id is None or dim <= FIRST_PASS_DIM:
        return None
    path = projection_path(model_id.split("@", 1)[0])
    if not path.is_file():
        log.warning("no first-pass projection for %s: the gallery scans all %d dimensions", model_id, dim)
        return None
    with np.load(path, allow_pickle=False) as data:
        basis, fitted_for = data["basis"], str(data["model_id"])
    if fitted_for != model_id or basis.shape[0] != dim:
        log.warning("projection %s is for %s, not %s: the gallery scans all dimensions", path, fitted_for, model_id)
        return None
    return np.ascontiguousarray(basis, np.float32)
