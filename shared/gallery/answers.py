"""Turning cosines into result documents: the model's confidence map and the verified verdicts."""

from __future__ import annotations

import numpy as np

from shared import calibration
from shared.config import Settings
from shared.errors import GalleryError
from shared.models.registry import get_spec
from shared.schemas import Candidate, FindManyResult


def confidence_map_for(model_id: str, settings: Settings) -> calibration.ConfidenceMap:
    """The calibration of the embedding model ``model_id`` (``name@sha256-prefix``).

    Raises:
        ModelError: the model is not in the registry.
        CalibrationError: no calibration for it.
        GalleryError: the registry's model of that name has other weights.
    """
    spec = get_spec(model_id.partition("@")[0], "embedding", settings.model_registry_file)
    if spec.model_id != model_id:
        raise GalleryError(f"features come from model {model_id!r}; the registry has {spec.model_id!r}")
    return calibration.load(spec)


def candidates(
    cmap: calibration.ConfidenceMap | None, cut: float, size: int, face_ids: list[str], sims: list[float]
) -> FindManyResult:
    """A ``find_faces`` document: each candidate's confidence, cosine and verdict at ``cut``."""
    if cmap is None or not face_ids:
        return FindManyResult(candidates=[], gallery_size=size, threshold=round(cut, 6))
    cosines = np.clip(np.asarray(sims, np.float64), -1.0, 1.0)
    confidences = cmap.confidence(cosines)
    found = [
        Candidate(face_id=fid, confidence=round(float(c), 6), similarity=round(float(s), 6), verified=bool(s >= cut))
        for fid, s, c in zip(face_ids, cosines, confidences, strict=True)
    ]
    return FindManyResult(candidates=found, gallery_size=size, threshold=round(cut, 6))
