"""shared/quality.py: pose, border and pixel checks, on real detections of ../shared/faces.

Thresholds are read from ``Settings`` (never restated here), so a retuned default moves the
tests with it.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shared import quality
from shared.alignment import TEMPLATE_112, align
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.schemas import PartialReason
from tests.conftest import FACES_DIR


def detected(engine: KYCDeepFace, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """(full-resolution pixels, box, landmarks, size) of the best face of a photo."""
    data = (FACES_DIR / name).read_bytes()
    image = engine.decode(data)
    detection = engine.detect(image)
    assert len(detection) >= 1, name
    pixels, reduction = image.source(1)
    assert reduction == 1
    return pixels, detection.boxes[0], detection.landmarks[0], image.size


def rotate(points: np.ndarray, angle_deg: float, scale: float = 1.0) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.asarray(points, np.float64) @ rot.T + np.array([300.0, 200.0])


def geometry(box: np.ndarray, marks: np.ndarray, size: tuple[int, int], settings: Settings, **gate: float) -> list:  # type: ignore[type-arg]
    """The geometry reasons at the ``medium`` gate (``gate`` overrides its thresholds)."""
    level = settings.quality_medium.model_copy(update=gate)
    return quality.Geometry.measure(box, marks, size, settings.crop_tolerance).reasons(level)


def appearance(aligned: np.ndarray, settings: Settings) -> list:  # type: ignore[type-arg]
    """The appearance reasons at the ``medium`` gate."""
    return quality.Appearance.measure(aligned).reasons(settings.quality_medium)


def test_the_template_is_frontal() -> None:
    yaw, pitch = quality.pose(TEMPLATE_112)
    assert abs(yaw) < 0.02 and 0.4 < pitch < 0.6


@pytest.mark.parametrize(("angle", "scale"), [(25, 1.0), (-60, 3.0), (180, 0.5)])
def test_pose_ignores_roll_and_scale(angle: float, scale: float) -> None:
    turned = TEMPLATE_112.astype(np.float64).copy()
    turned[2, 0] += 12  # the nose moved towards one eye: a head turned sideways
    assert quality.pose(rotate(turned, angle, scale)) == pytest.approx(quality.pose(turned), abs=1e-9)


def test_yaw_grows_with_the_nose_offset_and_keeps_its_sign() -> None:
    yaws = []
    for dx in (-16, -8, 0, 8, 16):
        marks = TEMPLATE_112.astype(np.float64).copy()
        marks[2, 0] += dx
        yaws.append(quality.pose(marks)[0])
    assert yaws == sorted(yaws) and yaws[0] < 0 < yaws[-1]


def test_coincident_eyes_are_not_frontal(settings: Settings) -> None:
    marks = TEMPLATE_112.copy()
    marks[1] = marks[0]
    assert quality.pose(marks)[0] == float("inf")
    box = np.array([20, 20, 90, 100], np.float32)
    assert geometry(box, marks, (200, 200), settings) == [PartialReason.NOT_FRONT_FACING]


@pytest.mark.parametrize("name", ["fr_obama.jpg", "fr_biden.jpg", "df_img11.jpg", "df_img12.jpg", "sk_astronaut.png"])
def test_real_frontal_faces_pass_every_check(engine: KYCDeepFace, settings: Settings, name: str) -> None:
    pixels, box, marks, size = detected(engine, name)
    assert geometry(box, marks, size, settings) == []
    assert appearance(align(pixels, marks), settings) == []


def test_a_face_cut_by_the_border_is_cropped(engine: KYCDeepFace, settings: Settings) -> None:
    _, box, marks, (width, height) = detected(engine, "fr_obama.jpg")
    assert not quality.is_cropped(box, marks, width, height, settings.crop_tolerance)
    # The same detection in an image that ends just inside the box, then just past a landmark.
    assert quality.is_cropped(box, marks, int(box[2]) - 1, height, settings.crop_tolerance)
    # A box well inside the image, but a landmark past its right edge.
    inside = np.array([10, 10, 20, 20], np.float32)
    assert not quality.is_cropped(inside, marks, width, height, 0.0)
    assert quality.is_cropped(inside, marks, int(marks[:, 0].max()), height, 0.0)
    assert geometry(box, marks, (int(box[2]), height), settings) == [PartialReason.CROPPED]


def test_small_faces_are_too_small(engine: KYCDeepFace, settings: Settings) -> None:
    _, box, marks, size = detected(engine, "fr_obama.jpg")
    width = float(box[2] - box[0])
    assert geometry(box, marks, size, settings, min_face_px=int(width) + 1) == [PartialReason.TOO_SMALL]
    assert geometry(box, marks, size, settings, min_face_px=int(width) - 1) == []


def test_dark_and_blurred_faces_are_refused_in_that_order(engine: KYCDeepFace, settings: Settings) -> None:
    pixels, _, marks, _ = detected(engine, "fr_obama.jpg")
    face = align(pixels, marks)
    blurred = cv2.GaussianBlur(face, (0, 0), 4)
    dark = (face * 0.1).astype(np.uint8)
    assert quality.sharpness(quality.inner_face(blurred)) < quality.sharpness(quality.inner_face(face))
    assert appearance(blurred, settings) == [PartialReason.BLURRY]
    assert appearance(dark, settings) == [PartialReason.TOO_DARK]
    assert appearance((blurred * 0.1).astype(np.uint8), settings) == [PartialReason.TOO_DARK]


def test_inner_face_leaves_out_the_corners() -> None:
    crop = np.zeros((112, 112, 3), np.uint8)
    crop[24:100, 22:90] = 200  # the middle of the face
    inner = quality.inner_face(crop)
    assert inner.ndim == 2 and 70 <= inner.shape[0] <= 90 and 60 <= inner.shape[1] <= 80
    assert float(inner.mean()) > 150  # mostly face, little background
