"""Face embedding on onnxruntime: aligned 112x112 BGR crops in, L2-normalised vectors out."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from shared.models.registry import ModelSpec


class Embedder:
    """``embed(faces)`` for a batch of aligned BGR uint8 faces, shape (N, H, W, 3)."""

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec, flip: bool = False) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self.spec = spec
        self.flip = flip
        # Folded into one multiply-add: (x / 255 - mean) / std == x * scale + shift.
        std = np.asarray(spec.std, dtype=np.float32)
        self._scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1)
        self._shift = (-np.asarray(spec.mean, dtype=np.float32) / std).reshape(1, 3, 1, 1)

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def preprocess(self, faces: np.ndarray) -> np.ndarray:
        if self.spec.color == "RGB":
            faces = faces[..., ::-1]
        blob = faces.transpose(0, 3, 1, 2).astype(np.float32)
        return np.ascontiguousarray(blob * self._scale + self._shift)

    def infer(self, blob: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input: blob})[0], dtype=np.float32)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        if faces.shape[0] == 0:
            return np.zeros((0, self.spec.dim), np.float32)
        blob = self.preprocess(faces)
        if self.flip:
            n = blob.shape[0]
            raw = self.infer(np.concatenate([blob, blob[..., ::-1]]))
            raw = raw[:n] + raw[n:]
        else:
            raw = self.infer(blob)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return (raw / np.maximum(norms, 1e-12)).astype(np.float32)
