"""Is a detected face fit for matching? The first failed check names the partial-face reason."""

from __future__ import annotations

import cv2
import numpy as np

from shared.config import Settings
from shared.schemas import PartialReason


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


def geometry(
    box: np.ndarray, landmarks: np.ndarray, image_size: tuple[int, int], settings: Settings
) -> PartialReason | None:
    """The checks the detection alone decides, so an unfit face is never warped: None when passed."""
    width, height = image_size
    if is_cropped(box, landmarks, width, height, settings.crop_tolerance):
        return PartialReason.CROPPED
    if float(box[2] - box[0]) < settings.min_face_px:
        return PartialReason.TOO_SMALL
    yaw, pitch = pose(landmarks)
    if abs(yaw) > settings.max_yaw or not settings.max_pitch_low <= pitch <= settings.max_pitch_high:
        return PartialReason.NOT_FRONT_FACING
    return None


def inner_face(aligned: np.ndarray) -> np.ndarray:
    """Grey inner face of an aligned crop: the template's corners hold background and hair."""
    grey = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    return grey[int(0.21 * h) : int(0.93 * h), int(0.18 * w) : int(0.82 * w)]


def appearance(aligned: np.ndarray, settings: Settings) -> PartialReason | None:
    """The checks on the aligned face's pixels: None when it is bright and sharp enough."""
    inner = inner_face(aligned)
    if float(inner.mean()) < settings.face_dark_luma:
        return PartialReason.TOO_DARK
    if sharpness(inner) < settings.blur_min_laplacian_var:
        return PartialReason.BLURRY
    return None
