"""Image validation and decoding: bytes in, a BGR array and its downscaled working copy out.

Limits are checked from the header before the pixels are decoded, so a file that declares
65535x65535 costs a few hundred bytes of parsing, not gigabytes of memory.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, cast

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.config import Settings
from shared.errors import ImageReason, InvalidImageError
from shared.headers import check_structure

# Our own limits (Settings) are enforced before decode; Pillow's global bomb guard would only
# duplicate them with a different number and a warning instead of a typed result.
Image.MAX_IMAGE_PIXELS = None

# Only raster formats with safe, in-process decoders. EPS (Ghostscript), PSD, ICO and friends are
# refused as INVALID_FORMAT rather than handed to a decoder we do not want to expose.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")

# Decoded by OpenCV when upright 8-bit RGB or grey (PNG's CRCs are verified by Pillow first).
_OPENCV_FORMATS = {"PNG", "WEBP", "BMP"}
# Pillow decodes run-length BMPs (RLE8, RLE4) in pure Python, 0.15-0.35 s per megapixel, and a
# flat 50 MP image fits in 400 kB. OpenCV's C decoder takes ~1 s for all 50 MP.
_BMP_RLE = {1, 2}
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112


# libjpeg decodes at 1/2, 1/4 or 1/8 scale in the DCT domain, several times faster than a full
# decode: a 12 MP selfie costs ~120 ms at full size and ~30 ms at 1/2 on one core.
_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


@dataclass
class DecodedImage:
    """A decoded image: the working copy for detection, and pixels for alignment.

    ``pixels`` may be a JPEG decoded at 1/``reduction`` of its size; :meth:`source` decodes it
    again, finer, when a face needs more resolution than it holds.
    """

    working: np.ndarray  # BGR uint8, downscaled to fit the working size
    scale: float  # working pixels per original pixel (<= 1)
    size: tuple[int, int]  # original (width, height), EXIF orientation applied
    pixels: np.ndarray  # BGR uint8 at 1/reduction of the original
    reduction: int
    luma: float  # mean brightness of the working copy, 0-255
    jpeg: bytes | None  # kept only while a finer decode is possible

    def source(self, reduction: int) -> tuple[np.ndarray, int]:
        """Pixels decoded at 1/``reduction`` or finer, and the reduction they are at."""
        if reduction < self.reduction and self.jpeg is not None:
            pixels = _imdecode(self.jpeg, reduction)
            if pixels is not None:
                self.pixels, self.reduction = pixels, reduction
                if reduction == 1:
                    self.jpeg = None
        return self.pixels, self.reduction


def to_reduced(points: np.ndarray, reduction: int) -> np.ndarray:
    """Original-pixel coordinates to those of a 1/``reduction`` DCT-scaled decode (pixel centres)."""
    if reduction == 1:
        return points
    return (points + 0.5) / reduction - 0.5


def _imdecode(data: bytes, reduction: int) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED_FLAGS[reduction])


def reduction_for(pixels_per_original: float) -> int:
    """The coarsest JPEG reduction (1, 2, 4, 8) that keeps at least this many pixels per original one."""
    reduction = 1
    while reduction < 8 and 1.0 / (2 * reduction) >= pixels_per_original:
        reduction *= 2
    return reduction


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise InvalidImageError(
            ImageReason.INVALID_FORMAT, f"not a supported image (allowed: {', '.join(ALLOWED_FORMATS)})"
        ) from None
    except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError) as exc:
        raise InvalidImageError(ImageReason.READ_ERROR, f"cannot read the image header: {exc}") from None


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright), read without decoding any pixels."""
    try:
        if im.format == "PNG":
            # PngImageFile.getexif() decodes the whole image to look for a late eXIf chunk: a
            # bomb would be decoded before its size is checked. Only an early chunk counts here.
            exif = Image.Exif()
            if "exif" in im.info:
                exif.load(im.info["exif"])
        else:
            exif = im.getexif()
        return int(exif.get(_EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block must not fail an otherwise good photo
        return 1


class Header(NamedTuple):
    image: Image.Image  # opened lazily: no pixels decoded yet
    orientation: int  # EXIF orientation, 1 = upright
    size: tuple[int, int]  # (width, height) once the orientation is applied


_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _to_bgr(im: Image.Image) -> np.ndarray:
    """Any Pillow mode to 8-bit BGR: 16-bit and float scaled, alpha composited on white.

    Converted a band of rows at a time into the one output array: a whole-image ``convert``
    (and ``np.asarray``'s copy of it) cost 4-8 B/px more at the peak, a 50 MP grey+alpha image
    1 GB where this path holds Pillow's pixels plus the 3 B/px result.
    """
    w, h = im.size
    out = np.empty((h, w, 3), np.uint8)
    peak = 255.0
    if im.mode in _HIGH_DEPTH:
        extrema = cast(tuple[float, float], im.getextrema())  # one band: (min, max)
        high = float(extrema[1] or 0)
        peak = 65535.0 if im.mode.startswith("I;16") or high > 255 else 255.0
    alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    for top in range(0, h, _BAND_ROWS):
        band = im.crop((0, top, w, min(h, top + _BAND_ROWS)))
        rows = out[top : top + _BAND_ROWS]
        if im.mode in _HIGH_DEPTH:
            grey = np.clip(np.asarray(band, dtype=np.float32) * (255.0 / peak), 0, 255).astype(np.uint8)
            cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR, dst=rows)
        elif alpha:
            rows[...] = _on_white(np.asarray(band.convert("RGBA")), _FROM_RGBA)
        else:
            cv2.cvtColor(np.asarray(band if band.mode == "RGB" else band.convert("RGB")), cv2.COLOR_RGB2BGR, dst=rows)
        band.close()
    im.close()
    return out


# EXIF orientation -> the OpenCV steps of Pillow's exif_transpose, applied to the BGR result
# (3 B/px) instead of a transposed copy of Pillow's own pixels (4 B/px for RGB).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: (lambda a: cv2.flip(a, 1)),
    3: (lambda a: cv2.rotate(a, cv2.ROTATE_180)),
    4: (lambda a: cv2.flip(a, 0)),
    5: cv2.transpose,
    6: (lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE)),
    7: (lambda a: cv2.flip(cv2.transpose(a), -1)),
    8: (lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE)),
}


