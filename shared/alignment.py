"""Face alignment: a similarity transform of the five landmarks onto the 112x112 ArcFace template."""

from __future__ import annotations

import cv2
import numpy as np

# The standard ArcFace template for 112x112 crops (eye, eye, nose, mouth corner, mouth corner).
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst (Umeyama)."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    var = (src_c**2).sum() / len(src)
    scale = float((s * d).sum() / var) if var > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def warp_scale(landmarks: np.ndarray, size: tuple[int, int] = (112, 112)) -> float:
    """Output pixels per image pixel of the alignment warp for these landmarks."""
    template = TEMPLATE_112 * np.array([size[0] / 112.0, size[1] / 112.0], dtype=np.float32)
    matrix = similarity_transform(landmarks, template)
    return float(np.hypot(matrix[0, 0], matrix[0, 1]))


def align(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Warp the face with these landmarks (image pixels) to an aligned crop of ``size`` (w, h).

    A face more than twice the crop's size is first shrunk by an integer factor with area
    averaging (OpenCV's fast path), over just the region the crop covers: a bilinear warp straight
    from a 4000x3000 photo would alias, and area-resizing the whole photo would waste time.
    """
    template = TEMPLATE_112 * np.array([size[0] / 112.0, size[1] / 112.0], dtype=np.float32)
    matrix = similarity_transform(landmarks, template)
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    factor = int(1.0 / scale) if scale > 0 else 1
    if factor >= 2:
        # The source region the output covers: the output corners mapped back, plus a margin.
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0, 1], [size[0], 0, 1], [0, size[1], 1], [size[0], size[1], 1]], np.float64)
        src = corners @ inverse.T
        h, w = image.shape[:2]
        x0 = max(0, int(src[:, 0].min()) - 2 * factor)
        y0 = max(0, int(src[:, 1].min()) - 2 * factor)
        x1 = min(w, int(src[:, 0].max()) + 2 * factor)
        y1 = min(h, int(src[:, 1].max()) + 2 * factor)
        # Whole multiples of the factor keep the shrink on OpenCV's integer fast path.
        x1 = x0 + max(factor, (x1 - x0) // factor * factor)
        y1 = y0 + max(factor, (y1 - y0) // factor * factor)
        crop = image[y0:y1, x0:x1]
        if crop.shape[0] >= factor and crop.shape[1] >= factor:
            small = cv2.resize(crop, (crop.shape[1] // factor, crop.shape[0] // factor), interpolation=cv2.INTER_AREA)
            moved = (landmarks - np.array([x0, y0], dtype=np.float32)) / factor
            # Pixel centres: area averaging maps source pixel p to (p + 0.5) / k - 0.5.
            moved += 0.5 / factor - 0.5
            image = small
            matrix = similarity_transform(moved, template)
    return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
