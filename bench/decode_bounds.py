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

import argparse
import io
import json
import math
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.config import Settings  # noqa: E402
from shared.errors import InvalidImageError  # noqa: E402
from shared.headers import MAX_JPEG_SCANS, MAX_TIFF_STRIPS  # noqa: E402
from shared.imaging import decode  # noqa: E402

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


def tiff_with_strips(strips: int, size: tuple[int, int] = (400, 500)) -> bytes:
    """An uncompressed RGB TIFF of the photo, one row per strip, declaring ``strips`` strips
    (those past the last row repeat it: Pillow builds a tile for each)."""
    image = photo_rgb(size)
    w, h = size
    row = 3 * w
    entries = 9
    arrays = 8 + 2 + 12 * entries + 4
    pixels = arrays + 8 * strips + 6

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, kind, count, value)

    ifd = struct.pack("<H", entries) + b"".join(
        [
            entry(256, 4, 1, w),
            entry(257, 4, 1, h),
            entry(258, 3, 3, arrays + 8 * strips),  # BitsPerSample 8,8,8
            entry(259, 3, 1, 1),  # no compression
            entry(262, 3, 1, 2),  # RGB
            entry(273, 4, strips, arrays),
            entry(277, 3, 1, 3),
            entry(278, 4, 1, 1),  # RowsPerStrip
            entry(279, 4, strips, arrays + 4 * strips),
        ]
    )
    offsets = np.minimum(np.arange(strips), h - 1) * row + pixels
    return (
        b"II*\x00"
        + struct.pack("<I", 8)
        + ifd
        + struct.pack("<I", 0)
        + offsets.astype("<u4").tobytes()
        + np.full(strips, row, "<u4").tobytes()
        + struct.pack("<HHH", 8, 8, 8)
        + image.tobytes()
    )


def zeros_zlib(size: int) -> bytes:
    """A zlib stream of ``size`` zero bytes, in a second: one full-flushed 16 MiB block repeated
    (after a full flush the compressor starts afresh, so each block's output is the same bytes),
    then the rest and the Adler-32 of ``size`` zeros (a = 1, b = size mod 65521)."""
    block = 16 << 20
    compressor = zlib.compressobj(9)
    first = compressor.compress(bytes(min(block, size))) + compressor.flush(zlib.Z_FULL_FLUSH)
    if size <= block:
        return first + compressor.flush()
    repeat = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(size - block, block)
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = raw.compress(bytes(rest)) + raw.flush()
    return first + repeat * full + tail + struct.pack(">I", (size % 65521) << 16 | 1)


def tiff_tiled(size: tuple[int, int], tile: tuple[int, int], tile_data: list[bytes], spp: int = 3) -> bytes:
    """A deflate TIFF of ``size`` (w, h) in tiles of ``tile`` (w, h), 8 bits per sample, RGB (3
    samples) or grey (1), with the given compressed tiles (one per tile, row by row)."""
    entries = 12
    head = 8 + 2 + 12 * entries + 4
    offsets_at, counts_at, bits_at = head, head + 4 * len(tile_data), head + 8 * len(tile_data)
    data_at = bits_at + 8
    offsets = np.cumsum([data_at, *(len(t) for t in tile_data[:-1])])

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, kind, count, value)

    many = len(tile_data) > 1
    ifd = struct.pack("<H", entries) + b"".join(
        [
            entry(256, 4, 1, size[0]),
            entry(257, 4, 1, size[1]),
            entry(258, 3, spp, bits_at if spp > 2 else 8),  # BitsPerSample: 8 each
            entry(259, 3, 1, 8),  # deflate
            entry(262, 3, 1, 2 if spp == 3 else 1),  # RGB or grey
            entry(277, 3, 1, spp),
            entry(278, 4, 1, tile[1]),  # RowsPerStrip (unused by tiled readers)
            entry(284, 3, 1, 1),  # chunky
            entry(322, 4, 1, tile[0]),
            entry(323, 4, 1, tile[1]),
            entry(324, 4, len(tile_data), offsets_at if many else int(offsets[0])),
            entry(325, 4, len(tile_data), counts_at if many else len(tile_data[0])),
        ]
    )
    return (
        b"II*\x00"
        + struct.pack("<I", 8)
        + ifd
        + struct.pack("<I", 0)
        + offsets.astype("<u4").tobytes()
        + np.array([len(t) for t in tile_data], "<u4").tobytes()
        + struct.pack("<HHHH", 8, 8, 8, 0)
        + b"".join(tile_data)
    )


