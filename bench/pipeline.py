"""End-to-end pipeline throughput against the in-process engine at the same parallelism, same run.

Usage::

    python bench/pipeline.py [--jobs 200] [--rounds 3] [--stores file,s3] [--phone] [--concurrency N]
        [--pools prefork,solo] [--batch-sizes 1,8] [--chunk-sizes 1,8] [--providers ...]
        [--worker-args '--prefetch-multiplier 4'] [--latency 20] [--results bench/RESULTS.md] [--json PATH]

Worker layouts: ``--pools`` (prefork: one worker of ``--concurrency`` processes; solo: that many
one-process workers) x ``--batch-sizes`` (``KYC_BATCH_SIZE``); on the unbatched ones, also
``--chunk-sizes`` (jobs per broker message, as a queued backlog sends them).

Setup, all on loopback and private to this run: a redis-server on a free port (broker and job
documents), moto's S3 server in this process with the photos uploaded (and the same photos in a
temporary directory for ``file://`` references), and one ``celery -A workers worker`` with
concurrency = cores (one onnxruntime thread per process).

Each round measures, back to back so that a ratio compares runs made under the same load:

* the in-process engine at the worker's parallelism, ``cores`` processes x 1 onnxruntime thread
  over the same images (the baseline), and 1 process x ``cores`` threads (for reference);
* per store, ``--jobs`` faces jobs submitted at once through the producer. Throughput is jobs /
  (last ``finished_at`` - first ``created_at``); "steady state" counts only the jobs finished after
  the last submit, over that window (in production the producer is another host);
* after each worker layout, the workers stopped, the engine baseline again: each layout's ratio
  and CPU overhead are against the mean of the engine runs just before and just after it (on a
  shared VM the engine's own rate moved by up to 12 % over one round, more than the gap measured).

Per-stage times come from the job documents (``queue_s``, ``fetch_s``, ``compute_s``) and the
worker's log (``write_s``: the terminal document's Redis transaction). CPU time per job of every
process involved (pool children, Celery's main process, redis-server, this process: producer and
moto) comes from ``/proc``, and Redis commands per job from ``INFO commandstats``. The commands do
not depend on what else the machine runs; CPU time depends on it less than throughput does, but a
shared VM's speed still moves it (bench/RESULTS.md, the runs of 2026-12-03). Memory of the worker's processes
(RSS, peak RSS, PSS) is read from ``/proc`` at the end. ``--latency`` runs that many single jobs one
after another (submit, poll every 5 ms) for the unloaded round trip.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import baseline, command_line, write_section  # noqa: E402
from harness import (  # noqa: E402
    AWS_TEST_CREDENTIALS,
    TEST_FEATURES_KEY,
    CeleryWorker,
    MotoS3,
    RedisServer,
    S3Endpoint,
    worker_env,
)
from shared.backlog.queued import MIN_POLL_SPAN, next_poll_span  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.jobs import JobDocument, JobStatus  # noqa: E402
from shared.producer import Producer  # noqa: E402

STORES = ("file", "s3")
POOLS = ("prefork", "solo")


def option_values(text: str) -> list[str]:
    """The values of a comma-separated option (``"file, s3"``), blanks dropped."""
    return [name.strip() for name in text.split(",") if name.strip()]


def unknown_layout(stores: list[str], pools: list[str]) -> str | None:
    """What is wrong with the stores and pools asked for, if anything: checked before any
    measurement, as a typo would otherwise end a run minutes in."""
    for option, given, known in (("--stores", stores, STORES), ("--pools", pools, POOLS)):
        if wrong := [g for g in given if g not in known]:
            return f"{option}: unknown {', '.join(wrong)}: choose from {', '.join(known)}"
    return None


# Before any settings are read: the features this process seals verify in the workers it starts.
os.environ.setdefault("KYC_FEATURES_KEY", TEST_FEATURES_KEY)

BUCKET = "kyc-images"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def in_process_threads(blobs: list[bytes], settings: Settings, threads: int) -> float:
    """images/s of ``engine.get_faces`` in this process, onnxruntime on ``threads`` threads, warmed up."""
    from shared.engine import KYCDeepFace

    engine = KYCDeepFace(settings=settings.model_copy(update={"intra_op_threads": threads}))
    for data in set(blobs):
        engine.get_faces(data)
    start = time.perf_counter()
    for data in blobs:
        engine.get_faces(data)
    return len(blobs) / (time.perf_counter() - start)


def _engine_process(
    items: list[Any], share: slice, settings: Settings, barrier: Any, out: Any, batch: int = 1, from_store: bool = False
) -> None:  # pragma: no cover - runs in a child process
    """The engine on its share of ``items``: image bytes, or with ``from_store`` references each
    read from the store first (``store.get``, as a worker does)."""
    from shared.engine import KYCDeepFace
    from shared.storage import store_for

    engine = KYCDeepFace(settings=settings.model_copy(update={"intra_op_threads": 1}))
    read: Callable[[Any], bytes] = store_for(settings).get if from_store else (lambda data: data)
    for item in dict.fromkeys(items):
        engine.get_faces(read(item))
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    mine = items[share]
    if batch == 1:
        for item in mine:
            engine.get_faces(read(item))
    else:  # what a worker with KYC_BATCH_SIZE=batch runs: the faces of `batch` images in one call
        for i in range(0, len(mine), batch):
            engine.describe_many([(read(item), None, False) for item in mine[i : i + batch]])
    out.put((start, time.perf_counter(), time.process_time() - cpu, proc_memory(os.getpid())))


def in_process_processes(
    blobs: list[bytes], settings: Settings, processes: int, batch: int = 1
) -> tuple[float, float, dict[str, float]]:
    """images/s of ``processes`` engine processes x 1 onnxruntime thread, each on a share of ``blobs``.

    The same parallelism as a worker with concurrency = ``processes``, without the queue: the
    processes start together (a barrier, after loading and warming up) and the clock runs from
    the first start to the last finish. The shares are fixed (the queue balances dynamically), so
    a process slowed by a neighbour makes the baseline slower, never faster. Returns the rate, the CPU seconds per image (all
    processes) and one process's memory.
    """
    spans = _together(_engine_process, [(blobs, slice(i, None, processes), settings) for i in range(processes)], batch)
    start, end = min(s[0] for s in spans), max(s[1] for s in spans)
    return len(blobs) / (end - start), sum(s[2] for s in spans) / len(blobs), spans[0][3]


def _together(
    target: Callable[..., None], shares: list[tuple[Any, ...]], *common: Any, parent_cpu: bool = False
) -> list[Any]:
    """Run ``target(*share, barrier, out, *common)`` in one process per share, started together
    after each has warmed up (the barrier); what each puts on ``out``, in arrival order.

    ``parent_cpu``: this process waits at the barrier too, and the CPU seconds it spends from
    there to the last share's answer (moto's server thread, for shares that read from it) come
    last in the list.
    """
    ctx = mp.get_context("spawn")  # no fork after onnxruntime's thread pools exist in this process
    barrier, out = ctx.Barrier(len(shares) + parent_cpu), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*share, barrier, out, *common)) for share in shares]
    for proc in procs:
        proc.start()
    if parent_cpu:
        barrier.wait(timeout=600)
        cpu = time.process_time()
    spans = [out.get(timeout=600) for _ in procs]
    if parent_cpu:
        spans.append(time.process_time() - cpu)
    for proc in procs:
        proc.join()
    return spans


def in_process_fetching(refs: list[str], settings: Settings, processes: int) -> tuple[float, float]:
    """As :func:`in_process_processes`, each process reading its images from the store first
    (``store.get``, as a worker does): the baseline of the pipeline on the same store. Returns the
    rate and the CPU seconds per image of the processes and of this one (moto's server runs here)."""
    shares = [(refs, slice(i, None, processes), settings) for i in range(processes)]
    *spans, server_cpu = _together(_engine_process, shares, 1, True, parent_cpu=True)
    start, end = min(s[0] for s in spans), max(s[1] for s in spans)
    return len(refs) / (end - start), (sum(s[2] for s in spans) + server_cpu) / len(refs)


def _runner_process(
    warm: list[str], mine: list[str], settings: Settings, barrier: Any, out: Any, redis_pid: int
) -> None:  # pragma: no cover - runs in a child process
    from shared.jobs.resources import Resources
    from shared.jobs.runner import execute_many
    from workers.process import finish_hook

    resources = Resources(settings.model_copy(update={"intra_op_threads": 1}))
    resources.on_terminal = finish_hook(resources)  # the worker's hook: completion event, review queue
    chunk = settings.backlog_chunk  # as a chunk message of a backlog carries them
    for n in range(0, len(warm), chunk):
        execute_many(warm[n : n + chunk], resources, 600)
    barrier.wait()
    start, cpu, redis_cpu = time.perf_counter(), time.process_time(), cpu_s(redis_pid)
    for n in range(0, len(mine), chunk):
        execute_many(mine[n : n + chunk], resources, 600)
    out.put((start, time.perf_counter(), time.process_time() - cpu, redis_cpu, cpu_s(redis_pid)))


def in_process_runner(
    producer: Producer, refs: list[str], settings: Settings, processes: int, redis_pid: int
) -> tuple[float, float]:
    """images/s and CPU ms per job of the job code without Celery: ``processes`` processes each
    run ``shared.jobs.runner.execute_many`` (claim, fetch, describe, finish, the completion events)
    on its share of ``faces`` jobs stored in Redis, ``KYC_BACKLOG_CHUNK`` at a time as a chunk
    message carries them, no message involved. The CPU counts the processes
    and redis-server. Between the engine and the pipeline: what the job plumbing costs, and so
    what is left for Celery."""
    tag = f"{time.time_ns():x}"

    def stored(prefix: str, some: list[str]) -> list[str]:
        ids = []
        for n, ref in enumerate(some):
            doc = JobDocument.new("faces", {"image": ref}, f"runner-{tag}-{prefix}-{n}")
            producer.jobs.create(doc)
            ids.append(doc.job_id)
        return ids

    unique = list(dict.fromkeys(refs))
    warm = [stored(f"warm{i}", unique) for i in range(processes)]
    jobs = stored("run", refs)
    spans = _together(_runner_process, [(warm[i], jobs[i::processes], settings) for i in range(processes)], redis_pid)
    # redis-server's CPU from the first share's start to the last one's end (the warm-ups excluded).
    redis_cpu = max(s[4] for s in spans) - min(s[3] for s in spans)
    start, end = min(s[0] for s in spans), max(s[1] for s in spans)
    return len(jobs) / (end - start), 1000 * (sum(s[2] for s in spans) + redis_cpu) / len(jobs)


def proc_memory(pid: int) -> dict[str, float]:
    """RSS now, peak RSS (VmHWM) and PSS of one process, in MiB (Linux /proc, no psutil needed).

    PSS splits the pages a prefork child shares with its parent between them, so the PSS of a
    worker's processes adds up to what the worker really occupies; RSS counts shared pages twice.
    """
    found: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found["rss_mib" if name == "VmRSS" else "peak_rss_mib"] = int(value.split()[0]) / 1024
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    found["pss_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return found


def worker_memory(workers: list[CeleryWorker]) -> list[dict[str, Any]]:
    """Memory of each Celery main process and its pool children (a solo worker is one process)."""
    rows: list[dict[str, Any]] = []
    for worker in workers:
        if worker.pool == "solo":
            rows.append({"process": "solo worker", "pid": worker.pid, **proc_memory(worker.pid)})
            continue
        rows.append({"process": "celery main", "pid": worker.pid, **proc_memory(worker.pid)})
        rows += [{"process": "pool child", "pid": c, **proc_memory(c)} for c in sorted(worker.pool_pids())]
    return rows


def wait_all(producer: Producer, job_ids: list[str], timeout_s: float) -> tuple[list[JobDocument], int]:
    """Poll as a queued backlog does: every 0.25 s one MGET of only the oldest pending jobs
    (``next_poll_span`` of them), rather than every pending document (~11 ms of CPU per round
    for 600 jobs on two cores, on the bench's account).

    Returns the documents and the number of MGETs it sent (not the pipeline's cost).
    """
    pending, polls, span = list(job_ids), 0, MIN_POLL_SPAN
    done: dict[str, JobDocument] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} jobs unfinished")
        polled = pending[:span]
        finished, _ = producer.jobs.finished_many(polled, per_round_trip=len(polled))
        polls += 1
        span = next_poll_span(span, len(polled), len(finished))
        done.update((doc.job_id, doc) for doc in finished)
        pending = [j for j in pending if j not in done]
        if pending:
            time.sleep(0.25)
    return [done[j] for j in job_ids], polls


def command_counts(redis_client: Any) -> dict[str, int]:
    """Redis's cumulative calls per command (``INFO commandstats``)."""
    stats = redis_client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(pids: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_s(p) for p in group) for name, group in pids.items()}


