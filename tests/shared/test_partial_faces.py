"""Every partial-face reason, produced by a real photo or a photo altered the way real ones are."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shared.engine import KYCDeepFace
from shared.quality import pose
from shared.schemas import FacesResult
from tests.conftest import FACES_DIR, LFW_DIR
from tests.images import jpeg, read_bgr


def reasons(engine: KYCDeepFace, data: bytes, quality: str | None = None) -> tuple[int, list[str]]:
    result = engine.get_faces(data, quality)
    assert isinstance(result, FacesResult), result
    return len(result.faces), [p.reason.value for p in result.partial_faces]


def test_cropped_real_photos(engine: KYCDeepFace) -> None:
    for name in ("fr_obama_partial_face.jpg", "fr_obama_partial_face2.jpg"):
        assert reasons(engine, (FACES_DIR / name).read_bytes()) == (0, ["CROPPED"])


def test_cropped_when_the_border_cuts_a_third_of_the_face(engine: KYCDeepFace) -> None:
    image = read_bgr()  # face spans x 373..605
    assert reasons(engine, jpeg(image[:, 450:])) == (0, ["CROPPED"])
    assert reasons(engine, jpeg(image[:, 300:])) == (1, [])  # the whole face, with a margin


def test_too_small_face(engine: KYCDeepFace) -> None:
    small = cv2.resize(read_bgr(), None, fx=0.15, fy=0.15, interpolation=cv2.INTER_AREA)  # face ~35 px
    assert reasons(engine, jpeg(small), "medium") == (0, ["TOO_SMALL"])
    assert reasons(engine, jpeg(small), "high") == (0, ["TOO_SMALL"])
    assert reasons(engine, jpeg(small), "low") == (1, [])  # a small document portrait is still used


@pytest.mark.parametrize("quality", ["medium", "high"])
def test_not_front_facing_real_photos(engine: KYCDeepFace, quality: str) -> None:
    if not LFW_DIR.is_dir():
        pytest.skip("no LFW folds")
    for name in ("Johnny_Carson/Johnny_Carson_0002.jpg", "Hugo_Chavez/Hugo_Chavez_0033.jpg"):
        result = engine.get_faces((LFW_DIR / "images" / name).read_bytes(), quality)
        assert isinstance(result, FacesResult)
        centre = [p for p in result.partial_faces if abs((p.box.x1 + p.box.x2) / 2 - 125) < 40]
        assert [p.reason.value for p in centre] == ["NOT_FRONT_FACING"], name


def test_pose_proxy_is_zero_for_the_template_and_grows_with_yaw() -> None:
    from shared.alignment import TEMPLATE_112

    yaw, pitch = pose(TEMPLATE_112)
    assert abs(yaw) < 0.02 and 0.3 < pitch < 0.7
    turned = TEMPLATE_112.copy()
    turned[2, 0] += 30  # nose swung towards one cheek
    assert abs(pose(turned)[0]) > 0.45


def test_blurry_face(engine: KYCDeepFace) -> None:
    for quality in ("medium", "high"):
        assert reasons(engine, jpeg(cv2.GaussianBlur(read_bgr(), (0, 0), 6)), quality) == (0, ["BLURRY"])
        assert reasons(engine, jpeg(cv2.GaussianBlur(read_bgr(), (0, 0), 1)), quality) == (1, [])
    assert reasons(engine, jpeg(cv2.GaussianBlur(read_bgr(), (0, 0), 20)), "low") == (0, ["BLURRY"])


def test_too_dark_face_in_a_bright_photo(engine: KYCDeepFace) -> None:
    image = read_bgr().astype(np.float32)
    image[60:440, 350:630] *= 0.15  # backlit: the face in shadow, the room bright
    assert reasons(engine, jpeg(image.astype(np.uint8))) == (0, ["TOO_DARK"])


def test_thresholds_come_from_settings(settings) -> None:  # type: ignore[no-untyped-def]
    lax_gate = settings.quality_high.model_copy(update={"min_face_px": 10})
    lax = KYCDeepFace(settings=settings.model_copy(update={"quality_high": lax_gate}))
    small = cv2.resize(read_bgr(), None, fx=0.15, fy=0.15, interpolation=cv2.INTER_AREA)
    assert reasons(lax, jpeg(small), "high") == (1, [])


def test_dark_night_shot_with_a_lit_face_is_usable(engine: KYCDeepFace) -> None:
    """Mean brightness alone does not make an image TOO_DARK when a usable face is in it."""
    night = np.full((1400, 1400, 3), 4, np.uint8)
    night[500:900, 500:830] = read_bgr()[50:450, 330:660]  # the lit face, 7 % of the frame
    assert float(night.mean()) < 20
    assert reasons(engine, jpeg(night)) == (1, [])
    night[500:900, 500:830] //= 8  # the face in the dark too
    doc = engine.get_faces(jpeg(night)).model_dump(mode="json")
    assert doc["code"] == "INVALID_IMAGE" and doc["reason"] == "TOO_DARK"
