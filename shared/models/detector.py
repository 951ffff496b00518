"""YuNet face detector on onnxruntime, decoded as MANIFEST.md describes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import onnxruntime as ort

_STRIDES = (8, 16, 32)
_ALIGN = 32  # the network wants sides that are multiples of the largest stride


@dataclass(frozen=True)
class Detection:
    """Faces found in one image, in that image's pixel coordinates, best score first."""

    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2
    scores: np.ndarray  # (N,) float32
    landmarks: np.ndarray  # (N, 5, 2) float32

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def scaled(self, factor: float) -> Detection:
        return Detection(self.boxes * factor, self.scores, self.landmarks * factor)


@lru_cache(maxsize=32)
def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    r, c = np.divmod(np.arange(rows * cols, dtype=np.float32), np.float32(cols))
    return c, r


class YuNetDetector:
    """``detect(bgr)`` on a BGR uint8 image of any size; pads to a multiple of 32 itself."""

    def __init__(self, session: ort.InferenceSession, score_threshold: float, nms_iou: float, max_faces: int) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._outputs = [f"{kind}_{s}" for s in _STRIDES for kind in ("cls", "obj", "bbox", "kps")]
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_faces = max_faces

    def infer(self, bgr: np.ndarray) -> list[np.ndarray]:
        """Raw network outputs for the padded image (used by the benchmark as the floor)."""
        h, w = bgr.shape[:2]
        ph, pw = -(-h // _ALIGN) * _ALIGN, -(-w // _ALIGN) * _ALIGN
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        blob[0, :, :h, :w] = bgr.transpose(2, 0, 1)
        return list(self._session.run(self._outputs, {self._input: blob}))

    def detect(self, bgr: np.ndarray) -> Detection:
        h, w = bgr.shape[:2]
        ph, pw = -(-h // _ALIGN) * _ALIGN, -(-w // _ALIGN) * _ALIGN
        outputs = self.infer(bgr)
        boxes, scores, marks = [], [], []
        for i, stride in enumerate(_STRIDES):
            cls, obj, bbox, kps = (o[0] for o in outputs[4 * i : 4 * i + 4])
            score = np.sqrt(np.clip(cls[:, 0] * obj[:, 0], 0.0, 1.0))
            keep = np.nonzero(score >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            cols, rows = _grid(ph // stride, pw // stride)
            c, r = cols[keep], rows[keep]
            b, k = bbox[keep], kps[keep]
            cx, cy = (c + b[:, 0]) * stride, (r + b[:, 1]) * stride
            bw, bh = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1))
            lx = (c[:, None] + k[:, 0::2]) * stride
            ly = (r[:, None] + k[:, 1::2]) * stride
            marks.append(np.stack([lx, ly], axis=2))
            scores.append(score[keep])
        if not scores:
            return Detection(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        all_boxes = np.concatenate(boxes).astype(np.float32)
        all_scores = np.concatenate(scores).astype(np.float32)
        all_marks = np.concatenate(marks).astype(np.float32)
        xywh = np.column_stack([all_boxes[:, :2], all_boxes[:, 2:] - all_boxes[:, :2]])
        keep = np.asarray(
            cv2.dnn.NMSBoxes(xywh.tolist(), all_scores.tolist(), self.score_threshold, self.nms_iou),
            dtype=np.int64,
        ).reshape(-1)
        keep = keep[np.argsort(-all_scores[keep], kind="stable")][: self.max_faces]
        return Detection(all_boxes[keep], all_scores[keep], all_marks[keep])
