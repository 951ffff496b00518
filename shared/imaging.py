"""Image validation and decoding: bytes in, a BGR array and its downscaled working copy out.

Limits are checked from the header before the pixels are decoded, so a file that declares
65535x65535 costs a few hundred bytes of parsing, not gigabytes of memory.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.config import Settings
from shared.errors import ImageReason, InvalidImageError

# Our own limits (Settings) are enforced before decode; Pillow's global bomb guard would only
# duplicate them with a different number and a warning instead of a typed result.
Image.MAX_IMAGE_PIXELS = None

# Only raster formats with safe, in-process decoders. EPS (Ghostscript), PSD, ICO and friends are
# refused as INVALID_FORMAT rather than handed to a decoder we do not want to expose.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")

_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DecodedImage:
    full: np.ndarray  # BGR uint8, original resolution, EXIF orientation applied
    working: np.ndarray  # BGR uint8, downscaled to fit the working size
    scale: float  # working pixels per original pixel (<= 1)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise InvalidImageError(
            ImageReason.INVALID_FORMAT, f"not a supported image (allowed: {', '.join(ALLOWED_FORMATS)})"
        ) from None
    except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError) as exc:
        raise InvalidImageError(ImageReason.READ_ERROR, f"cannot read the image header: {exc}") from None


def _oriented_size(im: Image.Image) -> tuple[int, int]:
    w, h = im.size
    try:
        if im.format == "PNG":
            # PngImageFile.getexif() decodes the whole image to look for a late eXIf chunk: a
            # bomb would be decoded before its size is checked. Only an early chunk counts here.
            exif = Image.Exif()
            if "exif" in im.info:
                exif.load(im.info["exif"])
        else:
            exif = im.getexif()
        orientation = exif.get(_EXIF_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block must not fail an otherwise good photo
        orientation = 1
    return (h, w) if orientation in _ROTATED else (w, h)


def _to_bgr(im: Image.Image) -> np.ndarray:
    """Any Pillow mode to 8-bit BGR: 16-bit and float scaled, alpha composited on white."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        peak = 65535.0 if im.mode.startswith("I;16") or float(arr.max(initial=0)) > 255 else 255.0
        grey = np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8)
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    rgb = np.asarray(im.convert("RGB"))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def check_header(data: bytes, settings: Settings, min_size: tuple[int, int]) -> Image.Image:
    """Open the image lazily and apply every limit that the header alone can decide."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImageError(ImageReason.INVALID_FORMAT, "image must be bytes")
    if len(data) == 0:
        raise InvalidImageError(ImageReason.INVALID_FORMAT, "image is empty (0 bytes)")
    if len(data) > settings.max_image_bytes:
        raise InvalidImageError(
            ImageReason.TOO_LARGE, f"image is {len(data)} bytes; limit is {settings.max_image_bytes}"
        )
    data = bytes(data)
    im = _open(data)
    w, h = _oriented_size(im)
    if max(w, h) > settings.max_image_side_px or w * h > settings.max_image_pixels:
        raise InvalidImageError(
            ImageReason.TOO_LARGE,
            f"image declares {w}x{h}; limits are {settings.max_image_side_px} px a side "
            f"and {settings.max_image_pixels} pixels",
        )
    if w < min_size[0] or h < min_size[1]:
        raise InvalidImageError(ImageReason.TOO_SMALL, f"image is {w}x{h}; minimum is {min_size[0]}x{min_size[1]}")
    if im.format == "PNG":
        # PNG carries a CRC per chunk, but decoding does not check IDAT's: verify() does, and a
        # corrupted file then says READ_ERROR instead of decoding to noise. verify() consumes
        # the file object, hence the second open.
        try:
            im.verify()
        except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError) as exc:
            raise InvalidImageError(ImageReason.READ_ERROR, f"corrupt PNG: {exc}") from None
        im = _open(data)
    return im


def _jpeg_is_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the first scan.

    libjpeg pads a truncated stream with grey and only warns; the marker check turns that into
    READ_ERROR. Segments are walked from the start so an EXIF thumbnail's own end marker, which
    sits inside APP1, cannot pass for the main image's.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return data.rfind(b"\xff\xd9") > pos
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
    return False


def _decode_jpeg(data: bytes) -> np.ndarray | None:
    """The fast path for the common case: libjpeg-turbo through OpenCV, EXIF orientation applied.

    About 3x faster than Pillow's decode plus colour conversion on phone-sized photos.
    """
    if not _jpeg_is_complete(data):
        raise InvalidImageError(ImageReason.READ_ERROR, "JPEG data is truncated (no end-of-image marker)")
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _decode_with_pillow(im: Image.Image) -> np.ndarray:
    im.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame only
    im.load()
    im = ImageOps.exif_transpose(im) or im
    return _to_bgr(im)


def working_copy(full: np.ndarray, max_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Downscale to fit ``max_size`` (w, h): area-average by an integer factor, then bilinear.

    The integer area step antialiases like INTER_AREA at half its cost; the bilinear rest is small.
    """
    h, w = full.shape[:2]
    scale = min(1.0, max_size[0] / w, max_size[1] / h)
    if scale >= 1.0:
        return full, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    factor = int(1.0 / scale)
    image = full
    if factor >= 2:
        image = cv2.resize(full, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), scale


def decode(data: bytes, settings: Settings, min_size: tuple[int, int], max_size: tuple[int, int]) -> DecodedImage:
    """Validate, decode and downscale. Raises :class:`InvalidImageError` with a reason."""
    im = check_header(data, settings, min_size)
    try:
        full = None
        if im.format == "JPEG" and im.mode in ("RGB", "L"):
            full = _decode_jpeg(bytes(data))
        if full is None:
            full = _decode_with_pillow(im)
    except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError, MemoryError) as exc:
        raise InvalidImageError(ImageReason.READ_ERROR, f"cannot decode the image: {exc}") from None
    finally:
        im.close()
    working, scale = working_copy(full, max_size)
    luma = float(cv2.cvtColor(working, cv2.COLOR_BGR2GRAY).mean())
    if luma < settings.image_dark_luma:
        raise InvalidImageError(
            ImageReason.TOO_DARK, f"image mean brightness {luma:.1f} is under {settings.image_dark_luma}"
        )
    return DecodedImage(full=full, working=working, scale=scale)