def run_batch(
    producer: Producer,
    items: list[str],
    worker_logs: list[Path],
    pids: dict[str, list[int]],
    submit: Callable[[str], str] | None = None,
    chunk: int = 1,
) -> dict[str, Any]:
    """Submit one job per item at once (``faces`` of an image reference by default) and wait for all.

    Returns throughput, per-stage times, Redis commands per job and the CPU each process spent
    per job (where the cores went: the pool children, Celery's main process, redis-server, this
    bench, which is also the producer and moto's S3 server).
    """
    redis_client = producer.jobs.redis
    log_offsets = [log.stat().st_size for log in worker_logs]
    before = command_counts(redis_client)
    cpu_before = cpu_by_process(pids)
    start = time.perf_counter()
    if chunk > 1:  # as a queued backlog sends them: `chunk` jobs stored in one pipeline, sent in one message
        ids = []
        for n in range(0, len(items), chunk):
            stored = producer.store_many([JobDocument.new("faces", {"image": ref}) for ref in items[n : n + chunk]])
            docs = [doc for doc, _ in stored]
            producer.send(docs)
            ids += [d.job_id for d in docs]
    else:
        submit = submit or (lambda ref: producer.submit_faces(ref).job_id)
        ids = [submit(item) for item in items]
    submit_s = time.perf_counter() - start
    submitted = dt.datetime.now(dt.UTC)
    docs, polls = wait_all(producer, ids, timeout_s=600)
    after = command_counts(redis_client)
    cpu_after = cpu_by_process(pids)
    # The bench's own polling (its MGETs) and INFO are not the pipeline's cost.
    calls = {k: v - before.get(k, 0) for k, v in after.items() if k != "info" and v > before.get(k, 0)}
    calls["mget"] = calls.get("mget", 0) - polls
    time.sleep(0.3)  # the worker logs its last lines after writing the documents
    log_text = ""
    for log, offset in zip(worker_logs, log_offsets, strict=True):
        with log.open("rb") as fh:
            fh.seek(offset)
            log_text += fh.read().decode(errors="replace")
    first = min(d.created_at for d in docs)
    finished = sorted(d.finished_at for d in docs if d.finished_at is not None)
    last = finished[-1]
    # Steady state: the jobs finished after the last submit, over that window. The producer is
    # another service in production (the API host); here its burst shares the worker's cores.
    after_submit = [f for f in finished if f > submitted]
    steady = len(after_submit) / (last - submitted).total_seconds() if len(after_submit) > 1 else float("nan")
    stages = {k: [d.timings[k] for d in docs if k in d.timings] for k in ("queue_s", "fetch_s", "compute_s")}
    stages["write_s"] = [float(m) for m in re.findall(r"write_s=([0-9.]+)", log_text)][: len(docs)]
    return {
        "jobs": len(docs),
        "failed": sum(d.status is not JobStatus.SUCCEEDED for d in docs),
        "images_per_s": len(docs) / (last - first).total_seconds(),
        "steady_images_per_s": steady,
        "submit_s": submit_s,
        "redis_calls_per_job": {k: round(v / len(docs), 2) for k, v in sorted(calls.items())},
        "stages_s": stages,
        "cpu_ms_per_job": {k: round(1000 * (cpu_after[k] - cpu_before[k]) / len(docs), 2) for k in pids},
    }


