"""Per-image cost of the face engine, stage by stage, beside raw onnxruntime inference.

Usage::

    python bench/engine.py [--repeat 5] [--models fr_feature,mobilefacenet] [--faces ../shared/faces]
                           [--rewrite on,off] [--results bench/RESULTS.md] [--json PATH]

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

Each embedding model in ``--models`` is timed in the same run, the default first, once with the
exact PRelu rewrite (``KYC_ORT_EXACT_REWRITE``, shared/models/graph_rewrite.py) and once without
(``--rewrite``), the variants taking turns repetition by repetition; ``per face`` rows divide by
the faces embedded.

A verify job (a selfie against a document photo of the same person, pairs from the labels) is
timed stage by stage too: ``decode``, ``detect``, ``align`` (the warp), ``quality`` (geometry and
appearance of every face), ``embed`` (both images' calls), ``liveness`` (the selfie's faces), then
``verify``: ``selfie_faces`` + ``document_faces`` + ``decide``, end to end, as the job runs them.
The summary compares each model without the rewrite and with it: ms per face of each network,
``get_faces`` and the verify job, with ratios.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
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
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import command_line  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.engine import KYCDeepFace  # noqa: E402
from shared.imaging import reduction_for  # noqa: E402
from shared.quality import Appearance, Geometry  # noqa: E402
from shared.verification import decide  # noqa: E402

STAGES = ("decode", "detect", "align", "embed", "liveness", "get_faces", "raw detect", "raw embed", "raw liveness")
DERIVED = ("raw model",)
VERIFY_STAGES = ("decode", "detect", "align", "quality", "embed", "liveness", "verify")


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


def time_verify(engine: KYCDeepFace, selfie: bytes, document: bytes) -> dict[str, float]:
    """A verify job's stages one by one (selfie and document summed), then the job end to end."""
    times = dict.fromkeys(VERIFY_STAGES, 0.0)
    settings = engine.settings
    for data, level in ((selfie, settings.quality_selfie), (document, settings.quality_document)):
        t0 = time.perf_counter()
        image = engine.decode(data)
        t1 = time.perf_counter()
        detection = engine.detect(image)
        t2 = time.perf_counter()
        gate = settings.quality_gate(level)
        found, aligned = engine.align_faces(image, detection, gate=gate)
        t3 = time.perf_counter()
        # align_faces measures quality as it warps; measured again here to split it out.
        for i in range(len(detection)):
            Geometry.measure(detection.boxes[i], detection.landmarks[i], image.size, settings.crop_tolerance)
        for _, face in aligned:
            Appearance.measure(face)
        t4 = time.perf_counter()
        engine.embed([a for _, a in aligned])
        t5 = time.perf_counter()
        if data is selfie and engine.liveness is not None:
            for i, _ in aligned:
                engine.liveness.score(image.working, found[i].box * image.scale)
        t6 = time.perf_counter()
        quality = t4 - t3
        for k, v in (("decode", t1 - t0), ("detect", t2 - t1), ("align", t3 - t2 - quality), ("quality", quality)):
            times[k] += v
        times["embed"] += t5 - t4
        times["liveness"] += t6 - t5
    t7 = time.perf_counter()
    decide(engine.selfie_faces(selfie), engine.document_faces(document), engine.compare, engine.enforced_liveness)
    times["verify"] = time.perf_counter() - t7
    return times


