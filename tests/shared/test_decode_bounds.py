"""Decoder work is bounded from the header: scan bombs, chunk floods and marker floods are refused
before a decoder or Pillow's parser sees them, and real files of every shape still decode."""

from __future__ import annotations

import io
import struct
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from bench.decode_bounds import (
    bmp_rle8,
    encode,
    gif_with_junk,
    photo_rgb,
    png_many_chunks,
    progressive_jpeg_with_scans,
    scan_bomb,
    tiff_with_strips,
    with_alpha,
)
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.errors import ImageReason, InvalidImageError
from shared.headers import (
    MAX_GIF_STEPS,
    MAX_JPEG_MARKERS,
    MAX_JPEG_SCANS,
    MAX_PNG_CHUNKS,
    MAX_TIFF_ENTRIES,
    MAX_TIFF_STRIPS,
    gif_steps,
    jpeg_scans,
    png_chunks,
    tiff_counts,
)
from shared.imaging import decode
from tests.conftest import FACES_DIR
from tests.images import OBAMA, jpeg, read_bgr

MIN_SIZE = (40, 40)
WORKING = (640, 640)


def _refused(data: bytes, settings: Settings) -> tuple[InvalidImageError, float]:
    start = time.perf_counter()
    with pytest.raises(InvalidImageError) as caught:
        decode(data, settings, MIN_SIZE, WORKING)
    return caught.value, time.perf_counter() - start


def test_scan_bomb_is_invalid_image_in_under_a_second(engine: KYCDeepFace) -> None:
    # 30,000 copies of one AC scan after the DC scan of a 12 MP photo: every limit holds (bytes,
    # pixels, sides), and libjpeg would spend about 2 ms per copy.
    bomb = scan_bomb(30_000)
    assert len(bomb) < engine.settings.max_image_bytes
    start = time.perf_counter()
    doc = engine.get_faces(bomb).model_dump(mode="json")
    elapsed = time.perf_counter() - start
    assert doc["code"] == "INVALID_IMAGE" and doc["reason"] == "INVALID_FORMAT", doc
    assert "scans" in doc["message"]
    assert elapsed < 1.0, f"took {elapsed:.2f} s"


def test_scan_bomb_with_junk_between_scans_is_still_counted(settings: Settings) -> None:
    # libjpeg skips bytes that are not a marker ("extraneous bytes before marker") and reads on.
    error, elapsed = _refused(scan_bomb(2_000, junk=b"junk\x00\x00"), settings)
    assert error.reason == ImageReason.INVALID_FORMAT and "scans" in error.message
    assert elapsed < 1.0


def test_scan_bound_is_exact(settings: Settings) -> None:
    at_bound = progressive_jpeg_with_scans(MAX_JPEG_SCANS)
    assert jpeg_scans(at_bound) == MAX_JPEG_SCANS
    image = decode(at_bound, settings, MIN_SIZE, WORKING)
    assert image.size == (400, 500)
    error, _ = _refused(progressive_jpeg_with_scans(MAX_JPEG_SCANS + 1), settings)
    assert error.reason == ImageReason.INVALID_FORMAT


@pytest.mark.parametrize("path", sorted(FACES_DIR.glob("*.jpg")), ids=lambda p: p.name)
def test_real_photos_are_within_the_scan_bound(path, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    data = path.read_bytes()
    scans = jpeg_scans(data)
    assert 1 <= scans <= 11  # baseline, or a progression as written by libjpeg or Photoshop
    decode(data, settings, MIN_SIZE, WORKING)


def test_scan_count_follows_the_framing() -> None:
    """Stuffed 0xFF00 bytes, restart markers, APPn payloads and fill bytes are not scans."""
    photo = read_bgr()
    ok, buf = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_RST_INTERVAL, 1])
    assert ok
    with_restarts = buf.tobytes()
    entropy = with_restarts[with_restarts.rfind(b"\xff\xda") :]
    assert b"\xff\x00" in entropy and b"\xff\xd0" in entropy  # the cases under test are present
    assert jpeg_scans(with_restarts) == 1
    # An APP1 whose payload is nothing but start-of-scan markers (an EXIF thumbnail has real ones).
    payload = b"\xff\xda" * 20_000
    app = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    assert jpeg_scans(with_restarts[:2] + app + with_restarts[2:]) == 1
    # Fill bytes before markers.
    assert jpeg_scans(with_restarts.replace(b"\xff\xda", b"\xff\xff\xff\xda")) == 1
    # A progressive file: libjpeg's script has 10 scans for colour.
    assert jpeg_scans(progressive_jpeg_with_scans(10)) == 10


