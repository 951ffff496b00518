"""Per-image cost of the face engine, stage by stage, beside raw onnxruntime inference.

Usage::

    python bench/engine.py [--repeat 5] [--models fr_feature,mobilefacenet] [--faces ../shared/faces]
                           [--results bench/RESULTS.md] [--json PATH]

One process, one onnxruntime intra-op thread (``KYC_INTRA_OP_THREADS=1`` unless set), the photos
of ``../shared/faces``. For each image and repetition it times:

* ``decode``: header checks, full decode, EXIF, downscale to the working size;
* ``detect``: YuNet on the working image, decoding and NMS;
* ``align``: quality gates and the similarity warp of every face;
* ``embed``: one batched call of the embedding model for all usable faces;
* ``liveness``: the selfie path's liveness score of every usable face (context crop + network);
* ``get_faces``: the public call end to end (default quality level, no liveness);
* ``raw detect``, ``raw embed``, ``raw liveness``: ``session.run`` alone on the same tensors;
  ``raw model`` = raw detect + raw embed, the floor ``get_faces`` is measured against.

Each embedding model in ``--models`` is timed in the same run, the default first; ``per face``
rows divide by the faces embedded.
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

from bench.results import command_line  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.engine import KYCDeepFace  # noqa: E402

STAGES = ("decode", "detect", "align", "embed", "liveness", "get_faces", "raw detect", "raw embed", "raw liveness")
DERIVED = ("raw model",)


def time_image(engine: KYCDeepFace, data: bytes) -> tuple[dict[str, float], int]:
    """The engine's own steps, timed one by one, then the public call, then the raw networks."""
    t0 = time.perf_counter()
    image = engine.decode(data)
    t1 = time.perf_counter()
    detection = engine.detect(image)
    t2 = time.perf_counter()
    found, aligned = engine.align_faces(
        image, detection, gate=engine.settings.quality_gate(engine.settings.quality_default)
    )
    t3 = time.perf_counter()
    batch = np.stack([a for _, a in aligned]) if aligned else np.zeros((0, 112, 112, 3), np.uint8)
    engine.embedder.embed(batch)
    t4 = time.perf_counter()
    boxes = [found[i].box * image.scale for i, _ in aligned]
    live = engine.liveness
    if live is not None:
        for box in boxes:
            live.score(image.working, box)
    t5 = time.perf_counter()
    engine.get_faces(data)
    t6 = time.perf_counter()
    blob = engine.embedder.preprocess(batch) if aligned else None
    crops = [live.preprocess(image.working, box) for box in boxes] if live is not None else []
    t7 = time.perf_counter()
    engine.detector.infer(image.working)
    t8 = time.perf_counter()
    if blob is not None:
        engine.embedder.infer(blob)
    t9 = time.perf_counter()
    if live is not None:
        for crop in crops:
            live.infer(crop)
    t10 = time.perf_counter()
    times = {
        "decode": t1 - t0, "detect": t2 - t1, "align": t3 - t2, "embed": t4 - t3, "liveness": t5 - t4,
        "get_faces": t6 - t5, "raw detect": t8 - t7, "raw embed": t9 - t8, "raw liveness": t10 - t9,
    }  # fmt: skip
    return times, len(aligned)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", default="fr_feature,mobilefacenet", help="embedding models, comma-separated")
    parser.add_argument("--results", type=Path)
    parser.add_argument("--json", type=Path, help="write the per-stage samples' summary as JSON here")
    parser.add_argument(
        "--phone", type=int, default=8, help="also time N photos upscaled to a 12 MP phone size (0: skip)"
    )
    args = parser.parse_args()

    engines = {}
    for model in args.models.split(","):
        engines[model] = KYCDeepFace(settings=Settings().model_copy(update={"embedding_model": model.strip()}))
        engines[model].warm_up()
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
    # The JSON keeps the default model's sets where `python -m bench` reads them, the others apart.
    measured: dict[str, dict[str, object]] = {}
    others: dict[str, dict[str, dict[str, object]]] = {}
    first = next(iter(engines))
    for model, engine in engines.items():
        for name, blobs in sets.items():
            for data in blobs:  # warm every input shape once (onnxruntime plans per shape)
                engine.get_faces(data)
            samples: dict[str, list[float]] = {k: [] for k in (*STAGES, *DERIVED)}
            faces = 0
            wall0 = time.perf_counter()
            for _ in range(args.repeat):
                for data in blobs:
                    t, n = time_image(engine, data)
                    faces += n
                    for k in STAGES:
                        samples[k].append(t[k])
                    samples["raw model"].append(t["raw detect"] + t["raw embed"])
            wall = time.perf_counter() - wall0
            floor_mean = statistics.fmean(samples["raw model"])
            rows = [
                f"`{engine.model_id}`, {name}: {len(blobs)} images x {args.repeat}, {faces} faces embedded "
                f"({wall:.1f} s wall)",
                "",
                "| stage | median ms | p95 ms | mean ms | images/s (1 core) | x raw model |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for k in (*STAGES, *DERIVED):
                mean = statistics.fmean(samples[k])
                rows.append(
                    f"| {k} | {1000 * pct(samples[k], 50):.2f} | {1000 * pct(samples[k], 95):.2f} | "
                    f"{1000 * mean:.2f} | {1 / mean:.1f} | {mean / floor_mean:.2f} |"
                )
            per_face = {k: sum(samples[k]) / max(faces, 1) for k in ("embed", "raw embed", "liveness", "raw liveness")}
            rows.append(
                "| per face: embed / raw embed / liveness / raw liveness | "
                + " / ".join(f"{1000 * v:.2f}" for v in per_face.values())
                + " ms | | | | |"
            )
            tables.append("\n".join(rows))
            target = measured if model == first else others.setdefault(model, {})
            target[name] = {
                "images": len(blobs),
                "faces": faces,
                "repeat": args.repeat,
                "per_face_s": per_face,
                "stages": {
                    k: {"median_s": pct(v, 50), "p95_s": pct(v, 95), "mean_s": statistics.fmean(v)}
                    for k, v in samples.items()
                },
            }
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = (
        f"### Engine — {dt.date.today().isoformat()}\n\n"
        f"Command: `python bench/engine.py --repeat {args.repeat} --models {args.models}`; load average "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3]) if Path('/proc/loadavg').is_file() else 'n/a'} "
        f"at the end; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; one onnxruntime intra-op thread and one "
        f"OpenCV thread. Stages are timed one by one, then the public call (`get_faces`) on the same input; "
        f"`raw model` is session.run of the detector and the embedder on the same tensors. "
        f"Peak RSS {rss_mib:.0f} MiB.\n"
    )
    text = header + "\n" + "\n\n".join(tables) + "\n"
    if args.json:
        report = {
            "bench": "engine",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": command_line("bench/engine.py"),
            "peak_rss_mib": rss_mib,
            "sets": measured,
            "other_models": others,
        }
        args.json.write_text(json.dumps(report, indent=1))
    print(text)
    if args.results:
        with args.results.open("a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
