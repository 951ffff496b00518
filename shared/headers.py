"""Structure limits read from a file's own framing, before any decoder or Pillow parser sees it.

A file within every byte and pixel limit can still hold a decoder for minutes: libjpeg decodes
every scan a progressive JPEG carries, and each scan costs a pass over all blocks even when it
carries two bytes of data (an end-of-band run). Pillow's own header parsers loop in Python once
per PNG chunk or JPEG marker. These walks count those units with C-speed searches and a bounded
number of Python steps, and refuse a file that has more of them than any real encoder writes.
"""

from __future__ import annotations

import re
import struct

from shared.errors import ImageReason, InvalidImageError

# libjpeg's progression (jpeg_simple_progression, used by libjpeg-turbo, Pillow and OpenCV)
# writes 10 scans for a colour image, 6 for grey and 18 for CMYK; mozjpeg's scan optimisation
# chooses among 64 candidate scans and writes about 10; Photoshop offers 3 to 5. libtiff stops a
# JPEG inside a TIFF at 100 scans by default (LIBTIFF_JPEG_MAX_ALLOWED_SCAN_NUMBER), which is
# also the bound here: 10x what encoders write, and at 50 MP each extra scan costs ~10 ms.
MAX_JPEG_SCANS = 100
# Markers of every kind (segments, SOI/TEM) walked before the walk gives up: a camera JPEG has
# about 20, a progressive one about 25 more, a 16 MB ICC profile in APP2 chunks adds 256.
MAX_JPEG_MARKERS = 10_000
# libpng writes 8 KiB IDAT chunks (3,200 in a 25 MiB file) and a row-by-row encoder writes one
# per row (16,384 at the longest side allowed); Pillow parses and verifies them one Python step each.
MAX_PNG_CHUNKS = 50_000

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
# libjpeg's next_marker(): skip to a 0xFF, skip fill 0xFFs, and a 0x00 after it is a stuffed
# byte, not a marker. RSTn are markers inside a scan's entropy data and standalone elsewhere:
# none of them starts a segment, so the search steps over them too. The search is in C, so a
# 25 MiB file of stuffed bytes, restarts or junk between segments costs milliseconds.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xff\xd0-\xd7]")
_NO_LENGTH = {0x01, _SOI}  # TEM and SOI stand alone; every other marker is followed by a length


def jpeg_scans(data: bytes, limit: int = MAX_JPEG_SCANS) -> int:
    """Start-of-scan markers before the first end-of-image, counted as libjpeg reaches them.

    Segments are skipped by their length, as libjpeg skips them, so bytes inside an APPn (an EXIF
    thumbnail with scans of its own) are never taken for markers; entropy-coded data and junk
    between segments are searched past, as libjpeg resynchronises. A truncated file ends the count.

    Args:
        data: the file, starting with SOI (0xFFD8).
        limit: stop counting once past this many scans.

    Returns:
        The number of scans, or ``limit + 1`` as soon as there are more than ``limit``.

    Raises:
        InvalidImageError: INVALID_FORMAT when there are more than :data:`MAX_JPEG_MARKERS` markers.
    """
    scans = markers = 0
    pos = 2
    while (found := _JPEG_MARKER.search(data, pos)) is not None:
        marker = data[found.start() + 1]
        pos = found.end()
        if marker == _EOI:
            break
        markers += 1
        if markers > MAX_JPEG_MARKERS:
            raise InvalidImageError(
                ImageReason.INVALID_FORMAT,
                f"JPEG has more than {MAX_JPEG_MARKERS} markers; no encoder writes that many",
            )
        if marker in _NO_LENGTH:
            continue
        if marker == _SOS:
            scans += 1
            if scans > limit:
                break
        if pos + 2 > len(data):
            break
        (length,) = struct.unpack_from(">H", data, pos)
        pos += max(length, 2)  # a length below 2 covers only itself, as in libjpeg's skip_variable()
    return scans


def check_jpeg_scans(data: bytes) -> None:
    """Refuse a JPEG with more scans than any encoder writes (a scan bomb), before decoding."""
    if jpeg_scans(data) > MAX_JPEG_SCANS:
        raise InvalidImageError(
            ImageReason.INVALID_FORMAT,
            f"JPEG has more than {MAX_JPEG_SCANS} scans; encoders write at most a few dozen",
        )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(data: bytes, limit: int = MAX_PNG_CHUNKS) -> int:
    """Chunks up to IEND, following each chunk's length; ``limit + 1`` once past ``limit``.

    A truncated file ends the count: Pillow then reports the damage itself.
    """
    chunks = 0
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data) and chunks <= limit:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if kind == b"IEND":
            break
        pos += 12 + length
    return chunks


def check_png_chunks(data: bytes) -> None:
    """Refuse a PNG cut into more chunks than an encoder writes, before Pillow walks them."""
    if png_chunks(data) > MAX_PNG_CHUNKS:
        raise InvalidImageError(
            ImageReason.INVALID_FORMAT, f"PNG has more than {MAX_PNG_CHUNKS} chunks; encoders write a few thousand"
        )


def check_structure(data: bytes) -> None:
    """Apply the structure limits of the file's format, judged from its signature."""
    if data.startswith(b"\xff\xd8"):
        check_jpeg_scans(data)
    elif data.startswith(_PNG_SIGNATURE):
        check_png_chunks(data)