_BAND_ROWS = 256  # rows composited at a time: the temporaries stay a few MB
_FROM_RGBA, _FROM_BGRA = slice(2, None, -1), slice(0, 3)


def _on_white(src: np.ndarray, bgr: slice) -> np.ndarray:
    """Four-channel 8-bit pixels composited on white into BGR, a band of rows at a time.

    Pillow's alpha_composite needs a white RGBA canvas, its result and an RGB conversion, all
    full size: 26 B/px and 8.5 s at 50 MP. Here only the result is allocated.

    Args:
        src: (h, w, 4) uint8, alpha last.
        bgr: the slice of the colour channels in B, G, R order (``2::-1`` for RGBA).
    """
    out = np.empty((*src.shape[:2], 3), np.uint8)
    for top in range(0, src.shape[0], _BAND_ROWS):
        band = src[top : top + _BAND_ROWS]
        alpha = cv2.merge([band[..., 3]] * 3)
        colour = np.ascontiguousarray(band[..., bgr])
        # (c * a + 255 * (255 - a)) / 255 is c * a / 255 + (255 - a): OpenCV rounds the product
        # to nearest, which is what Pillow's compositing computes, twice as fast as numpy.
        out[top : top + _BAND_ROWS] = cv2.add(cv2.multiply(colour, alpha, scale=1 / 255), cv2.bitwise_not(alpha))
    return out


def check_header(data: bytes, settings: Settings, min_size: tuple[int, int]) -> Header:
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
    check_structure(data)
    im = _open(data)
    orientation = _orientation(im)
    w, h = im.size[::-1] if orientation in _ROTATED else im.size
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
    return Header(im, orientation, (w, h))


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


def _decode_jpeg(data: bytes, reduction: int) -> np.ndarray | None:
    """The fast path for the common case: libjpeg-turbo through OpenCV, EXIF orientation applied.

    About 3x faster than Pillow's decode plus colour conversion even at full size.
    """
    if not _jpeg_is_complete(data):
        raise InvalidImageError(ImageReason.READ_ERROR, "JPEG data is truncated (no end-of-image marker)")
    return _imdecode(data, reduction)


