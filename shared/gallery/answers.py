"""Turning cosines into result documents: the model's confidence map and the verified verdicts.

A 1:N answer gives a caller what it needs to decide and nothing it could solve for a template
with (docs/OPERATIONS.md, "Templates" and "Search answers"):

- by default (:func:`matches`) only the candidates at or above the gallery's operating point,
  each ``verified`` with a confidence in a coarse band (:data:`CONFIDENCE_BANDS`); below the
  operating point the answer is "no match" and nothing else. Ranks of near misses among faces an
  attacker enrolled pin the probe's cosine with a victim to ~0.002, and 250 searches rebuilt the
  victim's template (issue 29); an empty answer pins nothing.
- near misses (:func:`candidates`: the top-k ranked, confidence to two decimals) only for callers
  granted them (the ``search:candidates`` scope, audited and rate-limited on its own).

The exact cosines stay inside the process, in :class:`Scored`, for the operators' screening reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared import calibration
from shared.config import Settings
from shared.errors import GalleryError
from shared.models.registry import get_spec
from shared.schemas import Candidate, FindManyResult

# Decimals of a near-miss confidence: a bucket of the calibrated curve, not a measurement to invert.
CONFIDENCE_DECIMALS = 2
# Lower edges of the bands a match's confidence is reported in, highest first. A verified match
# is at least the 1:1 ``verify_confidence`` (0.76 by default) and, at the 1:N operating point of
# any gallery past ~50 faces, at least 0.97: so in practice a match says 0.99 or 0.9, and the band
# carries under one bit beyond "verified".
CONFIDENCE_BANDS = (0.99, 0.9, 0.5)


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


def banded(confidence: float) -> float:
    """The lower edge of the band ``confidence`` falls in (0.0 below the lowest band)."""
    return next((edge for edge in CONFIDENCE_BANDS if confidence >= edge), 0.0)


def matches(scored: list[Scored], size: int, cut: float) -> FindManyResult:
    """The default ``find_faces`` document: the verified candidates only, best first, each with
    its banded confidence; no candidate at all when none reaches the operating point."""
    found = [
        Candidate(face_id=s.face_id, rank=rank, confidence=banded(s.confidence), verified=True)
        for rank, s in enumerate((s for s in scored if s.verified), start=1)
    ]
    return FindManyResult(candidates=found, gallery_size=size, threshold=round(cut, 6))


def candidates(scored: list[Scored], size: int, cut: float) -> FindManyResult:
    """A near-miss ``find_faces`` document (``search:candidates``): each of the top-k candidates'
    rank, rounded confidence and verdict, verified or not."""
    found = [
        Candidate(face_id=s.face_id, rank=rank, confidence=public_confidence(s.confidence), verified=s.verified)
        for rank, s in enumerate(scored, start=1)
    ]
    return FindManyResult(candidates=found, gallery_size=size, threshold=round(cut, 6))
