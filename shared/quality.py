"""Is a detected face fit for matching? Measured once, then judged against a gate chosen by role.

A face's measures (crop, size, pose, brightness, sharpness) do not depend on what the image is for;
the gate does. ``QualityLevel`` names the gates in the spirit of Rekognition's ``QualityFilter``:
``none`` keeps every detected face, ``low`` rejects only what the model can no longer match (a
document portrait or a gallery probe has no retake), ``high`` is the strict gate of a ``verify``
selfie (a retake is cheap, and the reason says what to fix). The thresholds live in ``Settings``
(``KYC_QUALITY_LOW``, ``KYC_QUALITY_MEDIUM``, ``KYC_QUALITY_HIGH``); how they were derived is in
``shared/config.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from shared.schemas import PartialReason, QualityGate


def pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) proxies from five landmarks, both scale- and roll-invariant.

    yaw: the nose's offset from the eye-mouth midline, in inter-ocular distances (0 when frontal).
    pitch: where the nose sits between the eye line (0) and the mouth line (1); about 0.5 frontal.
    """
    right_eye, left_eye, nose, mouth_r, mouth_l = landmarks.astype(np.float64)
    eye_vec = left_eye - right_eye
    eye_dist = float(np.hypot(*eye_vec))
    if eye_dist < 1e-6:
        return float("inf"), 0.5
    u = eye_vec / eye_dist
    v = np.array([-u[1], u[0]])
    eyes_mid, mouth_mid = (right_eye + left_eye) / 2, (mouth_r + mouth_l) / 2
    yaw = float(np.dot(nose - (eyes_mid + mouth_mid) / 2, u) / eye_dist)
    depth = float(np.dot(mouth_mid - eyes_mid, v))
    pitch = float(np.dot(nose - eyes_mid, v) / depth) if abs(depth) > 1e-6 else 0.0
    return yaw, pitch


def is_cropped(box: np.ndarray, landmarks: np.ndarray, width: int, height: int, tolerance: float) -> bool:
    # YuNet shrinks the box of a cut face to its visible part, so "past the border" misses most
    # cut faces: a box that reaches the border (within a sliver of its own size) is cut.
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = max(1.0, tolerance * (x2 - x1)), max(1.0, tolerance * (y2 - y1))
    if x1 < mx or y1 < my or x2 > width - mx or y2 > height - my:
        return True
    return bool(
        np.any(landmarks[:, 0] < 0)
        or np.any(landmarks[:, 1] < 0)
        or np.any(landmarks[:, 0] >= width)
        or np.any(landmarks[:, 1] >= height)
    )


def sharpness(aligned_grey: np.ndarray) -> float:
    """Variance of the Laplacian over the aligned face: low when the face is out of focus."""
    return float(cv2.Laplacian(aligned_grey, cv2.CV_32F).var())


def inner_face(aligned: np.ndarray) -> np.ndarray:
    """Grey inner face of an aligned crop: the template's corners hold background and hair."""
    grey = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    return grey[int(0.21 * h) : int(0.93 * h), int(0.18 * w) : int(0.82 * w)]


@dataclass(frozen=True)
class Geometry:
    """What the detection alone tells: decided before any warp, so an unfit face is never warped."""

    cropped: bool
    width: float
    yaw: float
    pitch: float

    @classmethod
    def measure(
        cls, box: np.ndarray, landmarks: np.ndarray, image_size: tuple[int, int], crop_tolerance: float
    ) -> Geometry:
        yaw, pitch = pose(landmarks)
        cropped = is_cropped(box, landmarks, image_size[0], image_size[1], crop_tolerance)
        return cls(cropped, float(box[2] - box[0]), yaw, pitch)

    def reasons(self, gate: QualityGate) -> list[PartialReason]:
        found = []
        if self.cropped:
            found.append(PartialReason.CROPPED)
        if self.width < gate.min_face_px:
            found.append(PartialReason.TOO_SMALL)
        if abs(self.yaw) > gate.max_yaw or not gate.min_pitch <= self.pitch <= gate.max_pitch:
            found.append(PartialReason.NOT_FRONT_FACING)
        return found


@dataclass(frozen=True)
class Appearance:
    """What the aligned face's pixels tell."""

    luma: float
    sharpness: float

    @classmethod
    def measure(cls, aligned: np.ndarray) -> Appearance:
        inner = inner_face(aligned)
        return cls(float(inner.mean()), sharpness(inner))

    def reasons(self, gate: QualityGate) -> list[PartialReason]:
        found = []
        if self.luma < gate.min_luma:
            found.append(PartialReason.TOO_DARK)
        # A dark face is also flat: blur is only judged on a face bright enough to show edges.
        elif self.sharpness < gate.min_sharpness:
            found.append(PartialReason.BLURRY)
        return found
