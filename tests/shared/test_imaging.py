"""shared/imaging.py on real photos of ../shared/faces: header checks, decode paths, working copy."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
from PIL import Image

from shared import imaging
from shared.config import Settings
from shared.errors import ImageReason, InvalidImageError
from tests.conftest import FACES_DIR
from tests.images import OBAMA, jpeg, pil_bytes, png, read_bgr, with_exif_orientation

# The engine's defaults (KYCDeepFace's min_image_size and max_image_size).
MIN_SIZE = (100, 100)
MAX_SIZE = (500, 500)
ASTRONAUT = FACES_DIR / "sk_astronaut.png"


def decode(data: bytes, settings: Settings, max_size: tuple[int, int] = MAX_SIZE) -> imaging.DecodedImage:
    return imaging.decode(data, settings, MIN_SIZE, max_size)


def reason_of(data: bytes, settings: Settings) -> ImageReason:
    with pytest.raises(InvalidImageError) as caught:
        decode(data, settings)
    return caught.value.reason


@pytest.mark.parametrize(("name", "reduction"), [("fr_obama.jpg", 1), ("fr_biden.jpg", 2)])
def test_a_jpeg_photo_is_decoded_to_a_working_copy_that_fits(settings: Settings, name: str, reduction: int) -> None:
    path = FACES_DIR / name
    original = read_bgr(path)
    image = decode(path.read_bytes(), settings)
    h, w = original.shape[:2]
    assert image.size == (w, h)
    assert max(image.working.shape[1] / MAX_SIZE[0], image.working.shape[0] / MAX_SIZE[1]) == pytest.approx(1, abs=0.01)
    assert image.scale == pytest.approx(image.working.shape[1] / w, rel=0.01)
    # libjpeg's DCT-scaled decode is used when the coarser pixels still hold twice the working
    # size: 500 px of 1137 (obama) needs them all, 500 of 2204 (biden) half.
    assert image.reduction == reduction
    assert abs(image.pixels.shape[0] - h / reduction) <= 1
    assert (image.jpeg is not None) == (reduction > 1)
    assert image.luma == pytest.approx(float(cv2.cvtColor(image.working, cv2.COLOR_BGR2GRAY).mean()))


def test_a_finer_decode_is_served_on_demand_and_matches_a_full_decode(settings: Settings) -> None:
    path = FACES_DIR / "fr_biden.jpg"
    image = decode(path.read_bytes(), settings)
    assert image.reduction == 2
    pixels, reduction = image.source(1)
    assert reduction == 1 and image.jpeg is None  # nothing finer left to decode
    assert np.array_equal(pixels, read_bgr(path))
    assert image.source(2) == (pixels, 1)  # never coarser than what it holds


def test_a_small_photo_is_not_upscaled(settings: Settings) -> None:
    data = (FACES_DIR / "fr_obama_small.jpg").read_bytes()
    image = decode(data, settings)
    assert (image.scale, image.reduction, image.size) == (1.0, 1, (320, 240))
    assert image.working.shape == (240, 320, 3)


@pytest.mark.parametrize("wanted", [1.0, 0.9, 0.5, 0.3, 0.25, 0.2, 0.125, 0.05, 0.001])
def test_reduction_is_the_coarsest_that_keeps_the_pixels_asked_for(wanted: float) -> None:
    reduction = imaging.reduction_for(wanted)
    assert reduction in (1, 2, 4, 8)
    assert 1 / reduction >= wanted or reduction == 8
    assert reduction == 8 or 1 / (2 * reduction) < wanted  # the next step would be too coarse


def test_reduced_coordinates_follow_the_pixel_centres() -> None:
    points = np.array([[0.0, 0.0], [10.0, 20.0]])
    assert np.array_equal(imaging.to_reduced(points, 1), points)
    # Source pixels 0 and 1 average into reduced pixel 0: their centres (0 and 1) map to -0.25 and 0.25.
    assert np.allclose(imaging.to_reduced(points, 2), [[-0.25, -0.25], [4.75, 9.75]])


def test_working_copy_keeps_the_aspect_and_the_content(settings: Settings) -> None:
    original = read_bgr()
    small, scale = imaging.working_copy(original, (300, 300))
    assert small.shape[0] == 300 and abs(small.shape[1] - round(910 * scale)) <= 1
    reference = cv2.resize(original, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
    assert float(np.abs(small.astype(np.int16) - reference).mean()) < 2.0
    same, one = imaging.working_copy(original, (4000, 4000))
    assert same is original and one == 1.0


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_read_from_the_header_and_applied(settings: Settings, orientation: int) -> None:
    upright = cv2.resize(read_bgr(), (455, 568), interpolation=cv2.INTER_AREA)
    data = with_exif_orientation(upright, orientation)
    header = imaging.check_header(data, settings, MIN_SIZE)
    assert header.orientation == orientation
    assert header.size == (455, 568)  # displayed size, even when the stored one is swapped
    image = decode(data, settings, max_size=(1000, 1000))
    assert image.pixels.shape[:2] == (568, 455)
    assert float(np.abs(image.pixels.astype(np.int16) - upright).mean()) < 6.0


def test_png_decoded_by_opencv_equals_the_file(settings: Settings) -> None:
    image = decode(ASTRONAUT.read_bytes(), settings, max_size=(1000, 1000))
    assert np.array_equal(image.pixels, cv2.imread(str(ASTRONAUT)))


def test_alpha_is_composited_on_white(settings: Settings) -> None:
    rgba = Image.open(ASTRONAUT).convert("RGBA")
    alpha = np.full((512, 512), 255, np.uint8)
    alpha[:, :256] = 0  # the left half fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    image = decode(pil_bytes(rgba, "PNG"), settings, max_size=(1000, 1000))
    assert (image.pixels[:, :256] == 255).all()
    assert np.array_equal(image.pixels[:, 256:], cv2.imread(str(ASTRONAUT))[:, 256:])


def test_sixteen_bit_png_is_scaled_to_eight_bits(settings: Settings) -> None:
    grey = cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2GRAY)
    image = decode(png(grey.astype(np.uint16) * 257), settings, max_size=(1000, 1000))
    assert int(np.abs(image.pixels[:, :, 0].astype(np.int16) - grey).max()) <= 1


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: b"", ImageReason.INVALID_FORMAT),
        (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n", ImageReason.INVALID_FORMAT),
        (lambda: OBAMA.read_bytes()[: len(OBAMA.read_bytes()) // 2], ImageReason.READ_ERROR),
        (lambda: jpeg(np.full((80, 400, 3), 128, np.uint8)), ImageReason.TOO_SMALL),
    ],
    ids=["empty", "eps", "truncated-jpeg", "too-small"],
)
def test_unusable_input_is_a_typed_reason(settings: Settings, make: Callable[[], bytes], reason: ImageReason) -> None:
    assert reason_of(make(), settings) is reason


def test_limits_come_from_settings(settings: Settings) -> None:
    data = OBAMA.read_bytes()
    for limit in (
        {"max_image_bytes": len(data) - 1},
        {"max_image_side_px": 1136},  # the photo is 910x1137
        {"max_image_pixels": 910 * 1137 - 1},
    ):
        assert reason_of(data, settings.model_copy(update=limit)) is ImageReason.TOO_LARGE, limit
    exact = {"max_image_bytes": len(data), "max_image_side_px": 1137, "max_image_pixels": 910 * 1137}
    assert decode(data, settings.model_copy(update=exact)).size == (910, 1137)


def test_a_corrupt_png_chunk_is_a_read_error(settings: Settings) -> None:
    data = bytearray(ASTRONAUT.read_bytes())
    idat = data.find(b"IDAT")
    data[idat + 100] ^= 0xFF  # inside the compressed pixels: only the CRC notices
    assert reason_of(bytes(data), settings) is ImageReason.READ_ERROR
