"""Worst cases of every decoder path within the configured limits: time and peak memory.

Usage::

    python bench/decode_bounds.py [--pixels 50000000] [--faces ../shared/faces] [--only NAME,...]

Each case is built in memory from a real photo of ``../shared/faces`` (or, for the hostile
ones, from real encoder output with its framing rewritten), then decoded by
``shared.imaging.decode`` in a fresh process, so each row's peak RSS is that case's alone. The
table gives the file size, the answer (a decoded size or the INVALID_IMAGE reason), the wall
time and the peak RSS of the process, beside the baseline of the same process decoding nothing.

The builders are importable: the tests build the same hostile files from them.
"""

from __future__ import annotations

import io
import math
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


FACES = ROOT.parent / "shared" / "faces"
PHOTO = FACES / "fr_obama.jpg"
MIN_SIZE = (40, 40)
WORKING_SIZE = (640, 640)


# --- builders --------------------------------------------------------------------------------


def photo_rgb(size: tuple[int, int], path: Path = PHOTO) -> Image.Image:
    """The photo resized to ``size`` (w, h), RGB."""
    with Image.open(path) as im:
        return im.convert("RGB").resize(size, Image.Resampling.BILINEAR)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment of well-formed encoder output; a scan ends where
    its entropy-coded data does. Only for files this module built: it trusts the framing."""
    out = []
    pos = 2
    while pos < len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            out.append((marker, pos, pos + 2))
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7:
                    break
                end += 2
        out.append((marker, pos, end))
        pos = end
    return out


def _scan_fields(data: bytes, start: int) -> tuple[list[int], int, int, int]:
    """Component ids, Ss, Se and Ah of the SOS segment at ``start``."""
    count = data[start + 4]
    comps = [data[start + 5 + 2 * k] for k in range(count)]
    ss, se, approx = data[start + 5 + 2 * count : start + 8 + 2 * count]
    return comps, ss, se, approx >> 4


def scan_bomb(scans: int, size: tuple[int, int] = (3000, 4000), junk: bytes = b"") -> bytes:
    """A real progressive JPEG of the photo reduced to its DC scan plus ``scans`` copies of one AC scan.

    The photo is encoded grey-in-colour at 4:4:4, so its Cr AC scan is an end-of-band run over
    every block: a few bytes that cost the decoder a pass over all blocks, each time. libjpeg warns
    about the repeated progression and decodes on. ``junk`` goes between the copies: libjpeg
    searches past it to the next marker.
    """
    grey = photo_rgb(size).convert("L").convert("RGB")
    data = encode(grey, "JPEG", quality=90, progressive=True, subsampling=0)
    segments = jpeg_segments(data)
    first_sos = next(i for i, (marker, _, _) in enumerate(segments) if marker == 0xDA)
    # Headers, then the DC scan (preceded by its tables).
    head = data[: segments[first_sos][2]]
    for i, (marker, start, end) in enumerate(segments):
        if marker == 0xDA and _scan_fields(data, start)[:2] == ([3], 1):
            table = segments[i - 1]
            assert table[0] == 0xC4, "each AC scan follows its own Huffman table"
            scan = data[table[1] : end]
            break
    else:
        raise AssertionError("no Cr AC scan in the encoder's output")
    return head + (scan + junk) * scans + b"\xff\xd9"


def progressive_jpeg_with_scans(scans: int, size: tuple[int, int] = (400, 500)) -> bytes:
    """A progressive JPEG of the photo with exactly ``scans`` scans (repeating its last AC scan)."""
    data = encode(photo_rgb(size), "JPEG", quality=90, progressive=True)
    segments = jpeg_segments(data)
    sos = [i for i, (marker, _, _) in enumerate(segments) if marker == 0xDA]
    assert scans >= len(sos), f"the encoder writes {len(sos)} scans already"
    last = sos[-1]
    start = segments[last - 1][1] if segments[last - 1][0] == 0xC4 else segments[last][1]
    repeat = data[start : segments[last][2]]
    return data[: segments[last][2]] + repeat * (scans - len(sos)) + data[segments[last][2] :]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_many_chunks(chunks: int, size: tuple[int, int] = (400, 500)) -> bytes:
    """A real PNG of the photo whose IDAT stream is split into ``chunks`` IDAT chunks."""
    data = encode(photo_rgb(size), "PNG")
    pos, stream, head = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            stream += data[pos + 8 : pos + 8 + length]
        elif kind != b"IEND":
            head += data[pos : pos + 12 + length]
        pos += 12 + length
    step = max(1, math.ceil(len(stream) / chunks))
    parts = [stream[i : i + step] for i in range(0, len(stream), step)]
    parts += [b""] * (chunks - len(parts))
    return data[:8] + head + b"".join(png_chunk(b"IDAT", p) for p in parts) + png_chunk(b"IEND", b"")
