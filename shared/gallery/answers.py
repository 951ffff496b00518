"""Turning cosines into result documents: the model's confidence map and the verified verdicts.

A 1:N answer gives a caller what it needs to decide (verified, rank, a confidence rounded to two
decimals) and never the cosine: with exact scores, ``dim`` chosen probes solve for every
enrolled template (see docs/OPERATIONS.md, "Templates"). The exact cosines stay inside the
process, in :class:`Scored`, for the operators' screening reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared import calibration
from shared.config import Settings
from shared.errors import GalleryError
from shared.models.registry import get_spec
from shared.schemas import Candidate, FindManyResult

# Decimals of a 1:N confidence: a bucket of the calibrated curve, not a measurement to invert.
CONFIDENCE_DECIMALS = 2


@dataclass(frozen=True)
class Scored:
    """One candidate as this process knows it: never a result document (it holds the cosine)."""

    face_id: str
    cosine: float
    confidence: float
    verified: bool


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


def score(cmap: calibration.ConfidenceMap | None, cut: float, face_ids: list[str], sims: list[float]) -> list[Scored]:
    """Each candidate's confidence and verdict at the cosine ``cut``, best first as given."""
    if cmap is None or not face_ids:
        return []
    cosines = np.clip(np.asarray(sims, np.float64), -1.0, 1.0)
    confidences = cmap.confidence(cosines)
    return [
        Scored(face_id=fid, cosine=float(s), confidence=float(c), verified=bool(s >= cut))
        for fid, s, c in zip(face_ids, cosines, confidences, strict=True)
    ]


def public_confidence(confidence: float) -> float:
    return round(float(confidence), CONFIDENCE_DECIMALS)


def candidates(scored: list[Scored], size: int, cut: float) -> FindManyResult:
    """A ``find_faces`` document: each candidate's rank, rounded confidence and verdict."""
    found = [
        Candidate(face_id=s.face_id, rank=rank, confidence=public_confidence(s.confidence), verified=s.verified)
        for rank, s in enumerate(scored, start=1)
    ]
    return FindManyResult(candidates=found, gallery_size=size, threshold=round(cut, 6))
