"""Structure limits read from a file's own framing, before any decoder or Pillow parser sees it.

A file within every byte and pixel limit can still hold a decoder for minutes: libjpeg decodes
every scan a progressive JPEG carries, and each scan costs a pass over all blocks even when it
carries two bytes of data (an end-of-band run). Pillow's own parsers loop in Python once per
JPEG marker, PNG chunk, GIF sub-block (or junk byte) and TIFF strip. These walks count those
units with C-speed searches and a bounded number of Python steps, and refuse a file that has
more of them than any real encoder writes (INVALID_FORMAT, naming what there is too much of).
A TIFF's tile or strip is also held to its image's size: libtiff allocates one whole.
"""

from __future__ import annotations

import re
import struct

from shared.errors import ImageReason, InvalidImageError

# libjpeg's progression (jpeg_simple_progression, used by libjpeg-turbo, Pillow and OpenCV)
# writes 10 scans for a colour image, 6 for grey and 18 for CMYK; mozjpeg's scan optimisation
# writes a subset of its 64 candidate scans; Photoshop offers 3 to 5. libtiff stops a
# JPEG inside a TIFF at 100 scans by default (LIBTIFF_JPEG_MAX_ALLOWED_SCAN_NUMBER), which is
# also the bound here: 10x what encoders write, and at 50 MP each extra scan costs ~10 ms.
MAX_JPEG_SCANS = 100
# Markers of every kind (segments, SOI/TEM) walked before the walk gives up: a camera JPEG has
# about 20, a progressive one about 25 more, a 16 MB ICC profile in APP2 chunks adds 256.
MAX_JPEG_MARKERS = 10_000
# libpng writes 8 KiB IDAT chunks (3,200 in a 25 MiB file) and a row-by-row encoder writes one
# per row (16,384 at the longest side allowed); Pillow parses and verifies them one Python step each.
MAX_PNG_CHUNKS = 50_000
# Pillow reads a GIF's blocks before the first image one Python step per extension sub-block and
# per junk byte (5 MB of junk: 2.5 s). Real files have a handful, a few hundred with XMP.
MAX_GIF_STEPS = 10_000
# Pillow builds one Python tile per TIFF strip or tile, at ~30 us each: 3 million strip entries
# (24 MB) on a 400x500 image took 95 s. One strip per row at the longest side allowed, for 4
# separate planes, is 65,536; libtiff's writer puts ~8 KiB in a strip (6,124 at 50 MP).
MAX_TIFF_STRIPS = 65_536
# Entries of the first IFD, each a Python step for Pillow; real files carry 10 to 60.
MAX_TIFF_ENTRIES = 4_096
# libtiff allocates a whole tile (or strip) and inflates it before Pillow crops it to the image:
# a 640x480 TIFF whose one tile was 26,704 px square took a process to 2.4 GB. So a tile or strip
# may hold no more pixels than its image (whose pixels the pixel limit bounds), or this floor
# where the image is smaller: encoders tile at 256 or 512 px and never beyond 1024.
MIN_TIFF_CHUNK_BOUND_PX = 1024 * 1024

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
# libjpeg's next_marker(): skip to a 0xFF, skip fill 0xFFs, and a 0x00 after it is a stuffed
# byte, not a marker. RSTn are markers inside a scan's entropy data and standalone elsewhere:
# none of them starts a segment, so the search steps over them too. Each byte is mapped to its
# role, "F" (0xFF), "z" (0x00, RSTn: no marker after a 0xFF) or "m" (anything else), so a marker
# is the substring "Fm" and each search runs in C: 24 MB of fill or stuffed bytes cost 0.3-0.45 s
# on a loaded core, the worst a 25 MiB file can do here.
_ROLES = bytes(ord("F") if b == 0xFF else ord("z") if b == 0 or 0xD0 <= b <= 0xD7 else ord("m") for b in range(256))
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
    roles = data.translate(_ROLES)
    scans = markers = 0
    pos = 2
    while (found := roles.find(b"Fm", pos)) >= 0:
        marker = data[found + 1]
        pos = found + 2
        if marker == _EOI:
            break
        markers += 1
        if markers > MAX_JPEG_MARKERS:
            raise _too_many("JPEG", f"markers (more than {MAX_JPEG_MARKERS})")
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


_GIF_BLOCK = re.compile(rb"[\x21\x2c\x3b]")  # extension, image descriptor, trailer


def gif_steps(data: bytes, limit: int = MAX_GIF_STEPS) -> int:
    """Sub-blocks and junk bytes before the first image; ``limit + 1`` once past ``limit``."""
    flags = data[10] if len(data) > 10 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # header, screen, global palette
    steps = 0
    while steps <= limit:
        # Bytes Pillow skips one at a time count as steps, so look no further than the budget.
        found = _GIF_BLOCK.search(data, pos, pos + limit - steps + 1)
        if found is None:
            return limit + 1 if pos + limit - steps + 1 < len(data) else steps
        steps += found.start() - pos
        pos = found.start()
        if data[pos] != 0x21:
            break  # the first image, or the end: Pillow's header loop stops here
        pos += 2  # introducer and label
        while pos < len(data) and steps <= limit:
            size = data[pos]
            pos += 1 + size
            steps += 1
            if size == 0:
                break
    return steps


