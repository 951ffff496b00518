"""Per-image cost of the face engine, stage by stage, beside raw onnxruntime inference.

Usage::

    python bench/engine.py [--repeat 5] [--faces ../shared/faces] [--results bench/RESULTS.md] [--json PATH]

One process, one onnxruntime intra-op thread (``KYC_INTRA_OP_THREADS=1`` unless set), the photos
of ``../shared/faces``. For each image and repetition it times:

* ``decode``: header checks, full decode, EXIF, downscale to the working size;
* ``detect``: YuNet on the working image, decoding and NMS;
* ``align``: quality gates and the similarity warp of every face;
* ``embed``: one batched MobileFaceNet call for all usable faces;
* ``get_faces``: the public call end to end (includes building the result document);
* ``raw model``: ``session.run`` of the detector on the same padded working image plus the embedder
  on the same batch: the floor the engine is measured against (ratio = get_faces / raw model).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KYC_INTRA_OP_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.config import Settings  # noqa: E402
from shared.engine import KYCDeepFace  # noqa: E402

STAGES = ("decode", "detect", "align", "embed", "get_faces", "raw model")


def time_image(engine: KYCDeepFace, data: bytes) -> dict[str, float]:
    """The engine's own steps, timed one by one, then the public call, then the raw networks."""
    t0 = time.perf_counter()
    image = engine.decode(data)
    t1 = time.perf_counter()
    detection = engine.detect(image)
    t2 = time.perf_counter()
    _, aligned = engine.align_faces(image, detection)
    t3 = time.perf_counter()
    batch = np.stack([a for _, a in aligned]) if aligned else np.zeros((0, 112, 112, 3), np.uint8)
    engine.embedder.embed(batch)
    t4 = time.perf_counter()
    engine.get_faces(data)
    t5 = time.perf_counter()
    blob = engine.embedder.preprocess(batch) if aligned else None
    t6 = time.perf_counter()
    engine.detector.infer(image.working)
    if blob is not None:
        engine.embedder.infer(blob)
    t7 = time.perf_counter()
    return {
        "decode": t1 - t0, "detect": t2 - t1, "align": t3 - t2, "embed": t4 - t3, "get_faces": t5 - t4,
        "raw model": t7 - t6,
    }  # fmt: skip


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--json", type=Path, help="write the per-stage samples' summary as JSON here")
    parser.add_argument(
        "--phone", type=int, default=8, help="also time N photos upscaled to a 12 MP phone size (0: skip)"
    )
    args = parser.parse_args()

    engine = KYCDeepFace(settings=Settings())
    engine.warm_up()
    files = sorted(p for p in args.faces.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    sets = {"../shared/faces as they are": [p.read_bytes() for p in files]}
    if args.phone:
        # Selfies arrive at 4000x3000; the set's photos are 0.1-3.6 MP. Upscaled copies cost what a
        # phone photo costs to decode (the pixels, not the detail, set the decode time).
        phone = []
        for p in [f for f in files if f.suffix == ".jpg"][: args.phone]:
            image = cv2.imread(str(p))
            if image is None:
                continue
            factor = 4000 / max(image.shape[:2])
            big = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
            phone.append(cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
        sets[f"{len(phone)} photos upscaled to 4000 px (phone size)"] = phone
    tables = []
    measured: dict[str, dict[str, object]] = {}
    for name, blobs in sets.items():
        for data in blobs:  # warm every input shape once (onnxruntime plans per shape)
            engine.get_faces(data)
        samples: dict[str, list[float]] = {k: [] for k in STAGES}
        wall0 = time.perf_counter()
        for _ in range(args.repeat):
            for data in blobs:
                t = time_image(engine, data)
                for k in STAGES:
                    samples[k].append(t[k])
        wall = time.perf_counter() - wall0
        floor_mean = statistics.fmean(samples["raw model"])
        rows = [
            f"{name}: {len(blobs)} images x {args.repeat} ({wall:.1f} s wall)",
            "",
            "| stage | median ms | p95 ms | mean ms | images/s (1 core) | x raw model |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for k in STAGES:
            mean = statistics.fmean(samples[k])
            rows.append(
                f"| {k} | {1000 * pct(samples[k], 50):.2f} | {1000 * pct(samples[k], 95):.2f} | {1000 * mean:.2f} | "
                f"{1 / mean:.1f} | {mean / floor_mean:.2f} |"
            )
        tables.append("\n".join(rows))
        measured[name] = {
            "images": len(blobs),
            "repeat": args.repeat,
            "stages": {
                k: {"median_s": pct(v, 50), "p95_s": pct(v, 95), "mean_s": statistics.fmean(v)}
                for k, v in samples.items()
            },
        }
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = (
        f"### Engine — {dt.date.today().isoformat()}\n\n"
        f"Command: `python bench/engine.py --repeat {args.repeat}`; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; one onnxruntime intra-op thread and one "
        f"OpenCV thread. Stages are timed one by one, then the public call (`get_faces`) on the same input; "
        f"`raw model` is session.run of both networks on the same tensors. Peak RSS {rss_mib:.0f} MiB.\n"
    )
    text = header + "\n" + "\n\n".join(tables) + "\n"
    if args.json:
        report = {
            "bench": "engine",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": "python bench/engine.py " + " ".join(sys.argv[1:]),
            "peak_rss_mib": rss_mib,
            "sets": measured,
        }
        args.json.write_text(json.dumps(report, indent=1))
    print(text)
    if args.results:
        with args.results.open("a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
