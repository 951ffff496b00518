"""Faces per embedder call: what a batch costs or saves per face, by model and onnxruntime threads.

Usage::

    python bench/embed_batch.py [--models fr_feature,mobilefacenet] [--threads 1,2]
        [--sizes 1,2,4,8,16,32] [--repeat 5] [--results bench/RESULTS.md]

Two tables, each against a baseline measured in the same run:

* the embedder alone (``session.run`` on preprocessed 112x112 crops), per face, for each batch
  size, against a batch of one: CPU time on one thread (what a worker process with one thread
  pays), wall time on several (what the threads buy);
* ``describe_many`` of 8 photos of ``../shared/faces`` on one thread, with 1 and 32 faces per
  embedder call, against ``get_faces`` one image at a time, CPU ms per image.

Medians of ``--repeat`` passes, taken in turns so that a slow moment of the machine touches every
column alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.results import command_line, machine, write_section  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.engine import KYCDeepFace  # noqa: E402

FACES_DIR = ROOT.parent / "shared" / "faces"
FACES = 64  # crops per pass: every batch size divides it


def per_face(engine: KYCDeepFace, sizes: list[int], repeat: int, clock: str) -> dict[int, float]:
    """Median ms per face of the embedder's session alone, per batch size."""
    embedder = engine.embedder
    crops = np.random.default_rng(0).integers(0, 255, (FACES, 112, 112, 3), dtype=np.uint8)
    blobs = {n: embedder.preprocess(crops[:n]) for n in sizes}
    for blob in blobs.values():
        embedder.infer(blob)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    passes: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(repeat):
        for n, blob in blobs.items():
            start = timer()
            for _ in range(FACES // n):
                embedder.infer(blob)
            passes[n].append(1000 * (timer() - start) / FACES)
    return {n: statistics.median(v) for n, v in passes.items()}


def describe_rows(settings: Settings, repeat: int) -> dict[str, float]:
    """CPU ms per image: get_faces one at a time, describe_many of 8 at 1 and 32 faces per call."""
    photos = sorted(p for p in FACES_DIR.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    images = [p.read_bytes() for p in photos]
    engines = {b: KYCDeepFace(settings=settings.model_copy(update={"ort_batch_faces_max": b})) for b in (1, 32)}
    for engine in engines.values():
        for data in images:
            engine.get_faces(data)
    got: dict[str, list[float]] = {"get_faces, one image at a time": [], "describe_many of 8, 1 face per call": [],
                                   "describe_many of 8, 32 faces per call": []}  # fmt: skip
    for _ in range(repeat):
        start = time.process_time()
        for data in images:
            engines[1].get_faces(data)
        got["get_faces, one image at a time"].append(1000 * (time.process_time() - start) / len(images))
        for b, engine in engines.items():
            start = time.process_time()
            for i in range(0, len(images), 8):
                engine.describe_many([(data, None, False) for data in images[i : i + 8]])
            label = f"describe_many of 8, {b} face{'s' * (b > 1)} per call"
            got[label].append(1000 * (time.process_time() - start) / len(images))
    return {k: statistics.median(v) for k, v in got.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="fr_feature,mobilefacenet")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--sizes", default="1,2,4,8,16,32")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    if any(FACES % n for n in sizes):
        parser.error(f"every size must divide {FACES}")
    lines = ["| model | threads | clock | " + " | ".join(f"{n} per call" for n in sizes) + " |",
             "|---|---:|---|" + "---:|" * len(sizes)]  # fmt: skip
    for model in args.models.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            engine = KYCDeepFace(settings=Settings(embedding_model=model, intra_op_threads=threads))
            clock = "cpu" if threads == 1 else "wall"
            got = per_face(engine, sizes, args.repeat, clock)
            cells = [f"{got[n]:.2f} ms ({got[n] / got[sizes[0]]:.2f}x)" for n in sizes]
            lines.append(f"| {engine.embedder.model_id} | {threads} | {clock} | " + " | ".join(cells) + " |")
    rows = describe_rows(Settings(intra_op_threads=1), args.repeat)
    base = rows["get_faces, one image at a time"]
    lines += ["", "| fr_feature, 1 thread, photos of ../shared/faces | CPU ms per image | x one at a time |",
              "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {label} | {ms:.2f} | {ms / base:.2f} |" for label, ms in rows.items()]
    text = (
        f"`{command_line('bench/embed_batch.py')}` on {machine()}; load average "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} at the end. Per face, median of "
        f"{args.repeat} passes of {FACES} crops; in brackets, against one face per call.\n\n" + "\n".join(lines)
    )
    print(text)
    if args.results:
        write_section(args.results, "Faces per embedder call", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