def verify_pairs(faces_dir: Path, phone: int) -> dict[str, list[tuple[bytes, bytes]]]:
    """Selfie/document pairs of one person each (consecutive one-face photos of an identity), as
    they are and, for up to ``phone`` pairs, with the selfie upscaled to a 12 MP phone photo."""
    with (faces_dir / "labels.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["faces_expected"] == "1"]
    by_identity: dict[str, list[Path]] = {}
    for r in rows:
        by_identity.setdefault(r["identity"], []).append(faces_dir / r["file"])
    pairs = [(a, b) for files in by_identity.values() for a, b in zip(files[::2], files[1::2], strict=False)]
    as_they_are = [(a.read_bytes(), b.read_bytes()) for a, b in pairs]
    sets = {f"verify, {len(pairs)} pairs as they are": as_they_are}
    if phone:
        big = [(phone_size(a), b.read_bytes()) for a, b in pairs[:phone] if a.suffix == ".jpg"]
        sets[f"verify, {len(big)} pairs, selfie upscaled to 4000 px"] = [(s, d) for s, d in big if s]
    return sets


def phone_size(path: Path) -> bytes:
    """The photo upscaled to 4000 px on its long side, JPEG quality 92 (b"" if it does not read)."""
    image = cv2.imread(str(path))
    if image is None:
        return b""
    factor = 4000 / max(image.shape[:2])
    big = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
    return cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def half_size_detection(engine: KYCDeepFace, images: list[bytes], repeat: int) -> str:
    """The candidate lever not taken: YuNet on the working copy halved, against the working copy.

    Times both (the same images, taking turns) and how far the best face's landmarks move, in
    working-copy pixels, as a share of that face's box side.
    """
    full_s: list[float] = []
    half_s: list[float] = []
    shift: list[float] = []
    found = 0
    for data in images:
        work = engine.decode(data).working
        half = cv2.resize(work, (work.shape[1] // 2, work.shape[0] // 2), interpolation=cv2.INTER_AREA)
        engine.detector.detect(work)
        engine.detector.detect(half)
        for _ in range(repeat):
            t0 = time.perf_counter()
            a = engine.detector.detect(work)
            t1 = time.perf_counter()
            b = engine.detector.detect(half)
            full_s.append(t1 - t0)
            half_s.append(time.perf_counter() - t1)
        if len(a) and len(b):
            found += 1
            side = float(min(a.boxes[0, 2] - a.boxes[0, 0], a.boxes[0, 3] - a.boxes[0, 1]))
            moved = np.linalg.norm(b.landmarks[0] * (work.shape[1] / half.shape[1]) - a.landmarks[0], axis=1)
            shift.append(float(moved.max()) / side)
    return (
        f"Detection at half the working size (a candidate lever, not taken): {len(images)} verify images x "
        f"{repeat}; YuNet on the working copy {1000 * statistics.fmean(full_s):.2f} ms, on it halved "
        f"{1000 * statistics.fmean(half_s):.2f} ms ({statistics.fmean(full_s) / statistics.fmean(half_s):.1f}x); "
        f"a face found by both in {found}; the best face's farthest landmark moves by "
        f"{pct(shift, 50):.1%} of its box side at the median, {pct(shift, 95):.1%} at p95, {max(shift):.1%} at most."
    )


def per_call_table(engines: dict[tuple[str, bool], KYCDeepFace], images: list[bytes], repeat: int) -> str:
    """The embedder's ``session.run`` alone on the set's aligned faces, ms per face at 1 and 8 faces
    per call, each variant in turn (CPU time: what a one-thread worker process pays)."""
    any_engine = next(iter(engines.values()))
    crops = []
    for data in images:
        image = any_engine.decode(data)
        crops += [face for _, face in any_engine.align_faces(image, any_engine.detect(image), embed_partial=True)[1]]
    crops = crops[: len(crops) // 8 * 8]
    faces = np.stack(crops)
    samples: dict[tuple[tuple[str, bool], int], list[float]] = {}
    for engine in engines.values():
        engine.embedder.infer(engine.embedder.preprocess(faces[:8]))
    for _ in range(repeat):
        for variant, engine in engines.items():
            blob = engine.embedder.preprocess(faces)
            for n in (1, 8):
                start = time.process_time()
                for i in range(0, len(blob), n):
                    engine.embedder.infer(blob[i : i + n])
                samples.setdefault((variant, n), []).append((time.process_time() - start) / len(blob))
    rows = [
        f"The embedder's session.run alone, {len(faces)} aligned faces of the set x {repeat}, CPU ms per face "
        "(median of passes):",
        "",
        "| model | faces per call | rewrite off | rewrite on | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for model in dict.fromkeys(m for m, _ in engines):
        for n in (1, 8):
            off, on = samples.get(((model, False), n)), samples.get(((model, True), n))
            if off and on:
                a, b = statistics.median(off), statistics.median(on)
                rows.append(f"| {model} | {n} | {1000 * a:.2f} | {1000 * b:.2f} | {a / b:.2f}x |")
    return "\n".join(rows)


def decode_floor(engine: KYCDeepFace, images: list[bytes], repeat: int) -> str:
    """The candidate lever of a coarser DCT-domain decode: the JPEG decode at the scale the engine
    picks (twice the working size), at the scale holding the working size once, and at 1/8 (the
    coarsest libjpeg offers), on the same files. What 1/8 still costs is the entropy decoding."""
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
    flags[8] = cv2.IMREAD_REDUCED_COLOR_8
    max_w, max_h = engine.max_image_size
    spent = {"2x working size (the engine)": 0.0, "1x working size": 0.0, "1/8": 0.0}
    jpegs = [d for d in images if d[:2] == b"\xff\xd8"]
    for data in jpegs:
        arr = np.frombuffer(data, np.uint8)
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
        scale = min(1.0, max_w / w, max_h / h)
        for name, r in zip(spent, (reduction_for(2.0 * scale), reduction_for(scale), 8), strict=True):
            cv2.imdecode(arr, flags[r])
            t0 = time.perf_counter()
            for _ in range(repeat):
                cv2.imdecode(arr, flags[r])
            spent[name] += (time.perf_counter() - t0) / repeat
    cells = ", ".join(f"{k} {1000 * v / max(len(jpegs), 1):.2f} ms" for k, v in spent.items())
    return f"JPEG decode alone (a candidate lever), {len(jpegs)} JPEGs x {repeat}, mean per image: {cells}."


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def stage_table(title: str, samples: dict[str, list[float]], faces: int) -> str:
    """One variant's per-image stages against the raw model."""
    floor_mean = statistics.fmean(samples["raw model"])
    rows = [
        title,
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
    rows.append(
        "| per face: embed / raw embed / liveness / raw liveness | "
        + " / ".join(f"{1000 * v:.2f}" for v in per_face(samples, faces).values())
        + " ms | | | | |"
    )
    return "\n".join(rows)


def per_face(samples: dict[str, list[float]], faces: int) -> dict[str, float]:
    return {k: sum(samples[k]) / max(faces, 1) for k in ("embed", "raw embed", "liveness", "raw liveness")}


def verify_table(title: str, by_variant: dict[str, dict[str, list[float]]]) -> str:
    """A verify job's stages, per variant side by side, with each stage's share of the job."""
    names = list(by_variant)
    head = " | ".join(f"{n} mean ms | {n} median ms" for n in names)
    rows = [title, "", f"| stage | {head} | share of verify ({names[-1]}) |", "|---|" + "---:|" * (2 * len(names) + 1)]
    last = by_variant[names[-1]]
    for k in VERIFY_STAGES:
        cells = " | ".join(
            f"{1000 * statistics.fmean(v[k]):.2f} | {1000 * pct(v[k], 50):.2f}" for v in by_variant.values()
        )
        rows.append(f"| {k} | {cells} | {statistics.fmean(last[k]) / statistics.fmean(last['verify']):.0%} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", default="fr_feature,mobilefacenet", help="embedding models, comma-separated")
    parser.add_argument(
        "--rewrite", default="on,off", help="the exact PRelu rewrite: on, off or both (on,off), each timed"
    )
    parser.add_argument("--results", type=Path)
    parser.add_argument("--json", type=Path, help="write the per-stage samples' summary as JSON here")
    parser.add_argument(
        "--phone", type=int, default=8, help="also time N photos upscaled to a 12 MP phone size (0: skip)"
    )
    args = parser.parse_args()

    rewrites = [r.strip() == "on" for r in args.rewrite.split(",")]
    # A variant is a model with the rewrite on or off; "off" is timed first in each repetition.
    engines: dict[tuple[str, bool], KYCDeepFace] = {}
    load_s: dict[tuple[str, bool], float] = {}
    for model in (m.strip() for m in args.models.split(",")):
        for on in sorted(rewrites):
            t0 = time.perf_counter()
            engine = KYCDeepFace(
                settings=Settings().model_copy(update={"embedding_model": model, "ort_exact_rewrite": on})
            )
            load_s[(model, on)] = time.perf_counter() - t0
            engine.warm_up()
            engines[(model, on)] = engine
    files = sorted(p for p in args.faces.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    sets = {"../shared/faces as they are": [p.read_bytes() for p in files]}
    if args.phone:
        # Selfies arrive at 4000x3000; the set's photos are 0.1-3.6 MP. Upscaled copies cost what a
        # phone photo costs to decode (the pixels, not the detail, set the decode time).
        phone = [b for b in (phone_size(p) for p in [f for f in files if f.suffix == ".jpg"][: args.phone]) if b]
        sets[f"{len(phone)} photos upscaled to 4000 px (phone size)"] = phone

    def label(variant: tuple[str, bool]) -> str:
        return f"`{engines[variant].model_id}`, rewrite {'on' if variant[1] else 'off'}"

    tables = []
    image_samples: dict[str, dict[tuple[str, bool], dict[str, list[float]]]] = {}
    image_faces: dict[str, dict[tuple[str, bool], int]] = {}
    for name, blobs in sets.items():
        for engine in engines.values():
            for data in blobs:  # warm every input shape once (onnxruntime plans per shape)
                engine.get_faces(data)
        samples: dict[tuple[str, bool], dict[str, list[float]]] = {
            v: {k: [] for k in (*STAGES, *DERIVED)} for v in engines
        }
        faces = dict.fromkeys(engines, 0)
        for _ in range(args.repeat):
            for variant, engine in engines.items():
                for data in blobs:
                    t, n = time_image(engine, data)
                    faces[variant] += n
                    for k in STAGES:
                        samples[variant][k].append(t[k])
                    samples[variant]["raw model"].append(t["raw detect"] + t["raw embed"])
        image_samples[name], image_faces[name] = samples, faces
        for variant in engines:
            title = f"{label(variant)}, {name}: {len(blobs)} images x {args.repeat}, {faces[variant]} faces embedded"
            tables.append(stage_table(title, samples[variant], faces[variant]))

    verify_samples: dict[str, dict[tuple[str, bool], dict[str, list[float]]]] = {}
    for name, pairs in verify_pairs(args.faces, args.phone).items():
        for engine in engines.values():
            for selfie, document in pairs:
                time_verify(engine, selfie, document)
        vs: dict[tuple[str, bool], dict[str, list[float]]] = {v: {k: [] for k in VERIFY_STAGES} for v in engines}
        for _ in range(args.repeat):
            for variant, engine in engines.items():
                for selfie, document in pairs:
                    for k, elapsed in time_verify(engine, selfie, document).items():
                        vs[variant][k].append(elapsed)
        verify_samples[name] = vs
        for model in dict.fromkeys(m for m, _ in engines):
            mine = {f"rewrite {'on' if on else 'off'}": vs[(m, on)] for m, on in engines if m == model}
            tables.append(verify_table(f"`{model}`, {name} x {args.repeat} (ms per job)", mine))

    first_on = next((v for v in engines if v[1]), next(iter(engines)))
    verify_images = [x for pairs in verify_pairs(args.faces, args.phone).values() for pair in pairs for x in pair]
    tables.append(half_size_detection(engines[first_on], verify_images, args.repeat))
    for name, blobs in sets.items():
        tables.append(f"{name}: " + decode_floor(engines[first_on], blobs, args.repeat))
    if len(rewrites) == 2:
        tables.insert(0, per_call_table(engines, sets["../shared/faces as they are"], args.repeat))

    summary = []
    if len(rewrites) == 2:
        summary = [
            "Without the rewrite -> with it (means; x = speed-up):",
            "",
            "| model | set | raw embed ms/face | raw liveness ms/face | get_faces ms/image | verify ms/job | load s |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]

        def cell(off: float, on: float) -> str:
            return f"{1000 * off:.2f} -> {1000 * on:.2f} ({off / on:.2f}x)"

        for model in dict.fromkeys(m for m, _ in engines):
            off, on = (model, False), (model, True)
            for (name, samples), (vname, vs) in zip(image_samples.items(), verify_samples.items(), strict=False):
                pf_off = per_face(samples[off], image_faces[name][off])
                pf_on = per_face(samples[on], image_faces[name][on])
                g_off, g_on = statistics.fmean(samples[off]["get_faces"]), statistics.fmean(samples[on]["get_faces"])
                v_off, v_on = statistics.fmean(vs[off]["verify"]), statistics.fmean(vs[on]["verify"])
                summary.append(
                    f"| {model} | {name}; {vname} | {cell(pf_off['raw embed'], pf_on['raw embed'])} | "
                    f"{cell(pf_off['raw liveness'], pf_on['raw liveness'])} | {cell(g_off, g_on)} | "
                    f"{cell(v_off, v_on)} | {load_s[off]:.2f} -> {load_s[on]:.2f} |"
                )
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = (
        f"### Engine — {dt.date.today().isoformat()}\n\n"
        f"Command: `{command_line('bench/engine.py')}`; load average "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3]) if Path('/proc/loadavg').is_file() else 'n/a'} "
        f"at the end; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; one onnxruntime intra-op thread and one "
        f"OpenCV thread. Stages are timed one by one, then the public call (`get_faces`) on the same input; "
        f"`raw model` is session.run of the detector and the embedder on the same tensors. "
        f"Peak RSS {rss_mib:.0f} MiB.\n"
    )
    text = header + "\n" + "\n\n".join(["\n".join(summary), *tables] if summary else tables) + "\n"
    if args.json:
        # The default model with the default setting where `python -m bench` reads it, the rest apart.
        first = first_on

        def summarise(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
            return {
                k: {"median_s": pct(v, 50), "p95_s": pct(v, 95), "mean_s": statistics.fmean(v)}
                for k, v in samples.items()
            }

        def sets_of(variant: tuple[str, bool]) -> dict[str, object]:
            return {
                name: {
                    "images": len(sets[name]),
                    "faces": image_faces[name][variant],
                    "repeat": args.repeat,
                    "per_face_s": per_face(samples[variant], image_faces[name][variant]),
                    "stages": summarise(samples[variant]),
                }
                for name, samples in image_samples.items()
            }

        def key(variant: tuple[str, bool]) -> str:
            return f"{variant[0]}, rewrite {'on' if variant[1] else 'off'}"

        report = {
            "bench": "engine",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": command_line("bench/engine.py"),
            "peak_rss_mib": rss_mib,
            "sets": sets_of(first),
            "other_models": {key(v): sets_of(v) for v in engines if v != first},
            "verify": {name: {key(v): summarise(vs[v]) for v in engines} for name, vs in verify_samples.items()},
            "load_s": {key(v): t for v, t in load_s.items()},
        }
        args.json.write_text(json.dumps(report, indent=1))
    print(text)
    if args.results:
        with args.results.open("a") as fh:
            fh.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
