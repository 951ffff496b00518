"""Generated test images: variants of real photos and hostile files, built in memory."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from tests.conftest import FACES_DIR

OBAMA = FACES_DIR / "fr_obama.jpg"


def jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def pil_bytes(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def read_bgr(path: Path = OBAMA) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None
    return image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with a tiny (short) IDAT: a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG whose SOF header is patched to declare width x height."""
    data = bytearray(jpeg(np.full((64, 64, 3), 128, np.uint8)))
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(pil_bytes(Image.new("P", (64, 64)), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    data = bytearray(pil_bytes(Image.new("RGB", (64, 64)), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def with_exif_orientation(array: np.ndarray, orientation: int) -> bytes:
    """JPEG of ``array`` stored so that applying EXIF ``orientation`` gives back ``array``."""
    image = Image.fromarray(cv2.cvtColor(array, cv2.COLOR_BGR2RGB))
    inverse = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,  # stored rotated 90 CCW, displayed rotated 90 CW
        8: Image.Transpose.ROTATE_270,
    }
    stored = image.transpose(inverse[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return pil_bytes(stored, "JPEG", exif=exif.tobytes(), quality=92)
