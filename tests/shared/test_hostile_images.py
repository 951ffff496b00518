"""Hostile and broken inputs: each gets a typed result, never an exception, in bounded memory."""

from __future__ import annotations

import io
import os
import resource
import zipfile

import numpy as np
import pytest
from PIL import Image

from shared.engine import KYCDeepFace
from tests.images import (
    OBAMA,
    bmp_declaring,
    gif_declaring,
    jpeg,
    jpeg_declaring,
    pil_bytes,
    png,
    png_declaring,
    read_bgr,
)

RNG = np.random.default_rng(1234)
GOOD = OBAMA.read_bytes()
GOOD_PNG = png(read_bgr()[:400, :400])


def _polyglot_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("payload.sh", "#!/bin/sh\necho pwned\n")
    return GOOD + out.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.open(OBAMA).convert("RGB").resize((300, 375)), Image.new("RGB", (300, 375), "blue")]
    return pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _corrupt_middle(data: bytes) -> bytes:
    b = bytearray(data)
    mid = len(b) // 2
    b[mid : mid + 2048] = RNG.integers(0, 256, 2048, dtype=np.uint8).tobytes()
    return bytes(b)


# name -> (bytes, expected code, expected reason or None for "any")
CASES: dict[str, tuple[object, str, str | None]] = {
    "empty": (b"", "INVALID_IMAGE", "INVALID_FORMAT"),
    "one_byte": (b"\xff", "INVALID_IMAGE", "INVALID_FORMAT"),
    "random_1k": (RNG.bytes(1024), "INVALID_IMAGE", "INVALID_FORMAT"),
    "random_1m": (RNG.bytes(1 << 20), "INVALID_IMAGE", "INVALID_FORMAT"),
    "text": (b"hello, I am not an image", "INVALID_IMAGE", "INVALID_FORMAT"),
    "html": (b"<html><body><img src=x onerror=alert(1)></body></html>", "INVALID_IMAGE", "INVALID_FORMAT"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>', "INVALID_IMAGE", "INVALID_FORMAT"),
    "pdf": (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "INVALID_IMAGE", "INVALID_FORMAT"),
    "eps_never_run": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "INVALID_IMAGE", "INVALID_FORMAT"),
    "psd": (b"8BPS\x00\x01" + b"\x00" * 64, "INVALID_IMAGE", "INVALID_FORMAT"),
    "jpeg_magic_garbage": (b"\xff\xd8\xff\xe0" + RNG.bytes(4096), "INVALID_IMAGE", None),
    "png_magic_garbage": (b"\x89PNG\r\n\x1a\n" + RNG.bytes(4096), "INVALID_IMAGE", None),
    "gif_magic_garbage": (b"GIF89a" + RNG.bytes(512), "INVALID_IMAGE", None),
    "truncated_jpeg_half": (GOOD[: len(GOOD) // 2], "INVALID_IMAGE", "READ_ERROR"),
    "truncated_jpeg_header": (GOOD[:200], "INVALID_IMAGE", None),
    "truncated_png_half": (GOOD_PNG[: len(GOOD_PNG) // 2], "INVALID_IMAGE", "READ_ERROR"),
    "corrupt_png_middle": (_corrupt_middle(GOOD_PNG), "INVALID_IMAGE", "READ_ERROR"),
    "png_bomb_65535": (png_declaring(65535, 65535), "INVALID_IMAGE", "TOO_LARGE"),
    "png_bomb_30000": (png_declaring(30000, 30000), "INVALID_IMAGE", "TOO_LARGE"),
    "jpeg_bomb_65500": (jpeg_declaring(65500, 65500), "INVALID_IMAGE", "TOO_LARGE"),
    "jpeg_bomb_30000": (jpeg_declaring(30000, 30000), "INVALID_IMAGE", "TOO_LARGE"),
    "gif_bomb": (gif_declaring(65535, 65535), "INVALID_IMAGE", "TOO_LARGE"),
    "bmp_bomb": (bmp_declaring(60000, 60000), "INVALID_IMAGE", "TOO_LARGE"),
    "png_1x1": (png(np.zeros((1, 1, 3), np.uint8)), "INVALID_IMAGE", "TOO_SMALL"),
    "jpeg_1x1": (jpeg(np.zeros((1, 1, 3), np.uint8)), "INVALID_IMAGE", "TOO_SMALL"),
    "strip_1x5000": (png(np.full((5000, 1, 3), 128, np.uint8)), "INVALID_IMAGE", "TOO_SMALL"),
    "strip_5000x1": (png(np.full((1, 5000, 3), 128, np.uint8)), "INVALID_IMAGE", "TOO_SMALL"),
    "strip_100x20000": (png(np.full((20000, 100, 3), 128, np.uint8)), "INVALID_IMAGE", "TOO_LARGE"),
    "just_under_min_99": (png(np.full((99, 99, 3), 128, np.uint8)), "INVALID_IMAGE", "TOO_SMALL"),
    "extreme_aspect_120x8000": (jpeg(np.full((120, 8000, 3), 128, np.uint8)), "SUCCESS", None),
    "all_black": (jpeg(np.zeros((480, 640, 3), np.uint8)), "INVALID_IMAGE", "TOO_DARK"),
    "all_white": (jpeg(np.full((480, 640, 3), 255, np.uint8)), "SUCCESS", None),
    "noise": (png(RNG.integers(0, 256, (480, 640, 3), dtype=np.uint8)), "SUCCESS", None),
    "polyglot_jpeg_zip": (_polyglot_zip(), "SUCCESS", None),
    "animated_gif": (_animated_gif(), "SUCCESS", None),
    "not_bytes_str": ("an image, honest", "INVALID_IMAGE", "INVALID_FORMAT"),
    "not_bytes_none": (None, "INVALID_IMAGE", "INVALID_FORMAT"),
    "ico": (pil_bytes(Image.new("RGB", (128, 128)), "ICO"), "INVALID_IMAGE", "INVALID_FORMAT"),
    "tga": (pil_bytes(Image.new("RGB", (128, 128)), "TGA"), "INVALID_IMAGE", "INVALID_FORMAT"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_gets_a_typed_result(engine: KYCDeepFace, name: str) -> None:
    data, code, reason = CASES[name]
    result = engine.get_faces(data)  # type: ignore[arg-type]
    doc = result.model_dump(mode="json")
    assert doc["code"] == code, doc
    if code == "INVALID_IMAGE":
        assert doc["reason"] in {"TOO_SMALL", "TOO_LARGE", "INVALID_FORMAT", "READ_ERROR", "TOO_DARK"}
        assert doc["message"]
        if reason is not None:
            assert doc["reason"] == reason, doc


def test_byte_size_limit_is_checked_first(settings) -> None:  # type: ignore[no-untyped-def]
    tight = KYCDeepFace(settings=settings.model_copy(update={"max_image_bytes": 10_000}))
    doc = tight.get_faces(GOOD).model_dump(mode="json")
    assert doc["code"] == "INVALID_IMAGE" and doc["reason"] == "TOO_LARGE"


def test_animated_gif_uses_the_first_frame(engine: KYCDeepFace) -> None:
    result = engine.get_faces(_animated_gif())
    assert len(result.faces) == 1  # type: ignore[union-attr]


def test_bombs_do_not_allocate(engine: KYCDeepFace) -> None:
    """Declared 65535x65535 would be 12 GiB of RGB; the peak RSS must not move by more than 64 MiB."""
    bombs = [png_declaring(65535, 65535), jpeg_declaring(65500, 65500), gif_declaring(65535, 65535)]
    engine.get_faces(GOOD)  # warm: first-call allocations are not the bomb's
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for _ in range(20):
        for bomb in bombs:
            assert engine.get_faces(bomb).model_dump()["reason"] == "TOO_LARGE"
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024, f"peak RSS grew by {grown_kib} KiB"
    assert os.getpid() > 0
