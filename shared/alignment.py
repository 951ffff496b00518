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


def align(image: np.ndarray, landmarks: np.ndarray, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Warp the face with these landmarks (image pixels) to an aligned crop of ``size`` (w, h).

    A face much larger than the crop is first shrunk with area averaging around its landmarks;
    a bilinear warp straight from a 4000x3000 photo would alias badly.
    """
    template = TEMPLATE_112 * np.array([size[0] / 112.0, size[1] / 112.0], dtype=np.float32)
    matrix = similarity_transform(landmarks, template)
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    if scale < 0.5:
        # Crop a generous square around the landmarks, shrink it to about 2x the output scale.
        centre = landmarks.mean(axis=0)
        half = 1.5 * max(size) / scale
        h, w = image.shape[:2]
        x0, y0 = max(0, int(centre[0] - half)), max(0, int(centre[1] - half))
        x1, y1 = min(w, int(centre[0] + half) + 1), min(h, int(centre[1] + half) + 1)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            factor = 2.0 * scale
            crop = image[y0:y1, x0:x1]
            out_size = (max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor)))
            small = cv2.resize(crop, out_size, interpolation=cv2.INTER_AREA)
            fx, fy = out_size[0] / (x1 - x0), out_size[1] / (y1 - y0)
            moved = (landmarks - np.array([x0, y0], dtype=np.float32)) * np.array([fx, fy], dtype=np.float32)
            image = small
            matrix = similarity_transform(moved, template)
    return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
