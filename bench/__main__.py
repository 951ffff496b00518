"""Every benchmark in one run, one table: ``python -m bench`` (or ``kycface bench``).

Usage::

    python -m bench [--only engine,pipeline,gallery] [--gallery-sizes 10000,100000] [--full-gallery]
        [--batch-sizes 1,8] [--providers CUDAExecutionProvider,CPUExecutionProvider]
        [--rounds 2] [--jobs 2000] [--repeat 3] [--results bench/RESULTS.md] [--json PATH]

Each benchmark runs as its own process (``bench/engine.py``, ``bench/pipeline.py`` and the gallery
search timing of ``bench/gallery.py``) and hands its measurements back as JSON; nothing is parsed
out of Markdown. The table gives, per stage, the median and p95 per image (per query for the
gallery), the rate, and the cost relative to a floor measured in the same run:

* engine and pipeline rows: the raw model (``session.run`` of the detector and the embedder on the
  same tensors, one thread), on the same photos of ``../shared/faces``. For throughput rows the
  cost per image is core-milliseconds (cores / images per second), so ``x raw model`` is how many
  times the raw inference the whole machine spends per image;
* gallery rows: numpy's float32 matrix product over the same gallery (the arithmetic floor of
  exact search), single queries.

``--results`` appends the table, with the machine, date and command, under "Runs of
``python -m bench``" in ``bench/RESULTS.md``, and lets ``bench/pipeline.py`` replace its own
"Pipeline" section there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results import baseline, command_line, machine

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ("engine", "pipeline", "gallery")
RUNS_HEADING = "## Runs of `python -m bench`"
ENGINE_SET = "../shared/faces as they are"


def run(args: list[str], label: str) -> None:
    """Run one benchmark process; its own progress goes to our stderr."""
    print(f"[bench] {label}: {shlex.join(args)}", file=sys.stderr, flush=True)
    subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def gallery_json(sizes: list[int], queries: int, path: Path) -> None:
    """Single-query top-10 search at each size: our index, numpy brute force, the matrix product.

    Runs in a child process (``python -m bench _gallery``): ``bench.gallery`` pins its process to
    one core and its libraries to one thread at import.
    """
    import numpy as np

    from bench import gallery as g

    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    population = g.FacePopulation.synthetic(128)
    out: dict[str, Any] = {"bench": "gallery", "cpu": cpu, "queries": queries, "sizes": {}}
    for size in sizes:
        work = g.Workload(population, size, queries)
        vectors, qs = work.gallery, work.queries
        numpy_brute = g.NumpyBrute(vectors)
        ours = g.Ours(vectors, None)
        per_size: dict[str, Any] = {}
        for name, method in (("numpy brute force", numpy_brute), ("ours", ours)):
            method.single(qs[0])
            times = []
            for q in qs:
                start = time.perf_counter()
                method.single(q)
                times.append(time.perf_counter() - start)
            per_size[name] = {
                "median_s": float(np.median(times)),
                "p95_s": float(np.percentile(times, 95)),
                "mean_s": float(np.mean(times)),
            }
        got = g.measure(ours, work, batches=2)
        per_size["ours"]["recall_at_10"] = got["recall_single"]
        per_size["ours"]["batch64_ms_per_query"] = got["batch_p50"]
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        product = []
        for q in qs.astype(np.float32):
            start = time.perf_counter()
            matrix @ q
            product.append(time.perf_counter() - start)
        per_size["matrix product"] = {"median_s": float(np.median(product))}
        out["sizes"][str(size)] = per_size
        del ours, numpy_brute, vectors, work
    path.write_text(json.dumps(out, indent=1))


def row(stage: str, median_s: float, p95_s: float | None, rate: float, ratio: float | None) -> str:
    p95 = f"{1000 * p95_s:.2f}" if p95_s is not None else "-"
    ratio_text = f"{ratio:.2f}" if ratio is not None else "-"
    return f"| {stage} | {1000 * median_s:.2f} | {p95} | {rate:,.1f} | {ratio_text} |"


def compose(results: dict[str, Any], cores: int) -> str:
    """The one table (Markdown), from the benchmarks' JSON."""
    lines = [
        "| stage | median ms / item | p95 ms / item | items/s | x floor |",
        "|---|---:|---:|---:|---:|",
    ]
    floor_s: float | None = None
    engine = results.get("engine")
    if engine:
        for set_name, measured in engine["sets"].items():
            stages = measured["stages"]
            floor = stages["raw model"]["mean_s"]
            if set_name == ENGINE_SET:
                floor_s = floor
            short = "engine" if set_name == ENGINE_SET else "engine, phone size"
            for stage, got in stages.items():
                lines.append(
                    row(f"{short}: {stage}", got["median_s"], got["p95_s"], 1 / got["mean_s"], got["mean_s"] / floor)
                )
    pipeline = results.get("pipeline")
    if pipeline:
        rounds = pipeline["rounds"]

        def throughput(label: str, rates: list[float]) -> None:
            rate = statistics.median(rates)
            core_s = cores / rate
            lines.append(row(label, core_s, None, rate, core_s / floor_s if floor_s else None))

        throughput(f"in-process engine, {cores} proc x 1 thread (core-ms)", [r["processes"] for r in rounds])
        throughput(f"in-process engine, 1 proc x {cores} threads (core-ms)", [r["threads"] for r in rounds])
        if all("processes s3" in r for r in rounds):
            throughput(
                f"in-process engine, {cores} proc x 1 thread, reading from S3 (core-ms)",
                [r["processes s3"] for r in rounds],
            )
        if all("runner" in r for r in rounds):
            throughput(
                f"in-process job runner, {cores} proc x 1 thread, no Celery (core-ms)", [r["runner"] for r in rounds]
            )
        for b in pipeline.get("batch_sizes", []):
            if b > 1:
                rates = [r[f"processes b={b}"] for r in rounds]
                throughput(f"in-process engine, {cores} proc x 1 thread, {b} images per call (core-ms)", rates)
        for store in pipeline["stores"]:
            runs = [r[store] for r in rounds]
            throughput(f"pipeline end to end, {store} (core-ms)", [x["images_per_s"] for x in runs])
            for key, label in (("fetch_s", "fetch"), ("compute_s", "compute"), ("write_s", "result write")):
                values = sorted(v for x in runs for v in x["stages_s"][key])
                if values:
                    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
                    mean = statistics.fmean(values)
                    lines.append(
                        row(
                            f"pipeline {store}: {label} (per job)",
                            statistics.median(values),
                            p95,
                            1 / mean,
                            mean / floor_s if floor_s else None,
                        )
                    )
        fixed = pipeline.get("fixed_cost")
        if fixed:  # CPU per job of every process, for jobs with next to no compute
            cpu_s = sum(fixed["cpu_ms_per_job"].values()) / 1000
            lines.append(
                row(
                    f"pipeline fixed cost per job, `match` jobs, {pipeline.get('fixed_cost_layout', 'prefork')} "
                    "(CPU ms, all processes)",
                    cpu_s,
                    None,
                    fixed["images_per_s"],
                    cpu_s / floor_s if floor_s else None,
                )
            )
    gallery = results.get("gallery")
    if gallery:
        for size, got in gallery["sizes"].items():
            # Medians: a single query takes well under a millisecond, and one stall skews a mean.
            floor = got["matrix product"]["median_s"]
            for name in ("ours", "numpy brute force"):
                g = got[name]
                lines.append(
                    row(
                        f"gallery top-10, N={int(size):,}, {name} (per query)",
                        g["median_s"],
                        g["p95_s"],
                        1 / g["mean_s"],
                        g["median_s"] / floor,
                    )
                )
    notes = []
    if pipeline:
        rounds = pipeline["rounds"]
        for store in pipeline["stores"]:
            ratios = [r[store]["images_per_s"] / baseline(r, store)[0] for r in rounds]
            steady = [r[store]["steady_images_per_s"] / baseline(r, store)[0] for r in rounds]
            notes.append(
                f"- pipeline ({store}) / in-process engine at the same parallelism ({cores} x 1 thread, run just "
                "before and after the layout): "
                f"{statistics.median(ratios):.2f} (rounds: {', '.join(f'{x:.2f}' for x in ratios)}); steady state "
                f"after the submit burst {statistics.median(steady):.2f}."
            )
            cpu = [sum(r[store]["cpu_ms_per_job"].values()) - baseline(r, store)[1] for r in rounds]
            notes.append(
                f"- CPU overhead per job ({store}): all processes' CPU per job minus the in-process engine's per "
                f"image, {statistics.median(cpu):.1f} ms (rounds: {', '.join(f'{x:.1f}' for x in cpu)})."
            )
            if store.startswith("s3") and all("processes s3" in r for r in rounds):
                same = [r[store]["images_per_s"] / r["processes s3"] for r in rounds]
                cpu_same = [sum(r[store]["cpu_ms_per_job"].values()) - r["processes_cpu_ms s3"] for r in rounds]
                notes.append(
                    f"- pipeline ({store}) / in-process engine reading the same S3 objects from the same server: "
                    f"{statistics.median(same):.2f} (rounds: {', '.join(f'{x:.2f}' for x in same)}); CPU overhead "
                    f"per job against it {statistics.median(cpu_same):.1f} ms."
                )
        mem = pipeline["worker_memory"]
        main = next((m for m in mem if m["process"] == "celery main"), None)
        children = [m for m in mem if m["process"] == "pool child"]
        solo = [m for m in mem if m["process"] == "solo worker"]
        if solo:
            notes.append(
                f"- worker memory: {len(solo)} solo workers, each peak RSS "
                f"{max(m.get('peak_rss_mib', 0.0) for m in solo):.0f} MiB, PSS "
                f"{max(m.get('pss_mib', 0.0) for m in solo):.0f} MiB."
            )
        if children and main is not None:
            child_pss = max(c.get("pss_mib", 0.0) for c in children)
            child_peak = max(c.get("peak_rss_mib", 0.0) for c in children)
            fit = int((2048 - main.get("pss_mib", 0.0)) // child_pss) if child_pss else 0
            by_rss = int((2048 - main.get("peak_rss_mib", 0.0)) // child_peak) if child_peak else 0
            notes.append(
                f"- worker memory: Celery main process RSS {main.get('rss_mib', 0):.0f} MiB (PSS "
                f"{main.get('pss_mib', 0):.0f}); each pool process (models loaded once, in the process) peak RSS "
                f"{child_peak:.0f} MiB, PSS {child_pss:.0f} MiB. In 2 GB: one Celery main and {fit} pool "
                f"processes by PSS ({by_rss} counting every process's full RSS, shared pages twice)."
            )
    if engine:
        notes.append(f"- engine bench peak RSS (one process, models loaded): {engine['peak_rss_mib']:.0f} MiB.")
    notes.append(
        "- item: an image (engine, pipeline) or a query (gallery). x floor: engine and pipeline rows against the raw model's mean per image on one thread "
        "(throughput rows in core-ms: cores / images per second); gallery rows: median against the median of "
        "numpy's float32 matrix product (gallery @ query) over the same gallery."
    )
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def append_run(path: Path, text: str) -> None:
    """Append one run under the runs heading, leaving every other section alone."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    if RUNS_HEADING not in old:
        old = old.rstrip("\n") + f"\n\n{RUNS_HEADING}\n\nEach entry: one `python -m bench`, newest last.\n"
    start = old.index(RUNS_HEADING)
    rest = old[start + len(RUNS_HEADING) :]
    following = rest.find("\n## ")
    end = start + len(RUNS_HEADING) + (following if following >= 0 else len(rest))
    path.write_text(old[:end].rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n" + old[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of: " + ", ".join(BENCHES))
    parser.add_argument("--gallery-sizes", default="10000,100000", help="gallery sizes to search")
    parser.add_argument("--full-gallery", action="store_true", help="also the 1,000,000-template gallery")
    parser.add_argument("--queries", type=int, default=200, help="gallery queries per size")
    parser.add_argument("--rounds", type=int, default=2, help="pipeline rounds (each: baselines and pipeline)")
    # A run's start and tail cost ~0.1 s whatever its length: 2,000 jobs per layout measure a
    # backlog's throughput, not that fixed cost (300 gave 0.91 where 3,000 gave 0.95).
    parser.add_argument("--jobs", type=int, default=2000, help="pipeline jobs per round, layout and store")
    parser.add_argument("--stores", default="file,s3", help="pipeline image stores")
    parser.add_argument("--batch-sizes", default="1,8", help="pipeline KYC_BATCH_SIZE values (batching off and on)")
    parser.add_argument("--pools", default="prefork,solo", help="pipeline worker layouts (see bench/pipeline.py)")
    parser.add_argument("--chunk-sizes", default="1,8", help="pipeline jobs per message (a backlog's chunks)")
    parser.add_argument("--providers", default="CPUExecutionProvider", help="KYC_ORT_PROVIDERS, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="engine repetitions over the photos")
    parser.add_argument("--results", type=Path, help="append the table to this Markdown file")
    parser.add_argument("--json", type=Path, help="write every benchmark's measurements here")
    args = parser.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(only) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if "pipeline" in only:  # checked here too: the pipeline runs after the engine's minutes
        from bench.pipeline import option_values, unknown_layout

        if wrong := unknown_layout(option_values(args.stores), option_values(args.pools)):
            parser.error(wrong)
    sizes = [int(s) for s in args.gallery_sizes.split(",") if s.strip()]
    if args.full_gallery and 1_000_000 not in sizes:
        sizes.append(1_000_000)

    py = sys.executable
    load_before = os.getloadavg()[0]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kyc-bench-") as tmp:
        out = {name: Path(tmp) / f"{name}.json" for name in BENCHES}
        commands = {
            "engine": [py, "bench/engine.py", "--repeat", str(args.repeat), "--json", str(out["engine"])],
            "pipeline": [
                *(py, "bench/pipeline.py", "--rounds", str(args.rounds), "--jobs", str(args.jobs)),
                *("--stores", args.stores, "--latency", "10", "--fixed-cost", "400", "--json", str(out["pipeline"])),
                *("--batch-sizes", args.batch_sizes, "--providers", args.providers, "--pools", args.pools),
                *("--chunk-sizes", args.chunk_sizes),
            ],
            "gallery": [
                py,
                "-m",
                "bench",
                "_gallery",
                ",".join(map(str, sizes)),
                str(args.queries),
                str(out["gallery"]),
            ],
        }
        if args.results:  # the pipeline bench also refreshes its own section
            commands["pipeline"] += ["--results", str(args.results)]
        for name in only:
            run(commands[name], name)
            results[name] = json.loads(out[name].read_text())
    cores = os.cpu_count() or 1
    table = compose(results, cores)
    command = command_line("-m", "bench", argv=argv)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"### {when}\n\nCommand: `{command.strip()}`. Machine: {machine()}. 1-minute load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after.\n\n{table}"
    )
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.results:
        append_run(args.results, text)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_gallery"]:  # internal: the gallery timing, in its own pinned process
        sys.path.insert(0, str(ROOT))
        gallery_json([int(s) for s in sys.argv[2].split(",")], int(sys.argv[3]), Path(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())
