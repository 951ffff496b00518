"""A reviewer page picture of a large stored image is made from a bounded working copy, never
the full-size pixels: measured in a fresh process as the API would serve it (the stored image
at the 50 MP pixel limit), both pictures of one case, and the boxes and crop land where the
result says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from api_stub import crops
from bench.review_memory import build, face_in_the_middle
from shared.config import Settings
from tests.conftest import ROOT

PIXELS = 50_000_000
BOUND_MB = 120  # the full-size decode alone is 143 MB; the old path peaked at 295


@pytest.mark.slow
def test_a_picture_of_a_50_mp_image_stays_under_its_bound(tmp_path: Path) -> None:
    stored = tmp_path / "selfie.jpg"
    stored.write_bytes(build("jpeg", PIXELS))
    cmd = [sys.executable, str(ROOT / "bench" / "review_memory.py"), "--measure", str(stored)]
    row = json.loads(
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout.splitlines()[-1]
    )
    assert row["pixels"] > 0.99 * PIXELS and row["boxed_bytes"] > 0 and row["aligned_bytes"] > 0, row
    assert row["peak_mb"] - row["before_mb"] < BOUND_MB, row


def test_boxes_and_crops_land_on_the_face_of_the_working_copy() -> None:
    """A white square face on grey, 4000 px wide: its box drawn on the 720 px picture sits on
    the square, and the crop cut from the 1600 px working copy is the square's inside."""
    image = np.full((3000, 4000, 3), 90, np.uint8)
    result = face_in_the_middle(4000, 3000)
    face = result["selfie"]["faces"][0]  # type: ignore[index]
    box = face["box"]
    image[int(box["y1"]) : int(box["y2"]), int(box["x1"]) : int(box["x2"])] = 255
    ok, png = cv2.imencode(".png", image)
    assert ok
    settings = Settings()
    boxed = cv2.imdecode(np.frombuffer(crops.boxed(settings, png.tobytes(), result, "selfie", 720), np.uint8), 1)
    assert max(boxed.shape[:2]) == 720
    scale = 720 / 4000
    x1, y1 = round(box["x1"] * scale), round(box["y1"] * scale)
    assert tuple(int(c) for c in boxed[y1, x1 + 5]) == pytest.approx(crops.MATCHED, abs=40)  # the box top edge
    aligned = cv2.imdecode(np.frombuffer(crops.aligned(settings, png.tobytes(), face, 224), np.uint8), 1)
    assert aligned.shape == (224, 224, 3) and aligned[112, 112].mean() > 230  # the face's inside
