"""Cosine similarity -> confidence, fitted per embedding model and shipped as data.

The map is a logistic curve anchored at an operating point::

    confidence(cos) = sigmoid(slope * (cos - threshold) + logit(anchor))

``threshold`` is the cosine at which the false-accept rate on the calibration set is ``far``
(0.1 %), and ``anchor`` is the default ``verify_confidence`` (0.76). So ``verified`` at the default
setting means "cosine past the FAR 0.1 % threshold", and raising ``verify_confidence`` moves the
operating point towards lower FAR along a curve whose slope was fitted (logistic regression) on
genuine vs impostor pairs. The map is strictly increasing, so every confidence threshold is a
cosine threshold. ``far_table`` lists impostor cosine quantiles for 1:N operating points.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from shared.errors import CalibrationError
from shared.models.registry import ModelSpec

DATA_DIR = Path(__file__).resolve().parent / "data"


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class ConfidenceMap(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_id: str
    slope: float
    threshold: float
    anchor: float
    far: float
    # (FAR, cosine threshold) pairs, FAR decreasing; measured on all impostor pairs of the set.
    far_table: list[tuple[float, float]]
    fitted_on: str
    metrics: dict[str, float]

    def confidence(self, cosine: np.ndarray | float) -> np.ndarray:
        cos = np.clip(np.asarray(cosine, dtype=np.float64), -1.0, 1.0)
        z = self.slope * (cos - self.threshold) + _logit(self.anchor)
        return 1.0 / (1.0 + np.exp(-z))

    def cosine_for(self, confidence: float) -> float:
        """The inverse map: the cosine at which ``confidence`` is reached."""
        c = min(max(confidence, 1e-9), 1 - 1e-9)
        return self.threshold + (_logit(c) - _logit(self.anchor)) / self.slope

    def cosine_at_far(self, far: float) -> float:
        """Cosine threshold for a per-comparison FAR, interpolated in log(FAR) over the table.

        Below the table's smallest FAR the last segment is extended: an estimate, stated as such.
        """
        table = sorted(self.far_table, key=lambda t: -t[0])
        logs = np.log10([f for f, _ in table])
        cos = np.array([c for _, c in table])
        x = math.log10(max(far, 1e-12))
        if x >= logs[0]:
            return float(cos[0])
        for i in range(1, len(logs)):
            if x >= logs[i]:
                w = (x - logs[i - 1]) / (logs[i] - logs[i - 1])
                return float(cos[i - 1] + w * (cos[i] - cos[i - 1]))
        slope = (cos[-1] - cos[-2]) / (logs[-1] - logs[-2])
        return float(min(1.0, cos[-1] + slope * (x - logs[-1])))


def _logistic_slope(scores: np.ndarray, labels: np.ndarray, iters: int = 50) -> float:
    """Slope of a two-parameter logistic regression (Newton's method), classes weighted equally."""
    weights = np.where(labels == 1, 0.5 / labels.sum(), 0.5 / (labels.size - labels.sum()))
    x = np.column_stack([scores, np.ones_like(scores)])
    beta = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(x @ beta)))
        grad = x.T @ (weights * (labels - p))
        hess = (x * (weights * p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0])


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Smallest cosine whose false-accept rate (share of impostors >= it) is at most ``far``."""
    ranked = np.sort(impostor)[::-1]
    allowed = math.floor(far * ranked.size)
    # Accept strictly above the (allowed+1)-th highest impostor score.
    return float(np.nextafter(ranked[allowed], np.inf)) if allowed < ranked.size else float(ranked[-1])


def fit(
    model_id: str,
    genuine: np.ndarray,
    impostor: np.ndarray,
    *,
    far: float = 1e-3,
    anchor: float = 0.76,
    fitted_on: str,
    metrics: dict[str, float] | None = None,
) -> ConfidenceMap:
    scores = np.concatenate([genuine, impostor]).astype(np.float64)
    labels = np.concatenate([np.ones(genuine.size), np.zeros(impostor.size)])
    table_fars = [f for f in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6) if f * impostor.size >= 1]
    return ConfidenceMap(
        model_id=model_id,
        slope=_logistic_slope(scores, labels),
        threshold=threshold_at_far(impostor, far),
        anchor=anchor,
        far=far,
        far_table=[(f, threshold_at_far(impostor, f)) for f in table_fars],
        fitted_on=fitted_on,
        metrics=metrics or {},
    )


def calibration_path(spec: ModelSpec) -> Path:
    return DATA_DIR / f"calibration-{spec.name}.json"


def save(cmap: ConfidenceMap, path: Path) -> None:
    path.write_text(json.dumps(cmap.model_dump(mode="json"), indent=2) + "\n")


@lru_cache(maxsize=8)
def load(spec: ModelSpec) -> ConfidenceMap:
    path = calibration_path(spec)
    try:
        cmap = ConfidenceMap.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(
            f"no confidence map for model {spec.model_id} at {path}; refit it with `python bench/calibrate.py --write`"
        ) from None
    except ValueError as exc:
        raise CalibrationError(f"confidence map {path} is invalid: {exc}") from None
    if cmap.model_id != spec.model_id:
        raise CalibrationError(f"confidence map {path} is for {cmap.model_id}, not {spec.model_id}")
    return cmap