def _opaque_8bit(im: Image.Image) -> bool:
    """RGB, grey, or a PNG's palette without transparency: OpenCV's BGR is Pillow's, exactly."""
    return im.mode in ("RGB", "L") or (im.format == "PNG" and im.mode == "P" and "transparency" not in im.info)


def _alpha_8bit(im: Image.Image) -> bool:
    """RGBA, or a PNG's grey+alpha or palette with transparency: OpenCV reads each as BGRA."""
    return im.mode == "RGBA" or (
        im.format == "PNG" and (im.mode == "LA" or (im.mode == "P" and "transparency" in im.info))
    )


def _decode_with_opencv(data: bytes) -> np.ndarray | None:
    """Upright 8-bit RGB or grey PNG, WebP and BMP straight into BGR: one copy of the pixels
    instead of Pillow's four-byte buffer plus conversions."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _decode_bgra_with_opencv(data: bytes) -> np.ndarray | None:
    """Upright 8-bit RGBA PNG and WebP: OpenCV's BGRA composited on white, without Pillow's
    copies (a 50 MP WebP with alpha: 1.2 GB and 10 s through Pillow)."""
    bgra = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if bgra is None or bgra.dtype != np.uint8 or bgra.ndim != 3 or bgra.shape[2] != 4:
        return None  # 16-bit or unexpected: Pillow's path
    return _on_white(bgra, _FROM_BGRA)


def _decode_with_pillow(im: Image.Image) -> np.ndarray:
    im.seek(0)  # animated GIF/WebP, multi-page TIFF: the first frame only
    im.load()
    # Read after the load, as exif_transpose reads it: libtiff has turned a TIFF upright by now
    # and Pillow dropped its tag; a PNG's late eXIf chunk is in its info now.
    orientation = _orientation(im)
    pixels = _to_bgr(im)
    upright = _UPRIGHT.get(orientation)
    return pixels if upright is None else upright(pixels)


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
    """Validate, decode and downscale. Raises :class:`InvalidImageError` with a reason.

    Brightness is measured, not judged: a night shot with a lit face is still usable, so the
    engine decides TOO_DARK only when no usable face came out of a dark image.

    A large JPEG is decoded at the coarsest DCT scale that still holds twice the working size;
    faces that need more are served by :meth:`DecodedImage.source`.
    """
    # Pillow warns about odd but readable files (corrupt EXIF, unusual chunks); the result already
    # says what matters, and a warning promoted to an error must not fail a usable photo.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        im, orientation, size = check_header(data, settings, min_size)
        data = bytes(data)
        jpeg = data if im.format == "JPEG" and im.mode in ("RGB", "L") else None
        reduction = 1
        try:
            pixels = None
            if jpeg is not None:
                reduction = reduction_for(2.0 * min(1.0, max_size[0] / size[0], max_size[1] / size[1]))
                pixels = _decode_jpeg(jpeg, reduction)
            elif im.format in _OPENCV_FORMATS and _opaque_8bit(im) and orientation == 1:
                pixels = _decode_with_opencv(data)
            elif im.format in ("PNG", "WEBP") and _alpha_8bit(im) and orientation == 1:
                pixels = _decode_bgra_with_opencv(data)
            elif im.format == "BMP" and im.info.get("compression") in _BMP_RLE:
                pixels = _decode_with_opencv(data)
                if pixels is None:  # never Pillow's Python decoder
                    raise InvalidImageError(ImageReason.READ_ERROR, "cannot decode the run-length BMP")
            if pixels is None:
                jpeg, reduction = None, 1
                pixels = _decode_with_pillow(im)
        except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError, MemoryError) as exc:
            raise InvalidImageError(ImageReason.READ_ERROR, f"cannot decode the image: {exc}") from None
        finally:
            im.close()
    if jpeg is None:
        size = (pixels.shape[1], pixels.shape[0])
    working, local_scale = working_copy(pixels, max_size)
    scale = local_scale / reduction
    luma = float(cv2.cvtColor(working, cv2.COLOR_BGR2GRAY).mean())
    return DecodedImage(
        working=working, scale=scale, size=size, pixels=pixels, reduction=reduction, luma=luma,
        jpeg=jpeg if reduction > 1 else None,
    )  # fmt: skip