def test_scan_count_survives_hostile_and_truncated_headers(settings: Settings) -> None:
    data = progressive_jpeg_with_scans(MAX_JPEG_SCANS)
    rng = np.random.default_rng(7)
    for cut in rng.integers(2, len(data), 200):
        assert 0 <= jpeg_scans(data[:cut]) <= MAX_JPEG_SCANS
    # Lengths of 0, 1 and past the end of the file.
    for length in (0, 1, 0xFFFF):
        hostile = data[:2] + b"\xff\xfe" + struct.pack(">H", length) + data[2:]
        assert jpeg_scans(hostile) <= MAX_JPEG_SCANS + 1
    # Random bytes after a start-of-image marker never raise anything but the typed error.
    for _ in range(50):
        junk = b"\xff\xd8" + rng.bytes(4096).replace(b"\xff", b"\xff\xda", 64)
        try:
            jpeg_scans(junk)
        except InvalidImageError as exc:
            assert exc.reason == ImageReason.INVALID_FORMAT


def test_marker_flood_is_refused_before_pillow_parses_it(settings: Settings) -> None:
    # Pillow's JPEG header parser loops in Python once per marker: 300k empty comments cost it
    # 0.8 s, a 24 MB file of them 14 s (libjpeg itself skips them in 20 ms).
    good = OBAMA.read_bytes()
    flood = good[:2] + b"\xff\xfe\x00\x02" * 300_000 + good[2:]
    error, elapsed = _refused(flood, settings)
    assert error.reason == ImageReason.INVALID_FORMAT and str(MAX_JPEG_MARKERS) in error.message
    assert elapsed < 1.0


def test_png_chunk_flood_is_refused_and_a_real_split_png_decodes(settings: Settings) -> None:
    split = png_many_chunks(MAX_PNG_CHUNKS - 10)
    assert MAX_PNG_CHUNKS - 10 < png_chunks(split) <= MAX_PNG_CHUNKS  # every IDAT, IHDR and IEND
    assert decode(split, settings, MIN_SIZE, WORKING).size == (400, 500)
    error, elapsed = _refused(png_many_chunks(MAX_PNG_CHUNKS + 10), settings)
    assert error.reason == ImageReason.INVALID_FORMAT and "chunks" in error.message
    assert elapsed < 1.0


def test_a_small_baseline_jpeg_still_decodes(settings: Settings) -> None:
    image = decode(jpeg(read_bgr()[:300, :300]), settings, MIN_SIZE, WORKING)
    assert image.size == (300, 300)


def test_fill_and_stuffing_floods_are_walked_in_c() -> None:
    good = OBAMA.read_bytes()
    sos = good.rfind(b"\xff\xda") + 14
    for filler in (b"\xff\x00", b"\xff\xd3", b"\xff\xff"):
        flood = good[:sos] + filler * 10_000_000 + good[sos:]
        start = time.perf_counter()
        assert jpeg_scans(flood) == 1
        assert time.perf_counter() - start < 1.5  # ~0.1 s on a quiet core


