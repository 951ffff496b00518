"""Decoders bounded by what they allocate, measured in a process that has loaded the models as a
worker's pool process has: the TIFF tile bomb is refused before libtiff allocates its tile, and
a 50 MP grey+alpha PNG peaks within the documented bytes per pixel (docs/OPERATIONS.md, "Worker
memory"). Every decoder path still gives the pixels Pillow's whole-image conversion gave."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from bench.decode_bounds import CASES, encode, photo_rgb, tiff_tile_bomb, tiff_tiled_image, with_alpha
from shared.config import Settings
from shared.errors import ImageReason, InvalidImageError
from shared.headers import MIN_TIFF_CHUNK_BOUND_PX, tiff_chunk_pixels
from shared.imaging import decode
from tests.conftest import ROOT

MIN_SIZE, WORKING = (40, 40), (640, 640)
# docs/OPERATIONS.md: every decoder path costs at most this much above the process's own RSS.
BYTES_PER_PIXEL = 10
SLACK_MB = 60  # allocator and detection on the working copy


def peak_above_baseline(path: Path) -> dict[str, object]:
    """Decode ``path`` with the engine in a fresh process whose models are loaded and warm."""
    cmd = [sys.executable, str(ROOT / "bench" / "decode_bounds.py"), "--measure", str(path), "--engine"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout
    row: dict[str, object] = json.loads(out.splitlines()[-1])
    return row


@pytest.mark.slow
def test_the_tile_bomb_and_a_50_mp_grey_alpha_png_stay_in_the_bound(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tif"
    bomb.write_bytes(tiff_tile_bomb())  # 2 MB declaring 640x480, one 26,704 px tile: 2.1 GB inflated
    pixels = 50_000_000
    png = tmp_path / "grey_alpha.png"
    png.write_bytes(CASES["png_grey_alpha"][1](pixels))
    with Image.open(png) as im:
        assert im.mode == "LA" and im.size[0] * im.size[1] > 0.99 * pixels
    refused = peak_above_baseline(bomb)
    assert str(refused["answer"]).startswith("INVALID_IMAGE") and "INVALID_FORMAT" in str(refused["answer"])
    assert float(refused["peak_mb"]) - float(refused["before_mb"]) < SLACK_MB, refused  # was +2 GB
    decoded = peak_above_baseline(png)
    assert decoded["answer"] != "ERROR", decoded
    bound_mb = BYTES_PER_PIXEL * pixels / 2**20 + SLACK_MB  # ~537 MB; it was ~950 above the models
    assert float(decoded["peak_mb"]) - float(decoded["before_mb"]) < bound_mb, decoded


def test_a_tile_larger_than_its_image_is_refused_and_real_tiles_decode() -> None:
    settings = Settings()
    bomb = tiff_tile_bomb()
    assert tiff_chunk_pixels(bomb) == (26_704**2, 640 * 480)
    with pytest.raises(InvalidImageError) as refused:
        decode(bomb, settings, MIN_SIZE, WORKING)
    assert refused.value.reason is ImageReason.INVALID_FORMAT and "tile or strip" in refused.value.message
    # Just above the floor for a small image: refused; tiles of 256 and 1024 px (the floor) decode.
    over = tiff_tiled_image(photo_rgb((300, 200)), (1040, 1024))
    with pytest.raises(InvalidImageError, match="tile or strip"):
        decode(over, settings, MIN_SIZE, WORKING)
    for size, tile in (((700, 500), (256, 256)), ((100, 120), (256, 256)), ((300, 200), (1024, 1024))):
        assert tile[0] * tile[1] <= max(size[0] * size[1], MIN_TIFF_CHUNK_BOUND_PX)
        image = photo_rgb(size)
        got = decode(tiff_tiled_image(image, tile), settings, MIN_SIZE, WORKING).pixels
        assert np.array_equal(got, cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)), (size, tile)


def _pillow_reference(data: bytes) -> np.ndarray:
    """What the whole-image path gave: exif_transpose, then one conversion, alpha on white."""
    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        im.load()
        upright = ImageOps.exif_transpose(im) or im
        if upright.mode in ("I;16", "I;16B", "I"):
            arr = np.asarray(upright, dtype=np.float32)
            peak = 65535.0 if upright.mode.startswith("I;16") or arr.max() > 255 else 255.0
            grey = np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8)
            return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
        if upright.mode in ("RGBA", "LA") or (upright.mode == "P" and "transparency" in upright.info):
            rgba = np.asarray(upright.convert("RGBA")).astype(np.float64)
            alpha = rgba[..., 3:] / 255
            rgb = np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha))
            return cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2BGR)
        return cv2.cvtColor(np.asarray(upright.convert("RGB")), cv2.COLOR_RGB2BGR)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _files() -> dict[str, bytes]:
    image = photo_rgb((333, 271))  # odd sizes: bands and rotations meet uneven edges
    rgba = with_alpha(image)
    grey16 = Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
    files = {
        "png_grey_alpha": encode(rgba.convert("LA"), "PNG"),
        "png_palette": encode(image.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "png_palette_transparent": encode(image.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=3),
        "png_16bit_grey": encode(grey16, "PNG"),
        "tiff_rgba": encode(rgba, "TIFF", compression="tiff_deflate"),
        "tiff_cmyk": encode(image.convert("CMYK"), "TIFF"),
        "tiff_16bit_grey": encode(grey16, "TIFF"),
        "gif": encode(image.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "jpeg_cmyk": encode(image.convert("CMYK"), "JPEG", quality=95),
    }
    for orientation in range(2, 9):
        files[f"tiff_orientation_{orientation}"] = encode(image, "TIFF", exif=_exif(orientation))
        files[f"png_rgba_orientation_{orientation}"] = encode(rgba, "PNG", exif=_exif(orientation))
        files[f"jpeg_cmyk_orientation_{orientation}"] = encode(image.convert("CMYK"), "JPEG", exif=_exif(orientation))
    return files


@pytest.mark.parametrize(("name", "data"), list(_files().items()))
def test_every_path_gives_the_pixels_of_a_whole_image_conversion(name: str, data: bytes) -> None:
    got = decode(data, Settings(), MIN_SIZE, (2000, 2000)).pixels
    want = _pillow_reference(data)
    assert got.shape == want.shape, name
    assert int(np.abs(got.astype(int) - want).max()) <= 1, name  # compositing rounds within one level
