"""Decoder work is bounded from the header: scan bombs, chunk floods and marker floods are refused
before a decoder or Pillow's parser sees them, and real files of every shape still decode."""

from __future__ import annotations

import struct
import time

import cv2
import numpy as np
import pytest

from bench.decode_bounds import png_many_chunks, progressive_jpeg_with_scans, scan_bomb
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.errors import ImageReason, InvalidImageError
from shared.headers import MAX_JPEG_MARKERS, MAX_JPEG_SCANS, MAX_PNG_CHUNKS, jpeg_scans, png_chunks
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
