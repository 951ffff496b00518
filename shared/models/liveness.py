"""Passive liveness (presentation-attack) score on onnxruntime: MiniFASNet, as MANIFEST.md describes."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort

from shared.models.registry import ModelSpec

_CONTEXT = 2.7  # the network was trained on the face box widened 2.7x about its centre


def context_crop(bgr: np.ndarray, box: np.ndarray, scale: float = _CONTEXT) -> np.ndarray:
    """The box scaled about its centre, limited to fit the image and shifted inside it."""
    h, w = bgr.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    s = min(scale, (h - 1) / bh, (w - 1) / bw)
    cw, ch = bw * s, bh * s
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = min(max(cx - cw / 2, 0.0), w - 1 - cw)
    top = min(max(cy - ch / 2, 0.0), h - 1 - ch)
    return bgr[int(top) : int(top + ch) + 1, int(left) : int(left + cw) + 1]


class LivenessScorer:
    """``score(bgr, box)``: P(real) in [0, 1] for the face in ``box`` of a BGR uint8 image."""

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self.spec = spec

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def preprocess(self, bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        crop = cv2.resize(context_crop(bgr, box), self.spec.input_size, interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(crop.transpose(2, 0, 1)[None].astype(np.float32))

    def infer(self, blob: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input: blob})[0], dtype=np.float64)

    def score(self, bgr: np.ndarray, box: np.ndarray) -> float:
        logits = self.infer(self.preprocess(bgr, box))[0]
        e = np.exp(logits - logits.max())
        return float(e[0] / e.sum())  # index 0 is "real"
