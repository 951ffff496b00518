"""Peak memory of one reviewer-page picture request on a large stored image.

Usage::

    python bench/review_memory.py [--pixels 50000000] [--json PATH]

The reviewer page (``api_stub/review.py``) draws the face boxes on a stored image and cuts the
aligned crop from it inside the API process. Each case (a baseline JPEG, a grey+alpha PNG, at
``--pixels``) is handled in a fresh process: both pictures of one case, ``crops.boxed`` at the
page's 720 px and ``crops.aligned`` at 224 px, from a result whose face sits in the middle. The
table gives the peak RSS above the same process before the request, and bytes per stored pixel.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.decode_bounds import CASES, _dims, encode, peak_rss_mb, photo_rgb  # noqa: E402

DISPLAY_PX, CROP_PX = 720, 224


def build(case: str, pixels: int) -> bytes:
    if case == "jpeg":
        return encode(photo_rgb(_dims(pixels)), "JPEG", quality=90)
    return CASES["png_grey_alpha"][1](pixels)


def face_in_the_middle(width: int, height: int) -> dict[str, object]:
    """A verify result's selfie face: a box and landmarks a tenth of the image wide, centred."""
    cx, cy, s = width / 2, height / 2, width / 20
    landmarks = {
        "right_eye": [cx - 0.35 * s, cy - 0.3 * s], "left_eye": [cx + 0.35 * s, cy - 0.3 * s],
        "nose": [cx, cy], "mouth_right": [cx - 0.3 * s, cy + 0.4 * s], "mouth_left": [cx + 0.3 * s, cy + 0.4 * s],
    }  # fmt: skip
    face = {"box": {"x1": cx - s, "y1": cy - s, "x2": cx + s, "y2": cy + s}, "landmarks": landmarks}
    return {"selfie_face": 0, "selfie": {"faces": [face], "partial_faces": []}}


def measure(path: Path) -> dict[str, object]:
    """Both pictures of one stored image, in this process: peak RSS before and after."""
    from PIL import Image

    from api_stub import crops
    from shared.config import Settings

    settings = Settings()
    data = path.read_bytes()
    with Image.open(path) as im:
        width, height = im.size
    result = face_in_the_middle(width, height)
    before = peak_rss_mb()
    start = time.perf_counter()
    boxed = crops.boxed(settings, data, result, "selfie", DISPLAY_PX)
    face = result["selfie"]["faces"][0]  # type: ignore[index]
    aligned = crops.aligned(settings, data, face, CROP_PX)
    seconds = time.perf_counter() - start
    return {"pixels": width * height, "before_mb": before, "peak_mb": peak_rss_mb(), "seconds": seconds,
            "boxed_bytes": len(boxed), "aligned_bytes": len(aligned)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixels", type=int, default=50_000_000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child: one stored image
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in ("jpeg", "png_grey_alpha"):
            file = Path(tmp) / case
            file.write_bytes(build(case, args.pixels))
            out = subprocess.run([sys.executable, __file__, "--measure", str(file)], check=True,
                                 capture_output=True, text=True).stdout  # fmt: skip
            rows.append({"case": case, "mb": file.stat().st_size / 1e6, **json.loads(out.splitlines()[-1])})
    print(f"\nReviewer pictures (boxed {DISPLAY_PX} px and aligned {CROP_PX} px) of one image at {args.pixels:,} px\n")
    print("| stored image | file MB | time s | peak RSS above the process MB | B per stored pixel |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        above = float(r["peak_mb"]) - float(r["before_mb"])
        print(
            f"| {r['case']} | {r['mb']:.1f} | {r['seconds']:.2f} | {above:.0f} | {above * 2**20 / int(r['pixels']):.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
