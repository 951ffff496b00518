"""Synthetic phone photos of ID-1 identity cards, for the document tests and ``bench/documents.py``.

A portrait photo is printed on a card of ID-1 proportions (85.60 x 53.98 mm) with the clutter of a
real one: a guilloche-like background, field labels and values, two MRZ-like lines, a smaller ghost
image of the same portrait, and a hologram sheen or glare. The card is then "photographed": put on
a table at a random place and size, tilted in plane, seen in perspective, under uneven light,
blurred, noised and JPEG-compressed at a phone's resolution (up to 12 MP), with no EXIF. A share of
the photos is turned by 90, 180 or 270 degrees as a phone held sideways (or a card lying upside
down) leaves them when no EXIF orientation says which way is up.

Everything is drawn with OpenCV and numpy and decided by one random generator seeded from
``(seed, index)``, so a card set is reproducible from its seed alone.

It is one generator's look: the engine must not be fitted to it (cards made elsewhere, of people
not in ``lfw-calib``, are the check that counts).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

Style = Literal["colour", "grey", "faded"]
STYLES: tuple[Style, ...] = ("colour", "grey", "faded")
ROTATIONS = (0, 90, 180, 270)
# Phone photo sizes (landscape; a portrait-held phone swaps them): 12 MP down to 1.2 MP.
RESOLUTIONS = ((4032, 3024), (3264, 2448), (2592, 1944), (1920, 1440), (1280, 960))

_CARD_W, _CARD_H = 1284, 810  # the card as printed: 15 px per mm
_PORTRAIT = (60, 170, 360, 560)  # x1, y1, x2, y2 on the card
_GHOST = (1020, 330, 1160, 512)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class CardSpec:
    """How one card photo is made: everything random about it, drawn from ``(seed, index)``."""

    seed: int
    index: int
    style: Style
    rotation: int  # 0, 90, 180 or 270: degrees the finished photo is turned clockwise
    tilt: float  # in-plane tilt of the card on the table, degrees (counter-clockwise positive)
    resolution: tuple[int, int]  # (width, height) of the photo before ``rotation``
    card_fraction: float  # card width / photo width
    glare_on_portrait: bool

    @classmethod
    def draw(cls, seed: int, index: int) -> CardSpec:
        """The spec of card ``index`` of the set ``seed``.

        A quarter of the cards at each of 0, 90, 180 and 270 degrees; half the cards within 5
        degrees of straight, a quarter tilted 5-20 degrees and a quarter 20-45 degrees; styles
        colour, grey and faded in proportion 2 : 2 : 1.
        """
        rng = np.random.default_rng([seed, index, 0])
        style: Style = ("colour", "colour", "grey", "grey", "faded")[int(rng.integers(5))]
        band = rng.random()
        magnitude = rng.uniform(0, 5) if band < 0.5 else rng.uniform(5, 20) if band < 0.75 else rng.uniform(20, 45)
        width, height = RESOLUTIONS[int(rng.integers(len(RESOLUTIONS)))]
        if rng.random() < 0.3:
            width, height = height, width
        return cls(
            seed=seed,
            index=index,
            style=style,
            rotation=ROTATIONS[int(rng.integers(4))],
            tilt=float(magnitude * rng.choice([-1.0, 1.0])),
            resolution=(width, height),
            card_fraction=float(rng.uniform(0.55, 0.85)),
            glare_on_portrait=bool(rng.random() < 0.1),
        )

    def replace(self, **changes: Any) -> CardSpec:
        """The same card with some fields changed (a test's upright twin of a turned card)."""
        return dataclasses.replace(self, **changes)


def _portrait_crop(photo: np.ndarray) -> np.ndarray:
    """The head-and-shoulders part of a photo, at the portrait window's 3:4 aspect ratio."""
    h, w = photo.shape[:2]
    # LFW's 250x250 frames centre the face at about a third of the frame's width.
    cw = int(w * 0.62)
    ch = min(h, int(cw * 4 / 3))
    x0, y0 = (w - cw) // 2, max(0, (h - ch) // 2)
    return photo[y0 : y0 + ch, x0 : x0 + cw]


def _styled(portrait: np.ndarray, style: Style, rng: np.random.Generator) -> np.ndarray:
    if style == "colour":
        return portrait
    grey = cv2.cvtColor(portrait, cv2.COLOR_BGR2GRAY)
    if style == "grey":
        # Laser engraving: monochrome, a little harder than the photo.
        gain = rng.uniform(1.0, 1.25)
        grey = np.clip((grey.astype(np.float32) - 128) * gain + 128, 0, 255).astype(np.uint8)
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    # Faded: contrast lost towards the card's paper, a warm cast, half of them also monochrome.
    base = portrait if rng.random() < 0.5 else cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    keep = rng.uniform(0.45, 0.7)
    paper = np.array([rng.uniform(200, 225), rng.uniform(215, 235), rng.uniform(225, 245)], np.float32)
    faded = base.astype(np.float32) * keep + paper * (1 - keep)
    return np.clip(faded, 0, 255).astype(np.uint8)


def _background(rng: np.random.Generator) -> np.ndarray:
    """Pale card stock with a guilloche of interfering sine curves (uint8)."""
    tint = np.array([rng.uniform(200, 245), rng.uniform(200, 245), rng.uniform(200, 245)], np.float32)
    card = np.empty((_CARD_H, _CARD_W, 3), np.float32)
    card[:] = tint
    yy, xx = np.mgrid[0:_CARD_H, 0:_CARD_W].astype(np.float32)
    f1, f2 = rng.uniform(0.02, 0.06, 2)
    wave = np.sin(xx * f1 + 8 * np.sin(yy * f2)) * np.sin(yy * f1 * 0.7 + 6 * np.cos(xx * f2))
    shade = np.array([rng.uniform(-30, 0), rng.uniform(-30, 0), rng.uniform(-30, 0)], np.float32)
    card += (wave[..., None] > 0.6) * shade
    return np.clip(card, 0, 255).astype(np.uint8)


def _text(card: np.ndarray, rng: np.random.Generator) -> None:
    colour = (60, 40, 30)
    cv2.putText(card, "IDENTITY CARD", (60, 110), cv2.FONT_HERSHEY_DUPLEX, 1.8, (90, 60, 40), 3, cv2.LINE_AA)
    labels = ("SURNAME", "GIVEN NAMES", "DATE OF BIRTH", "NATIONALITY", "DOCUMENT NO", "EXPIRY")
    for row, label in enumerate(labels):
        y = 200 + row * 62
        cv2.putText(card, label, (400, y), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (110, 90, 80), 1, cv2.LINE_AA)
        value = "".join(rng.choice(list(_LETTERS + "0123456789 "), int(rng.integers(6, 16))))
        cv2.putText(card, value, (400, y + 30), cv2.FONT_HERSHEY_SIMPLEX, 0.95, colour, 2, cv2.LINE_AA)
    for line in range(2):
        mrz = "".join(rng.choice(list(_LETTERS + "0123456789<<<<<<"), 36))
        cv2.putText(card, mrz, (40, 690 + line * 60), cv2.FONT_HERSHEY_PLAIN, 2.9, (30, 30, 30), 2, cv2.LINE_AA)


def _paste(card: np.ndarray, image: np.ndarray, window: tuple[int, int, int, int], opacity: float) -> None:
    x1, y1, x2, y2 = window
    fitted = cv2.resize(image, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA).astype(np.float32)
    card[y1:y2, x1:x2] = card[y1:y2, x1:x2] * (1 - opacity) + fitted * opacity


def _sheen(card: np.ndarray, rng: np.random.Generator, over_portrait: bool) -> None:
    """A rainbow hologram band, and a specular glare spot (on the portrait for some cards)."""
    yy, xx = np.mgrid[0:_CARD_H, 0:_CARD_W].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(60, 140)
    rainbow = np.stack([np.sin(phase), np.sin(phase + 2.1), np.sin(phase + 4.2)], axis=-1)
    cx, cy = rng.uniform(200, _CARD_W - 200), rng.uniform(150, _CARD_H - 150)
    band = np.exp(-(((xx - cx) / 260) ** 2 + ((yy - cy) / 180) ** 2))[..., None]
    card += rainbow * band * rng.uniform(10, 28)
    if over_portrait:
        x1, y1, x2, y2 = _PORTRAIT
        gx, gy = rng.uniform(x1 + 60, x2 - 60), rng.uniform(y1 + 80, y2 - 120)
        radius, strength = rng.uniform(40, 80), rng.uniform(60, 150)
    else:
        gx, gy = rng.uniform(450, _CARD_W - 100), rng.uniform(100, _CARD_H - 100)
        radius, strength = rng.uniform(60, 140), rng.uniform(120, 220)
    spot = np.exp(-(((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * radius**2)))[..., None]
    card += spot * strength


def print_card(portrait_photo: np.ndarray, spec: CardSpec) -> np.ndarray:
    """The card itself, flat and upright: BGR uint8, ``_CARD_W`` x ``_CARD_H``."""
    rng = np.random.default_rng([spec.seed, spec.index, 1])
    stock = _background(rng)
    _text(stock, rng)  # OpenCV's anti-aliased text wants 8-bit pixels
    card = stock.astype(np.float32)
    portrait = _styled(_portrait_crop(portrait_photo), spec.style, rng)
    _paste(card, portrait, _PORTRAIT, 1.0)
    ghost = cv2.cvtColor(cv2.cvtColor(portrait, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    _paste(card, ghost, _GHOST, rng.uniform(0.35, 0.6))
    _sheen(card, rng, spec.glare_on_portrait)
    return np.clip(card, 0, 255).astype(np.uint8)


def _table(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A table top: a flat colour with coarse grain (wood or cloth), drawn small and upscaled."""
    w, h = size
    base = np.array([rng.uniform(40, 200), rng.uniform(40, 200), rng.uniform(40, 200)], np.float32)
    coarse = rng.normal(0, rng.uniform(4, 14), (h // 16 + 1, w // 16 + 1, 1)).astype(np.float32)
    small = np.clip(base + coarse, 0, 255).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def photograph(card: np.ndarray, spec: CardSpec) -> np.ndarray:
    """The card on a table, as a phone sees it: BGR uint8 at ``spec.resolution`` (then turned)."""
    rng = np.random.default_rng([spec.seed, spec.index, 2])
    w, h = spec.resolution
    photo = _table((w, h), rng)
    # Size the card so that, tilted, it still fits the frame with a margin.
    theta = np.radians(spec.tilt)
    c, s = abs(np.cos(theta)), abs(np.sin(theta))
    aspect = _CARD_H / _CARD_W
    cw = spec.card_fraction * w
    fit = min(0.92 * w / (cw * (c + s * aspect)), 0.92 * h / (cw * (s + c * aspect)), 1.0)
    cw *= fit
    ch = cw * aspect
    span_x = cw * (c + s * aspect) / 2
    span_y = cw * (s + c * aspect) / 2
    cx = rng.uniform(span_x + 0.04 * w, w - span_x - 0.04 * w) if w - 2 * span_x > 0.08 * w else w / 2
    cy = rng.uniform(span_y + 0.04 * h, h - span_y - 0.04 * h) if h - 2 * span_y > 0.08 * h else h / 2
    corners = np.array([[-cw / 2, -ch / 2], [cw / 2, -ch / 2], [cw / 2, ch / 2], [-cw / 2, ch / 2]])
    # Counter-clockwise on screen (y points down): the rotation by -theta in image coordinates.
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    placed = corners @ rot.T + [cx, cy]
    # Perspective: each corner moved by up to 5 % of the card's width (a phone not quite overhead).
    placed += rng.uniform(-0.05, 0.05, (4, 2)) * cw
    src = np.array([[0, 0], [_CARD_W, 0], [_CARD_W, _CARD_H], [0, _CARD_H]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, placed.astype(np.float32))
    cv2.warpPerspective(card, matrix, (w, h), dst=photo, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
    # Focus blur, relative to the card's size in the frame.
    sigma = rng.uniform(0.2, 1.6) * cw / 1500
    if sigma > 0.3:
        photo = cv2.GaussianBlur(photo, (0, 0), sigma)
    # Uneven light (a linear ramp across the frame and a soft vignette), smooth enough to be
    # drawn at 1/16 scale, and sensor noise.
    yy, xx = np.mgrid[0 : h // 16 + 1, 0 : w // 16 + 1].astype(np.float32)
    xx, yy = xx / (w / 16) - 0.5, yy / (h / 16) - 0.5
    ramp_angle = rng.uniform(0, 2 * np.pi)
    ramp = (xx * np.cos(ramp_angle) + yy * np.sin(ramp_angle)) * rng.uniform(0.1, 0.5)
    vignette = 1 - rng.uniform(0.05, 0.25) * (xx**2 + yy**2) * 2
    gain = cv2.resize((1 + ramp) * vignette, (w, h), interpolation=cv2.INTER_LINEAR)
    noise = rng.standard_normal((h, w), dtype=np.float32) * np.float32(rng.uniform(1.5, 6.0))
    # Per channel, saturating to 8 bits in OpenCV: numpy's float copies of a 12 MP frame cost
    # seconds per card.
    channels = [cv2.add(cv2.multiply(c, gain, dtype=cv2.CV_8U), noise, dtype=cv2.CV_8U) for c in cv2.split(photo)]
    out = cv2.merge(channels)
    turned = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    return cv2.rotate(out, turned[spec.rotation]) if spec.rotation else out


def card_photo(portrait_photo: np.ndarray, spec: CardSpec) -> bytes:
    """The JPEG (no EXIF) of a phone photo of a card whose portrait is ``portrait_photo`` (BGR)."""
    rng = np.random.default_rng([spec.seed, spec.index, 3])
    photo = photograph(print_card(portrait_photo, spec), spec)
    ok, encoded = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))])
    if not ok:
        raise ValueError("could not encode the card photo")
    return bytes(encoded.tobytes())