_TIFF_OFFSET_TAGS = {273, 279, 324, 325}  # StripOffsets, StripByteCounts, TileOffsets, TileByteCounts
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


# ImageWidth, ImageLength, RowsPerStrip, TileWidth, TileLength: single SHORT, LONG or LONG8 values.
_TIFF_SIZE_TAGS = {256, 257, 278, 322, 323}
_TIFF_INLINE = {3: "H", 4: "I", 16: "Q"}  # field type -> struct code


def _tiff_first_ifd(data: bytes) -> tuple[int, dict[int, tuple[int, int]]]:
    """(entries of the first IFD, {tag: (count, inline value)} of its first
    ``MAX_TIFF_ENTRIES + 1`` entries; the value is 0 unless one SHORT, LONG or LONG8)."""
    order = "<" if data[:2] == b"II" else ">"
    (magic,) = struct.unpack_from(order + "H", data, 2)
    if magic == 43:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        (ifd,) = struct.unpack_from(order + "Q", data, 8)
        (entries,) = struct.unpack_from(order + "Q", data, ifd)
        first, size, fmt = ifd + 8, 20, order + "HHQ"
    else:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (entries,) = struct.unpack_from(order + "H", data, ifd)
        first, size, fmt = ifd + 2, 12, order + "HHI"
    tags: dict[int, tuple[int, int]] = {}
    for i in range(min(entries, MAX_TIFF_ENTRIES + 1)):
        at = first + i * size
        tag, kind, count = struct.unpack_from(fmt, data, at)
        value = 0
        if tag in _TIFF_SIZE_TAGS and count == 1 and kind in _TIFF_INLINE:
            (value,) = struct.unpack_from(order + _TIFF_INLINE[kind], data, at + struct.calcsize(fmt))
        tags.setdefault(tag, (count, value))
    return entries, tags


def tiff_counts(data: bytes) -> tuple[int, int]:
    """(entries of the first IFD, largest strip or tile count it declares); zeros if unreadable."""
    try:
        entries, tags = _tiff_first_ifd(data)
    except struct.error:  # truncated: Pillow reports it
        return 0, 0
    return entries, max((count for tag, (count, _) in tags.items() if tag in _TIFF_OFFSET_TAGS), default=0)


def tiff_chunk_pixels(data: bytes) -> tuple[int, int]:
    """(pixels of the first IFD's largest tile or strip, pixels of its image); zeros if unreadable.

    A strip holds ``RowsPerStrip`` rows (libtiff clamps it to the image's height, as here); a
    tile ``TileWidth`` x ``TileLength`` pixels, whatever the image's size.
    """
    try:
        _, tags = _tiff_first_ifd(data)
    except struct.error:
        return 0, 0
    width, height = tags.get(256, (0, 0))[1], tags.get(257, (0, 0))[1]
    if 322 in tags or 323 in tags:
        return tags.get(322, (0, 0))[1] * tags.get(323, (0, 0))[1], width * height
    rows = tags.get(278, (0, 0))[1] or height
    return width * min(rows, height), width * height


def check_structure(data: bytes) -> None:
    """Apply the structure limits of the file's format, judged from its signature.

    Raises:
        InvalidImageError: INVALID_FORMAT, naming the unit there are too many of.
    """
    if data.startswith(b"\xff\xd8"):
        if jpeg_scans(data) > MAX_JPEG_SCANS:
            raise _too_many("JPEG", f"scans (more than {MAX_JPEG_SCANS}; encoders write at most a few dozen)")
    elif data.startswith(_PNG_SIGNATURE):
        if png_chunks(data) > MAX_PNG_CHUNKS:
            raise _too_many("PNG", f"chunks (more than {MAX_PNG_CHUNKS}; encoders write a few thousand)")
    elif data.startswith((b"GIF87a", b"GIF89a")):
        if gif_steps(data) > MAX_GIF_STEPS:
            raise _too_many("GIF", f"blocks before its first image (more than {MAX_GIF_STEPS})")
    elif data.startswith(_TIFF_SIGNATURES):
        entries, strips = tiff_counts(data)
        if entries > MAX_TIFF_ENTRIES:
            raise _too_many("TIFF", f"directory entries (more than {MAX_TIFF_ENTRIES})")
        if strips > MAX_TIFF_STRIPS:
            raise _too_many("TIFF", f"strips or tiles (more than {MAX_TIFF_STRIPS})")
        chunk, image = tiff_chunk_pixels(data)
        if chunk > max(image, MIN_TIFF_CHUNK_BOUND_PX):
            raise InvalidImageError(
                ImageReason.INVALID_FORMAT,
                f"TIFF tile or strip of {chunk} pixels is larger than its {image}-pixel image "
                f"(and than {MIN_TIFF_CHUNK_BOUND_PX})",
            )


def _too_many(kind: str, what: str) -> InvalidImageError:
    return InvalidImageError(ImageReason.INVALID_FORMAT, f"{kind} has too many {what}")