def test_gif_junk_before_the_image_is_refused_and_a_little_is_read(settings: Settings) -> None:
    # Pillow skips junk one byte per Python step: 5 MB took it 2.5 s.
    error, elapsed = _refused(gif_with_junk(20_000_000), settings)
    assert error.reason == ImageReason.INVALID_FORMAT and "GIF" in error.message
    assert elapsed < 0.5
    some = gif_with_junk(MAX_GIF_STEPS // 2)
    assert gif_steps(some) == MAX_GIF_STEPS // 2
    assert decode(some, settings, MIN_SIZE, WORKING).size == (400, 500)


def test_many_frame_gif_and_many_page_tiff_decode_their_first_image(settings: Settings) -> None:
    first = photo_rgb((400, 500))
    rest = [Image.new("RGB", (64, 48), (i % 256, 0, 0)) for i in range(1000)]
    for fmt in ("GIF", "TIFF"):
        data = encode(first, fmt, save_all=True, append_images=rest)
        start = time.perf_counter()
        image = decode(data, settings, MIN_SIZE, WORKING)
        assert image.size == (400, 500) and time.perf_counter() - start < 1.0
        assert abs(image.luma - decode(encode(first, fmt), settings, MIN_SIZE, WORKING).luma) < 1.0


def test_tiff_strip_flood_is_refused_and_real_strips_decode(settings: Settings) -> None:
    # Pillow builds a Python tile per strip: 3 million entries on a 400x500 image took 95 s.
    error, elapsed = _refused(tiff_with_strips(3_000_000), settings)
    assert error.reason == ImageReason.INVALID_FORMAT and "strips" in error.message
    assert elapsed < 0.5
    one_row_each = tiff_with_strips(500)
    assert tiff_counts(one_row_each) == (9, 500)
    image = decode(one_row_each, settings, MIN_SIZE, WORKING)
    assert image.size == (400, 500)
    expected = cv2.cvtColor(np.asarray(photo_rgb((400, 500))), cv2.COLOR_RGB2BGR)
    assert np.array_equal(image.pixels, expected)
    assert tiff_counts(tiff_with_strips(MAX_TIFF_STRIPS))[1] == MAX_TIFF_STRIPS


def test_tiff_directory_flood_is_refused(settings: Settings) -> None:
    data = bytearray(tiff_with_strips(500))
    struct.pack_into("<H", data, 8, MAX_TIFF_ENTRIES + 1)  # the entry count of the first IFD
    error, _ = _refused(bytes(data), settings)
    assert error.reason == ImageReason.INVALID_FORMAT and "directory entries" in error.message
    for cut in (2, 5, 9, 40):
        assert tiff_counts(bytes(data[:cut])) == (0, 0)


def test_run_length_bmp_decodes_in_c_like_pillow(settings: Settings) -> None:
    # Pillow's RLE decoder is Python: 0.15 s per megapixel, 50 MP fits in a 400 kB file.
    source = photo_rgb((2000, 2500))
    data = bmp_rle8(source)
    start = time.perf_counter()
    image = decode(data, settings, MIN_SIZE, WORKING)
    elapsed = time.perf_counter() - start
    assert image.size == (2000, 2500)
    with Image.open(io.BytesIO(data)) as im:
        reference = cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2BGR)
    assert np.array_equal(image.pixels, reference)
    assert elapsed < 0.5, f"{elapsed:.2f} s"
    broken = data[: len(data) // 3]
    with pytest.raises(InvalidImageError):
        decode(broken, settings, MIN_SIZE, WORKING)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_alpha_is_composited_on_white_like_pillow(fmt: str, settings: Settings) -> None:
    rgba = with_alpha(photo_rgb((400, 500)))
    data = encode(rgba, fmt, lossless=True) if fmt == "WEBP" else encode(rgba, fmt)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGBA"  # the alpha survived the encoder
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        expected = cv2.cvtColor(
            np.asarray(Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")), cv2.COLOR_RGB2BGR
        )
    image = decode(data, settings, MIN_SIZE, WORKING)
    assert image.pixels.shape == expected.shape
    assert np.abs(image.pixels.astype(int) - expected).max() <= 1