def tiff_tiled_image(image: Image.Image, tile: tuple[int, int]) -> bytes:
    """An RGB image as a deflate TIFF in ``tile`` tiles, edge tiles padded as libtiff pads them."""
    w, h = size = image.size
    across, down = -(-w // tile[0]), -(-h // tile[1])
    padded = np.zeros((down * tile[1], across * tile[0], 3), np.uint8)
    padded[:h, :w] = np.asarray(image.convert("RGB"))
    tiles = [
        zlib.compress(padded[y : y + tile[1], x : x + tile[0]].tobytes())
        for y in range(0, down * tile[1], tile[1])
        for x in range(0, across * tile[0], tile[0])
    ]
    return tiff_tiled(size, tile, tiles)


def tiff_tile_bomb(side: int = 26_704, size: tuple[int, int] = (640, 480)) -> bytes:
    """A TIFF declaring ``size`` whose one tile is ``side`` px square: 2 MB of deflated zeros
    that libtiff inflates into a 2.1 GB tile buffer (the pixel limit only sees ``size``)."""
    return tiff_tiled(size, (side, side), [zeros_zlib(side * side * 3)])


def gif_with_junk(junk: int, size: tuple[int, int] = (400, 500)) -> bytes:
    """A real GIF of the photo with ``junk`` zero bytes before its first image (Pillow skips
    them one by one)."""
    data = encode(photo_rgb(size).convert("P", palette=Image.Palette.ADAPTIVE), "GIF")
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    return data[:pos] + b"\x00" * junk + data[pos:]


def _dims(pixels: int) -> tuple[int, int]:
    """(w, h) of a 4:3 image of at most ``pixels`` pixels."""
    w = int(math.sqrt(pixels * 4 / 3))
    return w, pixels // w


def _blocky(pixels: int) -> Image.Image:
    """The photo at 1/8 of the size, enlarged without smoothing: real content that still
    compresses losslessly within the byte limit at 50 MP."""
    w, h = _dims(pixels)
    return photo_rgb((w // 8, h // 8)).resize((w, h), Image.Resampling.NEAREST)


def bmp_rle8(image: Image.Image) -> bytes:
    """An 8-bit run-length-encoded BMP (Pillow reads these but cannot write them)."""
    pal = image.convert("P", palette=Image.Palette.ADAPTIVE)
    px = np.asarray(pal)
    w, h = pal.size
    rows = []
    for y in range(h - 1, -1, -1):  # bottom-up
        row = px[y]
        starts = np.flatnonzero(np.diff(row, prepend=-1))
        out = bytearray()
        for s, e in zip(starts, [*starts[1:], w], strict=True):
            for k in range(s, e, 255):
                out += bytes([min(255, e - k), row[s]])
        rows.append(bytes(out) + b"\x00\x00")
    body = b"".join(rows) + b"\x00\x01"
    rgb = (pal.getpalette() or [])[:768]
    rgb += [0] * (768 - len(rgb))
    palette = b"".join(bytes([rgb[3 * i + 2], rgb[3 * i + 1], rgb[3 * i], 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(body), 2835, 2835, 256, 0)
    return header + info + palette + body


def with_alpha(image: Image.Image) -> Image.Image:
    """RGBA whose alpha is the image's own brightness: translucent everywhere, so no encoder
    can drop the alpha channel as opaque."""
    rgba = image.convert("RGBA")
    rgba.putalpha(image.convert("L"))
    return rgba


def _jpeg(pixels: int, **kwargs: object) -> bytes:
    return encode(photo_rgb(_dims(pixels)), "JPEG", quality=95, **kwargs)


def _png(image: Image.Image) -> bytes:
    return encode(image, "PNG", compress_level=6)


def _orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _tiff_pages(pixels: int) -> bytes:
    pages = [Image.new("RGB", (64, 48), (i % 256, 0, 0)) for i in range(2000)]
    return encode(_blocky(pixels), "TIFF", compression="tiff_deflate", save_all=True, append_images=pages)


def _gif_frames(pixels: int) -> bytes:
    first = _blocky(pixels).convert("P", palette=Image.Palette.ADAPTIVE)
    frames = [Image.new("P", (64, 48), i % 256) for i in range(2000)]
    return encode(first, "GIF", save_all=True, append_images=frames)


# name -> (decoder path, builder of a file at ``pixels`` pixels, also decode at full scale)
Builder = Callable[[int], bytes]
CASES: dict[str, tuple[str, Builder, bool]] = {
    "jpeg_baseline": ("libjpeg via OpenCV, DCT-reduced", lambda p: _jpeg(p, subsampling=0), False),
    "jpeg_baseline_full": ("libjpeg via OpenCV, reduced then full scale", lambda p: _jpeg(p, subsampling=0), True),
    "jpeg_progressive": ("libjpeg via OpenCV, DCT-reduced", lambda p: _jpeg(p, progressive=True, subsampling=0), False),
    "jpeg_progressive_full": (
        "libjpeg via OpenCV, reduced then full scale",
        lambda p: _jpeg(p, progressive=True, subsampling=0),
        True,
    ),
    "jpeg_100_scans": (
        "libjpeg via OpenCV, DCT-reduced",
        lambda p: scan_bomb(MAX_JPEG_SCANS - 1, _dims(p)),
        False,
    ),
    "jpeg_cmyk": (
        "libjpeg via Pillow",
        lambda p: encode(photo_rgb(_dims(p)).convert("CMYK"), "JPEG", quality=95),
        False,
    ),
    "jpeg_grey": ("libjpeg via OpenCV, DCT-reduced", lambda p: encode(photo_rgb(_dims(p)).convert("L"), "JPEG"), False),
    "png_rgb": ("libpng via OpenCV", lambda p: _png(_blocky(p)), False),
    "png_rgba": ("libpng via OpenCV, alpha on white", lambda p: _png(with_alpha(_blocky(p))), False),
    "png_grey_alpha": (
        "libpng, grey and alpha on white",
        lambda p: _png(with_alpha(_blocky(p)).convert("LA")),
        False,
    ),
    "png_palette_transparent": (
        "libpng via OpenCV, palette with transparency on white",
        lambda p: encode(_blocky(p).convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0),
        False,
    ),
    "png_16bit_grey": (
        "libpng via Pillow, 16-bit scaled",
        lambda p: _png(Image.fromarray(np.asarray(_blocky(p).convert("L"), np.uint16) * 257)),
        False,
    ),
    "png_palette": (
        "libpng via Pillow, palette",
        lambda p: _png(_blocky(p).convert("P", palette=Image.Palette.ADAPTIVE)),
        False,
    ),
    "webp_lossy": ("libwebp via OpenCV", lambda p: encode(photo_rgb(_dims(p)), "WEBP", quality=80, method=0), False),
    "webp_alpha": (
        "libwebp via OpenCV, alpha on white",
        lambda p: encode(with_alpha(photo_rgb(_dims(p))), "WEBP", quality=80, method=0),
        False,
    ),
    "tiff_deflate": ("libtiff via Pillow", lambda p: encode(_blocky(p), "TIFF", compression="tiff_deflate"), False),
    "tiff_2000_pages": ("libtiff via Pillow, first page", _tiff_pages, False),
    "tiff_16bit_grey": (
        "libtiff via Pillow, 16-bit scaled",
        lambda p: encode(
            Image.fromarray(np.asarray(_blocky(p).convert("L"), np.uint16) * 257), "TIFF", compression="tiff_deflate"
        ),
        False,
    ),
    "tiff_cmyk": (
        "libtiff via Pillow",
        lambda p: encode(_blocky(p).convert("CMYK"), "TIFF", compression="tiff_deflate"),
        False,
    ),
    "tiff_tiled": ("libtiff via Pillow, 256 px tiles", lambda p: tiff_tiled_image(_blocky(p), (256, 256)), False),
    "tiff_rgba": (
        "libtiff via Pillow, alpha on white",
        lambda p: encode(with_alpha(_blocky(p)), "TIFF", compression="tiff_deflate"),
        False,
    ),
    "tiff_rotated": (
        "libtiff via Pillow, EXIF orientation 6",
        lambda p: encode(_blocky(p), "TIFF", compression="tiff_deflate", exif=_orientation_exif(6)),
        False,
    ),
    "gif_2000_frames": ("Pillow GIF, first frame", _gif_frames, False),
    "bmp_rle8": ("BMP RLE8 via OpenCV", lambda p: bmp_rle8(_blocky(p)), False),
    "bmp_24bit_max_bytes": (
        "BMP via OpenCV",
        lambda p: encode(photo_rgb(_dims(min(p, (25 << 20) // 3 - 4096))), "BMP"),
        False,
    ),
    # Refused from the header: the time is the refusal.
    "jpeg_scan_bomb_30000": ("refused: scans", lambda p: scan_bomb(30_000, _dims(min(p, 12_000_000))), False),
    "png_1M_chunks": ("refused: chunks", lambda p: png_many_chunks(1_000_000), False),
    "tiff_3M_strips": ("refused: strips", lambda p: tiff_with_strips(3_000_000), False),
    "tiff_65536_strips": ("Pillow raw TIFF, at the strip bound", lambda p: tiff_with_strips(MAX_TIFF_STRIPS), False),
    "tiff_tile_bomb": ("refused: a tile over the bound", lambda p: tiff_tile_bomb(), False),
    "gif_24M_junk": ("refused: junk before the image", lambda p: gif_with_junk(24_000_000), False),
}


def peak_rss_mb() -> float:
    """This process's peak RSS. Not getrusage: Linux carries ru_maxrss over from the parent
    across fork and exec, so a child would report the (larger) bench parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: Path, full_scale: bool, engine: bool = False) -> dict[str, object]:
    """Decode the file once in this process: wall time, peak RSS and the answer.

    With ``engine``, as a worker's pool process does: the models loaded and warmed first
    (``before_mb`` then includes them), then the whole ``get_faces`` on the bytes.
    """
    settings = Settings()
    data = path.read_bytes()
    runner = None
    if engine:
        from shared.engine import KYCDeepFace

        runner = KYCDeepFace(settings=settings)
        runner.get_faces(encode(photo_rgb((640, 480)), "JPEG"))  # warm, as worker_process_init does
    before = peak_rss_mb()
    start = time.perf_counter()
    if runner is not None:
        result = runner.get_faces(data)
        answer = f"{result.code} {getattr(result, 'reason', None) or ''}".strip()
    else:
        try:
            image = decode(data, settings, MIN_SIZE, WORKING_SIZE)
            if full_scale:
                image.source(1)
            answer = f"{image.size[0]}x{image.size[1]} at 1/{image.reduction}"
        except InvalidImageError as exc:
            answer = f"INVALID_IMAGE {exc.reason.value}"
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": peak_rss_mb(), "before_mb": before, "answer": answer}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixels", type=int, default=Settings().max_image_pixels, help="default: KYC_MAX_IMAGE_PIXELS")
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child: decode this file
    parser.add_argument("--full-scale", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", action="store_true", help=argparse.SUPPRESS)  # child: as a pool process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.full_scale, args.engine)))
        return 0
    names = args.only.split(",") if args.only else list(CASES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path_kind, build, full_scale = CASES[name]
            file = Path(tmp) / name
            file.write_bytes(build(args.pixels))
            # A fresh process per case: its peak RSS is this decode's, not an earlier one's.
            cmd = [sys.executable, __file__, "--measure", str(file)] + (["--full-scale"] if full_scale else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = {"case": name, "path": path_kind, "mb": file.stat().st_size / 1e6, **json.loads(out.splitlines()[-1])}
            file.unlink()
            rows.append(row)
            print(f"{name}: {row['answer']} {row['seconds']:.2f} s {row['peak_mb']:.0f} MB", file=sys.stderr)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"\nDecoder worst cases at {args.pixels:,} pixels (load average {' '.join(load)}, {os.cpu_count()} cores)\n")
    print("| case | decoder path | file MB | answer | time s | peak RSS MB | RSS before decode MB |")
    print("|---|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['case']} | {r['path']} | {r['mb']:.1f} | {r['answer']} | {r['seconds']:.2f} "
            f"| {r['peak_mb']:.0f} | {r['before_mb']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