def fixed_cost(
    producer: Producer, files: list[Path], worker_logs: list[Path], pids: dict[str, list[int]], jobs: int
) -> dict[str, Any]:
    """The pipeline's cost per job without the image work: ``match`` jobs (two features strings,
    a fraction of a millisecond of compute) through the same worker; the second of two batches."""
    from shared.engine import KYCDeepFace
    from shared.schemas import FacesResult

    engine = KYCDeepFace(settings=Settings(intra_op_threads=1))
    features = []
    for path in files:
        found = engine.get_faces(path.read_bytes())
        if isinstance(found, FacesResult) and found.faces:
            features.append(found.faces[0].template())
        if len(features) == 2:
            break
    first, second = features

    def submit(item: str) -> str:
        return producer.submit_match(item, second).job_id

    got = {}
    for _ in range(2):  # the first batch warms up the match path
        got = run_batch(producer, [first] * jobs, worker_logs, pids, submit)
    return got


def phone_size(files: list[Path]) -> dict[str, bytes]:
    """The photos as 4000 px JPEGs: what a phone selfie costs to fetch and decode (see bench/engine.py)."""
    import cv2

    out = {}
    for p in files:
        image = cv2.imread(str(p))
        if image is None:
            continue
        factor = 4000 / max(image.shape[:2])
        big = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        out[p.name] = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "p95": pct(values, 95),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="repeat every measurement this many times")
    parser.add_argument("--latency", type=int, default=20)
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "faces")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--stores", default="file,s3", help="image stores to run the pipeline on: file, s3 or both")
    parser.add_argument("--results", type=Path, default=None, help="write the Pipeline section of this file")
    parser.add_argument("--json", type=Path, default=None, help="write the measurements as JSON here")
    parser.add_argument(
        "--fixed-cost", type=int, default=0, help="also run this many match jobs: the cost per job without images"
    )
    parser.add_argument(
        "--phone", action="store_true", help="the photos upscaled to 4000 px, the size of a phone photo"
    )
    parser.add_argument(
        "--providers",
        default="CPUExecutionProvider",
        help="KYC_ORT_PROVIDERS for the engine and the worker, comma-separated "
        "(CUDAExecutionProvider,CPUExecutionProvider on a GPU host)",
    )
    parser.add_argument(
        "--batch-sizes", default="1,8", help="KYC_BATCH_SIZE of the worker, one worker per value in each round"
    )
    parser.add_argument(
        "--chunk-sizes",
        default="1,8",
        help="jobs per message (1: one message per job; N: a backlog's chunks), on the layouts without batching",
    )
    parser.add_argument(
        "--pools",
        default="prefork",
        help="worker layouts, each run at every batch size: prefork (1 worker x --concurrency processes) "
        "and/or solo (--concurrency solo workers, each consuming and running in its own process)",
    )
    parser.add_argument(
        "--worker-args",
        default="",
        help="extra arguments for `celery worker`, e.g. '--prefetch-multiplier 4' (keep the INFO log level: "
        "readiness and write times are read from the log)",
    )
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("redis-server is not installed", file=sys.stderr)
        return 1
    stores = option_values(args.stores)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    pools = option_values(args.pools)
    if wrong := unknown_layout(stores, pools):
        parser.error(wrong)
    # One worker layout per (pool, batch size), one column per layout and store: "file b=8",
    # "s3 solo b=1".
    layouts = [(pool, b) for pool in pools for b in batch_sizes]
    chunks = [int(c) for c in args.chunk_sizes.split(",") if c.strip()]
    # Chunks only where messages are not batched anyway: each is one message for several jobs.
    runs = [(pool, b, c) for pool, b in layouts for c in chunks if c == 1 or b == 1]
    columns = [column_name(store, pool, b, c) for pool, b, c in runs for store in stores]

    files = sorted(p for p in args.faces.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    names = [files[i % len(files)].name for i in range(args.jobs)]
    blobs = {p.name: p.read_bytes() for p in files} if not args.phone else phone_size(files)
    images = [blobs[n] for n in names]
    cores = os.cpu_count() or 1
    rounds: list[dict[str, Any]] = []
    latency: list[float] = []
    os.environ.update(AWS_TEST_CREDENTIALS)  # the producer's boto3 reads them from the environment

    # Every file of the run (Redis's, the images for file:// references, the worker's log) lives
    # in one temporary directory.
    with (
        tempfile.TemporaryDirectory(prefix="kyc-bench-") as tmp,
        RedisServer(Path(tmp) / "redis") as redis_server,
        MotoS3() as moto,
    ):
        image_dir = Path(tmp) / "images"
        image_dir.mkdir()
        for name, data in blobs.items():
            (image_dir / name).write_bytes(data)
        refs = {
            "s3": [f"s3://{BUCKET}/bench/{n}" for n in names],
            "file": [f"file://{image_dir / n}" for n in names],
        }
        s3 = moto.fresh(S3Endpoint(moto.url, bucket=BUCKET, results_bucket=None),
                        {f"bench/{name}": data for name, data in blobs.items()})  # fmt: skip
        broker = redis_server.url
        providers = option_values(args.providers)
        settings = Settings(
            broker_url=broker,
            s3_endpoint_url=s3.url,
            s3_bucket=BUCKET,
            ort_providers=providers,
            local_storage_root=image_dir,
        )
        log_paths = [Path(tmp) / f"worker-{n}.log" for n in range(args.concurrency)]
        producer = Producer(settings)

        def start_workers(pool: str, batch: int) -> tuple[list[CeleryWorker], dict[str, list[int]]]:
            env = worker_env(
                broker,
                s3,
                settings.model_dir,
                KYC_BATCH_SIZE=str(batch),
                KYC_ORT_PROVIDERS=json.dumps(providers),
                KYC_LOCAL_STORAGE_ROOT=str(image_dir),
            )
            extra = shlex.split(args.worker_args)
            if pool == "solo":  # the same parallelism: one single-threaded process per slot
                env["KYC_INTRA_OP_THREADS"] = str(max(1, cores // args.concurrency))
                started = [CeleryWorker(env, log, 1, extra_args=extra, pool="solo") for log in log_paths]
            else:
                started = [CeleryWorker(env, log_paths[0], args.concurrency, extra_args=extra)]
            for w in started:
                w.start(timeout_s=120)
            return started, {
                # For solo workers, the worker processes themselves (they consume and run).
                "pool children": sorted(p for w in started for p in w.pool_pids()),
                "celery main": [w.pid for w in started if w.pool != "solo"],
                "redis-server": [redis_server.pid],
                "bench (producer, moto)": [os.getpid()],
            }

        def stop_all() -> None:
            for w in workers:
                w.stop()
            workers.clear()

        workers: list[CeleryWorker] = []
        logs: list[Path] = []
        try:
            for r in range(args.rounds):
                # One round = every measurement once, back to back, so a ratio compares runs made
                # under the same load; the spread over rounds shows how much the load moved.
                got: dict[str, Any] = {"load_1m": load_average()}
                got["threads"] = in_process_threads(images, settings, cores)
                got["processes"], cpu_per_image, baseline_memory = in_process_processes(images, settings, cores)
                got["processes_cpu_ms"] = 1000 * cpu_per_image
                if "s3" in stores:
                    got["processes s3"], cpu_s3 = in_process_fetching(refs["s3"], settings, cores)
                    got["processes_cpu_ms s3"] = 1000 * cpu_s3
                if "file" in refs:
                    got["runner"], got["runner_cpu_ms"] = in_process_runner(
                        producer, refs["file"], settings, cores, redis_server.pid
                    )
                for b in batch_sizes:
                    if b > 1:
                        got[f"processes b={b}"], cpu_b, _ = in_process_processes(images, settings, cores, b)
                        got[f"processes_cpu_ms b={b}"] = 1000 * cpu_b
                before = [got["processes"], got["processes_cpu_ms"]]
                for pool, b in layouts:
                    started, pids = start_workers(pool, b)
                    workers.extend(started)
                    logs = [w.log_path for w in started]
                    chunk_sizes = [c for p, bb, c in runs if (p, bb) == (pool, b)]
                    for c in chunk_sizes:  # warm, as the baselines are: each photo, each chunk size
                        for store in stores:
                            run_batch(
                                producer, list(dict.fromkeys(refs[store])) * args.concurrency, logs, pids, chunk=c
                            )
                    for c in chunk_sizes:
                        for store in stores:
                            got[column_name(store, pool, b, c)] = run_batch(producer, refs[store], logs, pids, chunk=c)
                    memory = worker_memory(workers)
                    stop_all()
                    # The engine again, the workers stopped: each layout is compared with the engine
                    # run just before and just after it, not with the round's first run minutes
                    # earlier, so that a shared VM's drift over a round stays out of the ratio.
                    rate, cpu_after, _ = in_process_processes(images, settings, cores)
                    after = [rate, 1000 * cpu_after]
                    for c in chunk_sizes:
                        for store in stores:
                            got[column_name(store, pool, b, c)]["engine_near"] = [before, after]
                    before = after
                rounds.append(got)
                print(
                    f"round {r + 1}: load {got['load_1m']:.2f}, in-process {got['threads']:.1f} (1x{cores} threads) "
                    f"/ {got['processes']:.1f} ({cores}x1) images/s, "
                    + ", ".join(f"pipeline {c} {got[c]['images_per_s']:.1f}" for c in columns),
                    file=sys.stderr,
                )
            if args.latency or args.fixed_cost:  # on the last layout, started again
                started, pids = start_workers(*layouts[-1])
                workers.extend(started)
                logs = [w.log_path for w in started]
            for i in range(args.latency):
                t0 = time.perf_counter()
                producer.wait_for(producer.submit_faces(refs[stores[-1]][i]).job_id, poll_s=0.005)
                latency.append(time.perf_counter() - t0)
            fixed = fixed_cost(producer, files, logs, pids, args.fixed_cost) if args.fixed_cost else None
            producer.close()
        finally:
            stop_all()

    report = {
        "bench": "pipeline",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command_line("bench/pipeline.py"),
        "cores": cores,
        "concurrency": args.concurrency,
        "jobs": args.jobs,
        "photos": len(files),
        "image_set": "phone size (4000 px)" if args.phone else "as they are",
        "stores": columns,
        "batch_sizes": batch_sizes,
        "pools": pools,
        "providers": providers,
        "rounds": rounds,
        "latency_s": latency,
        "worker_memory": memory,
        "fixed_cost": fixed,
        "fixed_cost_layout": f"{layouts[-1][0]}, KYC_BATCH_SIZE={layouts[-1][1]}" if fixed else None,
        "in_process_memory": baseline_memory,
    }
    text = render(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.results:
        heading, _, body = text.partition("\n")
        write_section(args.results, heading.removeprefix("## "), body)
    return 1 if any(r[c]["failed"] for r in rounds for c in columns) else 0


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """``median (min-max)`` of a handful of runs."""
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


STORE_LABEL = {"s3": "S3 (moto, same host)", "file": "local files (file://)"}


def column_name(store: str, pool: str, batch: int, chunk: int = 1) -> str:
    name = f"{store} solo b={batch}" if pool == "solo" else f"{store} b={batch}"
    return name + (f" c={chunk}" if chunk > 1 else "")


def column_label(column: str, concurrency: int) -> str:
    """``"file b=8"`` -> ``"local files (file://), KYC_BATCH_SIZE=8, 1 worker x 2 processes"``."""
    head, _, rest = column.partition(" b=")
    batch, _, chunk = rest.partition(" c=")
    store, _, pool = head.partition(" ")
    layout = (
        f"{concurrency} solo workers (1 process each)"
        if pool == "solo"
        else f"1 worker x {concurrency} prefork processes"
    )
    chunked = f", {chunk} jobs per message" if chunk else ""
    return STORE_LABEL[store] + (f", KYC_BATCH_SIZE={batch}" if batch else "") + chunked + f", {layout}"


def render(report: dict[str, Any]) -> str:
    """The Markdown section for RESULTS.md."""
    rounds, cores, conc = report["rounds"], report["cores"], report["concurrency"]
    rows = [
        f"| measure ({len(rounds)} rounds: median (min-max)) | value |",
        "|---|---:|",
        f"| 1-minute load average at each round's start | {spread([r['load_1m'] for r in rounds])} |",
        f"| in-process engine, 1 process x {cores} onnx threads | "
        f"{spread([r['threads'] for r in rounds], '{:.1f}')} images/s |",
        f"| in-process engine, {cores} processes x 1 onnx thread (the baseline) | "
        f"{spread([r['processes'] for r in rounds], '{:.1f}')} images/s |",
    ]
    if all("processes s3" in r for r in rounds):
        rows.append(
            f"| in-process engine, {cores}x1, each process reading its images from S3 (moto) first, as a "
            f"worker does (the baseline of the s3 columns) | {spread([r['processes s3'] for r in rounds], '{:.1f}')} images/s |"
        )
    if all("runner" in r for r in rounds):
        rows += [
            f"| in-process job runner, {cores} processes x 1 onnx thread (claim, fetch, run, finish on Redis, the "
            f"completion events; a chunk's jobs at a time; no Celery; local files) | {spread([r['runner'] for r in rounds], '{:.1f}')} images/s |",
            f"| **ratio runner / in-process {cores}x1** | **{spread([r['runner'] / r['processes'] for r in rounds])}** |",
        ]
    for b in report.get("batch_sizes", []):
        if b > 1:
            rows.append(
                f"| in-process engine, {cores}x1, `describe_many` of {b} images per call | "
                f"{spread([r[f'processes b={b}'] for r in rounds], '{:.1f}')} images/s |"
            )
    for store in report["stores"]:
        runs = [r[store] for r in rounds]
        rows += [
            f"| pipeline, {column_label(store, conc)}, 1 onnx thread each, first submit to "
            f"last result | {spread([x['images_per_s'] for x in runs], '{:.1f}')} images/s |",
            f"| same, steady state (after the last submit) | "
            f"{spread([x['steady_images_per_s'] for x in runs], '{:.1f}')} images/s |",
            f"| in-process engine, {cores}x1, run just before and after this layout (mean) | "
            f"{spread([baseline(r, store)[0] for r in rounds], '{:.1f}')} images/s |",
            f"| **ratio pipeline ({store}) / in-process {cores}x1** (first submit to last result) | "
            f"**{spread([r[store]['images_per_s'] / baseline(r, store)[0] for r in rounds])}** |",
            f"| ratio, steady state / in-process {cores}x1 | "
            f"{spread([r[store]['steady_images_per_s'] / baseline(r, store)[0] for r in rounds])} |",
            f"| ratio pipeline ({store}) / in-process 1x{cores} | "
            f"{spread([r[store]['images_per_s'] / r['threads'] for r in rounds])} |",
        ]
        if store.startswith("s3") and all("processes s3" in r for r in rounds):
            rows.append(
                f"| **ratio pipeline ({store}) / in-process {cores}x1 reading the same S3** | "
                f"**{spread([r[store]['images_per_s'] / r['processes s3'] for r in rounds])}** |"
            )
    last = rounds[-1][report["stores"][0]]
    rows.append(f"| submit {last['jobs']} jobs (producer) | {last['submit_s']:.2f} s |")
    rows.append(f"| failed jobs | {sum(r[s]['failed'] for r in rounds for s in report['stores'])} |")
    if report["latency_s"]:
        lat = report["latency_s"]
        rows.append(
            f"| single-job round trip, unloaded (median / p95 of {len(lat)}) | "
            f"{1000 * statistics.median(lat):.0f} / {1000 * pct(lat, 95):.0f} ms |"
        )
    labels = {
        "queue_s": "queue wait",
        "fetch_s": "fetch",
        "compute_s": "compute (get_faces)",
        "write_s": "result write",
    }
    rows += ["", "| stage, per job (all rounds) | store | median ms | p95 ms | mean ms |", "|---|---|---:|---:|---:|"]
    for store in report["stores"]:
        for key, label in labels.items():
            values = [v for r in rounds for v in r[store]["stages_s"][key]]
            if values:
                s = summary(values)
                rows.append(
                    f"| {label} | {store} | {1000 * s['median']:.1f} | {1000 * s['p95']:.1f} | {1000 * s['mean']:.1f} |"
                )
    rows += ["", "| CPU ms per job (median of rounds) | " + " | ".join(report["stores"]) + " |"]
    rows.append("|---|" + "---:|" * len(report["stores"]))
    for name in rounds[0][report["stores"][0]]["cpu_ms_per_job"]:
        cells = [statistics.median(r[s]["cpu_ms_per_job"][name] for r in rounds) for s in report["stores"]]
        rows.append(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    engine_cpu = [statistics.median(baseline(r, s)[1] for r in rounds) for s in report["stores"]]
    totals = [statistics.median(sum(r[s]["cpu_ms_per_job"].values()) for r in rounds) for s in report["stores"]]
    rows.append("| **all processes** | " + " | ".join(f"**{t:.1f}**" for t in totals) + " |")
    rows.append(
        f"| in-process engine ({cores}x1, just before and after the layout), per image | "
        + " | ".join(f"{e:.1f}" for e in engine_cpu)
        + " |"
    )
    if all("runner_cpu_ms" in r for r in rounds):
        runner_cpu = statistics.median(r["runner_cpu_ms"] for r in rounds)
        rows.append(
            "| in-process job runner, per job (its processes and redis-server) | "
            + " | ".join(f"{runner_cpu:.1f}" for _ in totals)
            + " |"
        )
    rows.append(
        "| **CPU overhead per job** (all processes - in-process per image) | "
        + " | ".join(f"**{t - e:.1f}**" for t, e in zip(totals, engine_cpu, strict=True))
        + " |"
    )
    if all("processes_cpu_ms s3" in r for r in rounds):
        s3_cpu = statistics.median(r["processes_cpu_ms s3"] for r in rounds)
        own = [
            (s3_cpu, t) if s.startswith("s3") else (e, t)
            for s, t, e in zip(report["stores"], totals, engine_cpu, strict=True)
        ]
        rows.append(
            "| in-process engine reading the same store, per image (s3: its processes and moto's server) | "
            + " | ".join(f"{base:.1f}" for base, _ in own)
            + " |"
        )
        rows.append(
            "| **CPU overhead per job against the same store** | "
            + " | ".join(f"**{t - base:.1f}**" for base, t in own)
            + " |"
        )
    rows.append(
        "| CPU ratio in-process / pipeline | "
        + " | ".join(f"{e / t:.2f}" for t, e in zip(totals, engine_cpu, strict=True))
        + " |"
    )
    fixed = report.get("fixed_cost")
    fixed_line = ""
    if fixed:
        cpu = fixed["cpu_ms_per_job"]
        fixed_line = (
            f"\n\nFixed cost per job, without images ({fixed['jobs']} `match` jobs on the last layout, "
            f"{report.get('fixed_cost_layout')}; compute median "
            f"{1000 * statistics.median(fixed['stages_s']['compute_s']):.2f} ms, {fixed['images_per_s']:.0f} jobs/s): "
            f"{sum(cpu.values()):.2f} ms CPU per job (" + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) + ")."
        )
    calls = rounds[-1][report["stores"][0]]["redis_calls_per_job"]
    redis_line = ", ".join(f"{k} {v:g}" for k, v in calls.items())
    rows += ["", "| process | pid | RSS MiB | peak RSS MiB | PSS MiB |", "|---|---:|---:|---:|---:|"]
    for m in report["worker_memory"]:
        rows.append(
            f"| {m['process']} | {m['pid']} | {m.get('rss_mib', 0):.0f} | {m.get('peak_rss_mib', 0):.0f} | "
            f"{m.get('pss_mib', 0):.0f} |"
        )
    b = report["in_process_memory"]
    rows.append(
        f"| in-process engine (1 of the {cores} baseline processes) | - | {b.get('rss_mib', 0):.0f} | "
        f"{b.get('peak_rss_mib', 0):.0f} | {b.get('pss_mib', 0):.0f} |"
    )
    heading = (
        "## Pipeline" if report.get("image_set", "as they are") == "as they are" else "## Pipeline, phone-size photos"
    )
    return (
        f"{heading}\n\n"
        f"{report['date']}. Command: `{report['command'].strip()}`. `nproc` = {cores}; Python "
        f"{platform.python_version()} on {platform.machine()}. Each round: the in-process engine at both "
        f"parallelisms, then {report['jobs']} `faces` jobs per store over {report['photos']} photos of "
        f"`../shared/faces` ({report.get('image_set', 'as they are')}, cycled), submitted at once to one worker (private redis-server, loopback). "
        f"The baseline is the engine at the worker's parallelism: {cores} processes x 1 onnxruntime thread on "
        "the same images, no queue, run again after each worker layout (the workers stopped): a layout is "
        "compared with the mean of the engine runs just before and just after it. Caveat: moto's S3 server is Python running in the bench process on the "
        "same cores as the worker (a real S3 or MinIO is another machine), so the `s3` rows pay for the "
        "server's CPU too; the `file` rows isolate the queue's own overhead, and the `s3` rows are also "
        "compared with the engine reading the same objects from the same server.\n\n"
        + "\n".join(rows)
        + fixed_line
        + f"\n\nRedis commands per job (submit, claim, finish and Celery's own; the bench's polling excluded): "
        f"{redis_line}.\n\n```\n"
        + "\n".join(subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10])
        + "\n```\n"
    )


if __name__ == "__main__":
    sys.exit(main())
