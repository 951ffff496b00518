"""Which way up is the face? Turning a working copy, mapping its faces back, judging the evidence.

A phone photo of an identity card carries no EXIF orientation worth trusting: the card lies on a
table at 0, 90, 180 or 270 degrees, and tilted between. YuNet finds upright faces, and faces
tilted up to about 45 degrees (17 of 20 LFW faces at 45, 10 of 20 at 60: measured by turning LFW
photos), but it mostly misses faces on their side, and it *does* find many upside-down faces, with
five landmarks laid out as if upright (eyes at the top, where the chin is) and a lower score.
So the landmarks alone cannot tell upside down from upright; the score can: on LFW photos, 95 % of
upright faces score above 0.914 and 95 % of upside-down ones below 0.880 (200 faces, shrunk to
125 px). A face is *settled* upright when its score clears :data:`shared.config.Settings`'
``orientation_min_score`` and its landmarks point up; otherwise the other turns are tried and
the evidence (the portrait's detection score) decides.

Faces found on a turned copy are mapped back to the image as given: boxes, landmarks and the
reviewer page stay in the original image's pixels, and the similarity alignment undoes the turn
(it maps the landmarks, whatever their rotation, onto the upright template).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from shared.models import Detection

# Degrees clockwise by which a face may lie in the image; the copy is turned back by as much.
QUARTER_TURNS = (0, 180, 90, 270)  # 180 first: the turn a detected-but-wrong face most often needs
DIAGONALS = (45, 315, 135, 225)  # tried only when no quarter turn gives a usable face
# Landmarks pointing further than this from "up" say the face is not upright.
MAX_UPRIGHT_ROLL_DEG = 50.0
# A portrait on a card tilted further than this from the turn it was found at is detected again
# on a copy turned by the card's tilt. YuNet's landmarks lag a tilted face's roll badly (on card
# photos tilted 12-28 degrees they often read within 2 degrees of upright), so the alignment from
# them is off, and the roll they give cannot say by how much: the card's straight edges can.
REFINE_TILT_DEG = 5.0
# The edge directions around the portrait must peak this far above their mean to count.
_MIN_EDGE_PEAK = 2.0


def relative_roll(landmarks: np.ndarray, degrees: float) -> float:
    """:func:`roll` once the image is turned back by ``degrees``, in (-180, 180]."""
    return (roll(landmarks) - degrees + 180.0) % 360.0 - 180.0


def roll(landmarks: np.ndarray) -> float:
    """Degrees clockwise from upright that the face's landmarks point, in (-180, 180].

    "Up" is from the mouth's midpoint to the eyes' midpoint (eyes above nose above mouth).
    """
    eyes = (landmarks[0] + landmarks[1]) / 2.0
    mouth = (landmarks[3] + landmarks[4]) / 2.0
    up = eyes - mouth
    # Image y points down: upright "up" is (0, -1); a face turned clockwise has up pointing right.
    return float(math.degrees(math.atan2(float(up[0]), float(-up[1]))))


def is_upright(landmarks: np.ndarray, degrees: float = 0) -> bool:
    """Eyes above the nose above the mouth, within :data:`MAX_UPRIGHT_ROLL_DEG`, once the image
    is turned back by ``degrees`` (the landmarks are in the image's own pixels)."""
    return abs(relative_roll(landmarks, degrees)) <= MAX_UPRIGHT_ROLL_DEG


def implied_turn(landmarks: np.ndarray) -> int:
    """The quarter turn (0, 90, 180, 270) nearest to what the landmarks' roll says."""
    return round(roll(landmarks) / 90.0) % 4 * 90


def edge_tilt(grey: np.ndarray) -> float | None:
    """Degrees clockwise, in [-45, 45), by which the strongest straight edges of ``grey`` lean
    from the image's axes; None when no direction stands out.

    Around a card's portrait these are the portrait window's sides, the card's own edges and its
    text lines, all square to the portrait: the card's tilt modulo 90 degrees. Only the strongest
    tenth of the gradients vote (skin and hair texture point every way).
    """
    # Smoothed first: on a staircase edge 3x3 gradients snap towards 0 and 45 degrees.
    smooth_grey = cv2.GaussianBlur(grey, (0, 0), 1.5)
    gx = cv2.Sobel(smooth_grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth_grey, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)
    strong = magnitude > np.percentile(magnitude, 90)
    if not strong.any():
        return None
    # Image y points down, so a clockwise lean shows as a positive gradient angle.
    angles = np.degrees(np.arctan2(gy[strong], gx[strong])) % 90.0
    votes = np.bincount(angles.astype(np.int64) % 90, weights=magnitude[strong], minlength=90)
    smooth = np.convolve(np.concatenate([votes[-2:], votes, votes[:2]]), np.ones(5), mode="valid")
    peak = int(np.argmax(smooth))
    if smooth[peak] < _MIN_EDGE_PEAK * smooth.mean():
        return None
    lean = peak + 0.5
    return lean if lean < 45.0 else lean - 90.0


def nearest_turn(lean: float, degrees: float) -> float:
    """The angle congruent to ``lean`` modulo 90 that is nearest to ``degrees``."""
    return degrees + (lean - degrees + 45.0) % 90.0 - 45.0


def turn(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` turned counter-clockwise by ``degrees`` (undoing a face lying ``degrees``
    clockwise), and the 2x3 affine map from the turned copy's pixels back to ``image``'s.

    Quarter turns are exact array rotations; other angles are warped onto a canvas large enough
    to hold the whole image (the corners are filled with the image's mean colour, which the
    detector reads as background).
    """
    h, w = image.shape[:2]
    degrees %= 360
    if degrees == 0:
        return image, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    if degrees % 90 == 0:
        k = int(degrees) // 90  # np.rot90 turns counter-clockwise k times
        turned = np.ascontiguousarray(np.rot90(image, k))
        # Where each turned pixel (x', y') came from in the original.
        back = {
            1: [[0.0, -1.0, w - 1.0], [1.0, 0.0, 0.0]],
            2: [[-1.0, 0.0, w - 1.0], [0.0, -1.0, h - 1.0]],
            3: [[0.0, 1.0, 0.0], [-1.0, 0.0, h - 1.0]],
        }[k]
        return turned, np.array(back)
    rad = math.radians(degrees)
    c, s = abs(math.cos(rad)), abs(math.sin(rad))
    nw, nh = math.ceil(w * c + h * s), math.ceil(w * s + h * c)
    forward = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(degrees), 1.0)
    forward[0, 2] += (nw - w) / 2.0
    forward[1, 2] += (nh - h) / 2.0
    fill = tuple(float(v) for v in cv2.mean(image)[:3])
    turned = cv2.warpAffine(image, forward, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=fill)
    return turned, cv2.invertAffineTransform(forward)


def mapped_back(detection: Detection, back: np.ndarray) -> Detection:
    """A detection on a turned copy, in the coordinates of the image it was turned from.

    Landmarks keep their meaning (right eye stays first); boxes become the axis-aligned box of
    the turned box's corners (exact for quarter turns).
    """
    if len(detection) == 0:
        return detection
    linear, shift = back[:, :2].astype(np.float32), back[:, 2].astype(np.float32)
    marks = detection.landmarks @ linear.T + shift
    x1, y1, x2, y2 = (detection.boxes[:, i] for i in range(4))
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x2, y2], 1), np.stack([x1, y2], 1)], 1)
    moved = corners @ linear.T + shift
    boxes = np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)
    return Detection(boxes.astype(np.float32), detection.scores, marks.astype(np.float32))
