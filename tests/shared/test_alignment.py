"""shared/alignment.py: the similarity fit, and the warp of real detected faces onto the template."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shared.alignment import TEMPLATE_112, align, similarity_transform, warp_scale
from shared.engine import KYCDeepFace
from tests.conftest import FACES_DIR
from tests.images import read_bgr


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([rot, np.array(shift)[:, None]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def landmarks_of(engine: KYCDeepFace, image: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    decoded = engine.decode(buf.tobytes())
    detection = engine.detect(decoded)
    assert len(detection) == 1
    return np.asarray(detection.landmarks[0], np.float32)


@pytest.mark.parametrize(("angle", "scale", "shift"), [(0, 1, (0, 0)), (17, 0.31, (400, -25)), (-140, 4.5, (-3, 9))])
def test_a_known_similarity_is_recovered(angle: float, scale: float, shift: tuple[float, float]) -> None:
    truth = similarity(angle, scale, shift)
    src = apply(np.linalg.inv(np.vstack([truth, [0, 0, 1]]))[:2], TEMPLATE_112)  # maps onto the template
    fitted = similarity_transform(src, TEMPLATE_112)
    assert np.allclose(fitted, truth, atol=1e-6)
    assert warp_scale(src) == pytest.approx(scale)


def test_a_mirrored_face_is_fitted_without_a_reflection() -> None:
    mirrored = TEMPLATE_112 * np.array([-1.0, 1.0], np.float32)
    fitted = similarity_transform(mirrored, TEMPLATE_112)
    assert np.linalg.det(fitted[:, :2]) > 0  # a rotation and scale: never a flip
    assert float(np.abs(apply(fitted, mirrored) - TEMPLATE_112).mean()) > 5  # so it cannot fit exactly


@pytest.mark.parametrize("name", ["fr_obama.jpg", "fr_biden.jpg", "df_img11.jpg"])
def test_real_landmarks_land_on_the_template(engine: KYCDeepFace, name: str) -> None:
    image = read_bgr(FACES_DIR / name)
    marks = landmarks_of(engine, image)
    fitted = similarity_transform(marks, TEMPLATE_112)
    # Five landmarks of a real frontal face fit the template within a few pixels of 112.
    assert float(np.linalg.norm(apply(fitted, marks) - TEMPLATE_112, axis=1).max()) < 6
    crop = align(image, marks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    # The eyes of the crop are where the template puts them: found again by the detector on a
    # padded copy of the crop (within its jitter on a face this small; eyes are 35 px apart).
    padded = cv2.copyMakeBorder(cv2.resize(crop, (224, 224)), 112, 112, 112, 112, cv2.BORDER_CONSTANT)
    again = (landmarks_of(engine, padded) - 112) / 2
    assert float(np.linalg.norm(again[:2] - TEMPLATE_112[:2], axis=1).max()) < 8


def test_the_region_pre_shrink_equals_shrinking_the_whole_photo(engine: KYCDeepFace) -> None:
    """A face many times the crop's size is area-shrunk over its region only, then warped: the
    same crop as area-shrinking the whole photo first, at a fraction of the cost."""
    image = cv2.resize(read_bgr(), None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    marks = landmarks_of(engine, cv2.resize(image, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)) * 4
    factor = int(1 / warp_scale(marks))
    assert factor >= 2  # the pre-shrink path runs
    fast = align(image, marks)
    small = cv2.resize(image, (image.shape[1] // factor, image.shape[0] // factor), interpolation=cv2.INTER_AREA)
    slow = align(small, (marks + 0.5) / factor - 0.5)
    assert float(np.abs(fast.astype(np.int16) - slow).mean()) < 3.0
    naive = cv2.warpAffine(image, similarity_transform(marks, TEMPLATE_112), (112, 112), flags=cv2.INTER_LINEAR)
    # Without the shrink the warp aliases: further from the area-shrunk crop than the fast path.
    assert float(np.abs(naive.astype(np.int16) - slow).mean()) > float(np.abs(fast.astype(np.int16) - slow).mean())


def test_crop_size_scales_the_template(engine: KYCDeepFace) -> None:
    image = read_bgr()
    marks = landmarks_of(engine, image)
    big = align(image, marks, (224, 224))
    assert big.shape == (224, 224, 3)
    assert warp_scale(marks, (224, 224)) == pytest.approx(2 * warp_scale(marks))
    # The same face at twice the resolution (resampled differently, hence the few levels).
    small = cv2.resize(big, (112, 112), interpolation=cv2.INTER_AREA)
    assert float(np.abs(small.astype(np.int16) - align(image, marks)).mean()) < 6.0
