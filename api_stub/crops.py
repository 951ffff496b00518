"""The reviewer page's pictures: an image with its face boxes, and a face's aligned crop.

Made per request from the stored image's bytes and the boxes and landmarks of the job's result,
and never kept: the API loads no model, and this module (OpenCV) only once a picture is asked for.
The image is decoded the way the worker decoded it (bounded, EXIF upright), so the result's
coordinates land where they were measured; the crop is the engine's own similarity warp.

Only a working copy is kept: at most ``longest_px`` on its longest side (``WORKING_PX`` for a
crop), never the stored image's full size (a large JPEG is decoded at a reduced DCT scale, any
other format by the bounded decoder and dropped once shrunk), and one decode at a time per API
process, so a burst of reviewers costs one decoder's bound, not one per request.
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np
from fastapi import HTTPException, status

from shared import alignment, imaging
from shared.config import Settings
from shared.errors import KYCFaceError

LANDMARKS = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")
MATCHED, OTHER, PARTIAL = (0, 170, 0), (0, 170, 255), (0, 0, 220)  # BGR
# The longest side a crop is cut from: a face a reviewer must judge keeps ~1/5 of a 50 MP
# photo's resolution, a selfie or a card scan all of it.
WORKING_PX = 1600
_ONE_DECODE = threading.Semaphore(1)


def _decode(settings: Settings, data: bytes, longest_px: int) -> tuple[np.ndarray, float]:
    """The image at most ``longest_px`` on its longest side, and its scale (pixels per original)."""
    try:
        with _ONE_DECODE:
            decoded = imaging.decode(data, settings, settings.min_image_size_px, (longest_px, longest_px))
    except KYCFaceError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image not decodable: {exc.message}") from None
    return decoded.working, decoded.scale


def _scaled(points: np.ndarray, scale: float) -> np.ndarray:
    """Original-pixel coordinates on a copy ``scale`` times the size (pixel centres)."""
    return points if scale == 1.0 else (points + 0.5) * scale - 0.5


def _jpeg(pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, "could not encode the image")
    return bytes(encoded.tobytes())


def boxed(settings: Settings, data: bytes, result: dict[str, Any], role: str, longest_px: int) -> bytes:
    """The image of ``role`` as JPEG, at most ``longest_px`` on its longest side, with every face
    box: the compared face green, other faces amber, partial faces red."""
    pixels, scale = _decode(settings, data, longest_px)
    out = pixels.copy()  # the working copy may be the decoded image itself: never draw on that
    image = result.get(role) or {}
    matched = result.get(f"{role}_face")
    faces = image.get("faces") or []
    boxes = [(f["box"], MATCHED if i == matched else OTHER) for i, f in enumerate(faces)]
    boxes += [(p["box"], PARTIAL) for p in image.get("partial_faces") or []]
    thickness = max(2, round(max(out.shape[:2]) / 250))
    for box, colour in boxes:
        corners = np.array([[box["x1"], box["y1"]], [box["x2"], box["y2"]]], np.float32)
        (x1, y1), (x2, y2) = _scaled(corners, scale).round().astype(int).tolist()
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
    return _jpeg(out)


def aligned(settings: Settings, data: bytes, face: dict[str, Any], size_px: int) -> bytes:
    """The face's 112 px aligned crop (what the embedder saw), shown at ``size_px``, as JPEG."""
    pixels, scale = _decode(settings, data, WORKING_PX)
    points = np.array([face["landmarks"][name] for name in LANDMARKS], dtype=np.float32)
    crop = alignment.align(pixels, _scaled(points, scale))
    return _jpeg(cv2.resize(crop, (size_px, size_px), interpolation=cv2.INTER_CUBIC))
