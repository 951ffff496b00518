"""The engine's tuning knobs, measured: working image size, onnxruntime threads.

Usage::

    python bench/tuning.py [--faces ../shared/faces] [--repeat 3] [--sizes 320,400,500,640,800] [--json PATH]

One process; every figure is measured in this run on the photos of ``../shared/faces``.

* Working image size (``max_image_size``, the detector's input): ``get_faces`` time per image on
  one onnxruntime thread, and the faces found against ``labels.csv``, on three sets: the photos as
  they are, the same photos upscaled to a 4000 px phone frame (detection cost and recall do not
  change much: the faces are big), and "far" copies where the photo fills a sixth of a
  4000 x 3000 frame (a selfie taken from arm's length in a large scene, a document photographed on
  a table): their faces are small in the frame, so a small working image loses them.
* onnxruntime intra-op threads (``KYC_INTRA_OP_THREADS``): single-image latency with 1 and 2
  threads. For throughput see ``bench/pipeline.py`` (processes beat threads).

Faces per embedder call are measured by ``bench/embed_batch.py``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import command_line  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.engine import KYCDeepFace  # noqa: E402
from shared.schemas import FacesResult  # noqa: E402

PHONE_PX = 4000
FAR_FRACTION = 6  # the photo spans 1/6 of the frame's width


def load_sets(faces_dir: Path) -> tuple[dict[str, list[bytes]], list[int]]:
    """The three image sets and the faces expected in each photo (from ``labels.csv``)."""
    with (faces_dir / "labels.csv").open() as fh:
        # "5+" (a crowd) means at least 5.
        labels = {row["file"]: int(row["faces_expected"].rstrip("+")) for row in csv.DictReader(fh)}
    files = [faces_dir / name for name in sorted(labels) if (faces_dir / name).suffix.lower() in (".jpg", ".jpeg")]
    expected = [labels[p.name] for p in files]
    as_is, phone, far = [], [], []
    rng = np.random.default_rng(0)
    for p in files:
        data = p.read_bytes()
        as_is.append(data)
        image = cv2.imread(str(p))
        if image is None:
            raise SystemExit(f"cannot read {p}")
        h, w = image.shape[:2]
        factor = PHONE_PX / max(h, w)
        big = cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_LINEAR)
        phone.append(cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
        # A textured frame (not flat grey, which a detector finds trivially empty).
        frame: np.ndarray = cv2.GaussianBlur(rng.integers(60, 200, (3000, 4000, 3), dtype=np.uint8), (0, 0), 8)
        scale = (4000 / FAR_FRACTION) / w
        small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        top, left = (3000 - sh) // 2, (4000 - sw) // 2
        frame[top : top + sh, left : left + sw] = small[: 3000 - top, : 4000 - left]
        far.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
    sets = {"as they are": as_is, f"phone size ({PHONE_PX} px)": phone, f"far (photo = 1/{FAR_FRACTION} of frame)": far}
    return sets, expected


def time_set(engine: KYCDeepFace, blobs: list[bytes], expected: list[int], repeat: int) -> dict[str, float]:
    """``get_faces`` ms per image (median, p95, mean); photos whose expected faces were all found."""
    complete = usable = 0
    for data, want in zip(blobs, expected, strict=True):  # warm-up, and the recall count
        result = engine.get_faces(data)
        if isinstance(result, FacesResult):
            usable += len(result.faces)
            found = len(result.faces) + len(result.partial_faces)
            complete += want > 0 and found >= want
    times = []
    for _ in range(repeat):
        for data in blobs:
            start = time.perf_counter()
            engine.get_faces(data)
            times.append(time.perf_counter() - start)
    return {
        "median_ms": 1000 * statistics.median(times),
        "p95_ms": 1000 * float(np.percentile(times, 95)),
        "mean_ms": 1000 * statistics.fmean(times),
        "photos_complete": complete,
        "photos_with_faces": sum(1 for e in expected if e > 0),
        "faces_usable": usable,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="320,400,500,640,800", help="working image sizes (square) to try")
    parser.add_argument("--json", type=Path, help="write the measurements as JSON here")
    args = parser.parse_args()

    sets, expected = load_sets(args.faces)
    report: dict[str, Any] = {
        "bench": "tuning",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command_line("bench/tuning.py"),
        "load_1m": os.getloadavg()[0],
        "working_size": {},
        "threads": {},
    }
    print(f"load {report['load_1m']:.2f}; {len(expected)} photos\n")
    print("| max_image_size | set | median ms | p95 ms | mean ms | photos with every face found | usable faces |")
    print("|---:|---|---:|---:|---:|---|")
    for size in [int(s) for s in args.sizes.split(",")]:
        engine = KYCDeepFace(max_image_size=(size, size), settings=Settings(intra_op_threads=1))
        report["working_size"][size] = {}
        for name, blobs in sets.items():
            got = time_set(engine, blobs, expected, args.repeat)
            report["working_size"][size][name] = got
            print(
                f"| {size} | {name} | {got['median_ms']:.1f} | {got['p95_ms']:.1f} | {got['mean_ms']:.1f} | "
                f"{got['photos_complete']} / {got['photos_with_faces']} | {got['faces_usable']} |"
            )
    print("\n| onnxruntime threads (1 process) | set | median ms | p95 ms | mean ms |")
    print("|---:|---|---:|---:|---:|")
    for threads in (1, 2):
        engine = KYCDeepFace(settings=Settings(intra_op_threads=threads))
        report["threads"][threads] = {}
        for name, blobs in list(sets.items())[:2]:
            got = time_set(engine, blobs, expected, args.repeat)
            report["threads"][threads][name] = got
            print(f"| {threads} | {name} | {got['median_ms']:.1f} | {got['p95_ms']:.1f} | {got['mean_ms']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
