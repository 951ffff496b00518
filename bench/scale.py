"""A backlog at scale through one worker host: flat throughput, bounded Redis, a flat producer.

Usage::

    python bench/scale.py [--match 100000] [--verify 10000] [--window 2000] [--poll 0.1]
        [--queued-sample 10000] [--concurrency N] [--results bench/RESULTS.md] [--json PATH]

Setup, private to this run: a redis-server on a free port (harness/), one ``celery -A workers
worker`` with concurrency = cores, and this process as the producer, running the backlog's own
window (``shared.backlog.window.run_window`` with ``QueuedRunner``: at most ``--window`` jobs in
flight, polled with pipelined MGETs).

Phases:

1. Redis per queued job: ``--queued-sample`` match jobs submitted with no worker running;
   ``used_memory`` before and after, over the jobs (the job document, the Celery message, the
   unstarted-set entry).
2. Redis per finished job: the worker starts and answers them; memory over the jobs now holds
   the terminal documents (kept for ``KYC_JOB_TTL_S``).
3. ``--match`` match jobs (two 512-d features strings each, unique to the job) through the window, then a
   ``--verify``-row manifest (photo pairs of ../shared/faces, local files) through
   ``run_backlog`` itself: streamed manifest, window, a JSON document per job and ``summary.csv``
   on disk. Throughput of the first and last tenth of each (answers per second, by arrival;
   the first tenth from the first answer, the wait for it reported apart),
   Redis ``used_memory`` sampled at every tenth and its peak, this process's RSS at every tenth.

Answers of phases 1-2 count as match jobs too, so ``--match`` is the total.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import cycle, pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import redis  # noqa: E402

from bench.results import command_line, write_section  # noqa: E402
from harness import TEST_FEATURES_KEY, CeleryWorker, RedisServer, S3Endpoint, worker_env  # noqa: E402
from shared import features, keys  # noqa: E402
from shared.backlog.manifest import ManifestRow, iter_manifest  # noqa: E402
from shared.backlog.queued import QueuedRunner  # noqa: E402
from shared.backlog.run import run_backlog  # noqa: E402
from shared.backlog.sample import sample_pairs  # noqa: E402
from shared.backlog.window import run_window  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.engine import KYCDeepFace  # noqa: E402
from shared.jobs import JobDocument  # noqa: E402

# Before any settings are read: the features this process seals verify in the workers it starts.
os.environ.setdefault("KYC_FEATURES_KEY", TEST_FEATURES_KEY)
from shared.producer import Producer  # noqa: E402
from shared.schemas import FacesResult  # noqa: E402

FACES_DIR = ROOT.parent / "shared" / "faces"
NOISE_BANKS = (997, 1009)


def rss_mb() -> float:
    """This process's resident set, MB (from /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def two_features(settings: Settings) -> tuple[str, str]:
    engine = KYCDeepFace(settings=settings)
    found = []
    for name in ("fr_obama.jpg", "fr_obama2.jpg"):
        result = engine.get_faces((FACES_DIR / name).read_bytes())
        if not isinstance(result, FacesResult) or len(result.faces) != 1:
            raise SystemExit(f"{name}: expected one face")
        found.append(result.faces[0].template())
    return found[0], found[1]


def match_rows(a: str, b: str, start: int, stop: int) -> Iterator[ManifestRow]:
    """Match rows whose two templates are their own (``a`` and ``b``, each moved a little, the
    same for the same row): as in production, no two jobs share a template, so whatever Redis
    keeps per template (the erasure index) shows up per job.

    Row ``i`` moves a template by two noise vectors, ``i`` modulo each of two primes (distinct
    for the first million rows): drawing fresh noise per row cost this process, the backlog's
    producer, more than submitting the row.
    """
    fa, fb = features.decode(a), features.decode(b)
    rng = np.random.default_rng(0)
    banks = [rng.normal(0, 0.007, (n, fa.vector.size)).astype(np.float32) for n in NOISE_BANKS]
    for i in range(start, stop):
        moved = [f.vector + banks[0][(i + k) % NOISE_BANKS[0]] + banks[1][(i + k) % NOISE_BANKS[1]]
                 for k, f in enumerate((fa, fb))]  # fmt: skip
        one, two = (features.encode(f.model_id, v) for f, v in zip((fa, fb), moved, strict=True))
        yield ManifestRow(i, JobDocument.new("match", {"features1": one, "features2": two}, f"scale-m-{i}"))


def verify_manifest(path: Path, count: int) -> Path:
    """A manifest of ``count`` verify rows (photo pairs of ../shared/faces, cycled), one job id each."""
    pairs = cycle(sample_pairs(FACES_DIR))
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["job_id", "selfie", "document", "batch"])
        for i in range(count):
            selfie, document = next(pairs)
            writer.writerow([f"scale-v-{i}", selfie, document, "scale"])
    return path


def run_phase(
    total: int, drive: Callable[[Callable[[JobDocument], None]], None], client: redis.Redis
) -> dict[str, Any]:
    """Run a phase; per tenth of ``total`` answers: answers/s, Redis used_memory, this process's RSS.

    ``drive`` runs the jobs and calls its argument with each terminal document as it arrives.
    The first answer comes only after the window's first submissions and the worker's first
    chunk: that wait is reported on its own (``first_answer_s``) and the first tenth's rate runs
    from the first answer, so that the tenths compare throughput, not the start-up.
    """
    tenth = max(1, total // 10)
    start = time.perf_counter()
    marks: list[float] = []
    memory, rss = [], []
    statuses: dict[str, int] = {}
    done = 0

    def answered(doc: JobDocument) -> None:
        nonlocal done
        statuses[doc.status.value] = statuses.get(doc.status.value, 0) + 1
        done += 1
        if done == 1 or done % tenth == 0:
            marks.append(time.perf_counter())
        if done % tenth == 0:
            memory.append(used_memory(client))
            rss.append(rss_mb())

    drive(answered)
    # The first interval holds one answer fewer: the clock starts at the first one.
    rates = [(tenth - (n == 0)) / (b - a) for n, (a, b) in enumerate(pairwise(marks))]
    return {
        "jobs": done,
        "seconds": marks[-1] - start,
        "first_answer_s": marks[0] - start,
        "statuses": statuses,
        "rate_first_tenth": rates[0],
        "rate_last_tenth": rates[-1],
        "last_over_first": rates[-1] / rates[0],
        "rates": rates,
        "redis_used_mb_per_tenth": [m / 1e6 for m in memory],
        "producer_rss_mb_per_tenth": rss,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--match", type=int, default=100_000)
    parser.add_argument("--verify", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=2000)
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between MGET rounds")
    parser.add_argument("--queued-sample", type=int, default=10_000)
    parser.add_argument("--result-ttl", type=int, help="KYC_BACKLOG_RESULT_TTL_S for the answers read (default: kept)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--results", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    # A SIGTERM unwinds the with-blocks, so the worker and redis-server stop with this process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Settings()
    a, b = two_features(base)
    sample = min(args.queued_sample, args.match)
    report: dict[str, Any] = {"args": vars(args) | {"results": str(args.results), "json": str(args.json)}}
    with tempfile.TemporaryDirectory(prefix="kyc-scale-") as tmp, RedisServer(Path(tmp) / "redis") as server:
        # The verify rows are local files of ../shared/faces: workers read them only under a root.
        settings = Settings(broker_url=server.url, model_dir=base.model_dir, local_storage_root=FACES_DIR.resolve())
        client = redis.Redis.from_url(server.url)
        producer = Producer(settings)
        runner = QueuedRunner(producer, poll_s=args.poll, result_ttl_s=args.result_ttl)
        empty = used_memory(client)
        for row in match_rows(a, b, 0, sample):
            producer.submit(row.job.kind, row.job.run_inputs(), row.job.job_id)
        queued = used_memory(client)
        env = worker_env(
            server.url,
            S3Endpoint(url="http://127.0.0.1:9", results_bucket=None),
            base.model_dir,
            KYC_LOCAL_STORAGE_ROOT=str(FACES_DIR.resolve()),
        )
        worker = CeleryWorker(env, Path(tmp) / "worker.log", args.concurrency)
        worker.start(180)
        try:
            # Answers kept (no TTL cut) while the per-finished-job memory is measured.
            list(run_window(match_rows(a, b, 0, sample), QueuedRunner(producer, args.poll), args.window))
            finished = used_memory(client)
            report["redis_bytes_per_queued_match"] = (queued - empty) / sample
            report["redis_bytes_per_finished_match"] = (finished - empty) / sample
            rows = match_rows(a, b, sample, args.match)

            def matches(answered: Callable[[JobDocument], None]) -> None:
                for _row, doc in run_window(rows, runner, args.window):
                    answered(doc)

            report["match"] = run_phase(args.match - sample, matches, client)
            before_verify = used_memory(client)
            manifest = verify_manifest(Path(tmp) / "verify.csv", args.verify)

            def backlog(answered: Callable[[JobDocument], None]) -> None:
                run_backlog(iter_manifest(manifest), Path(tmp) / "out", settings, str(manifest), answered,
                            window=args.window, runner=runner)  # fmt: skip

            report["verify"] = run_phase(args.verify, backlog, client)
            report["redis_growth_per_verify"] = (used_memory(client) - before_verify) / args.verify
            last = keys.job_key(f"scale-v-{args.verify - 1}")
            report["redis_bytes_verify_document"] = client.memory_usage(last) or 0
            report["redis_peak_mb"] = int(client.info("memory")["used_memory_peak"]) / 1e6
        finally:
            worker.stop()
            runner.close()
    report["machine"] = f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores"
    report["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    text = render(report, command_line("bench/scale.py"))
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.results:
        write_section(args.results, "Backlog at scale (issue 14)", text)
    return 0


def render(r: dict[str, Any], command: str) -> str:
    rows = []
    for kind in ("match", "verify"):
        p = r[kind]
        rss = p["producer_rss_mb_per_tenth"]
        mem = p["redis_used_mb_per_tenth"]
        rows.append(
            f"| {kind} | {p['jobs']:,} | {p['jobs'] / p['seconds']:.0f} | {p['first_answer_s']:.1f} | {p['rate_first_tenth']:.0f} | "
            f"{p['rate_last_tenth']:.0f} | {p['last_over_first']:.2f} | {mem[0]:.0f} → {mem[-1]:.0f} | "
            f"{rss[0]:.0f} → {rss[-1]:.0f} | {p['statuses']} |"
        )
    return "\n".join([
        f"`{command}` on {r['machine']}, load average {' '.join(r['loadavg'])} at the end; window "
        f"{r['args']['window']}, poll {r['args']['poll']} s, answers' Redis TTL after reading "
        f"{r['args']['result_ttl'] or 'KYC_JOB_TTL_S'}, one worker host (concurrency {r['args']['concurrency']}).",
        "",
        "| jobs | count | jobs/s overall | first answer after (s) | first tenth | last tenth | last/first "
        "| Redis used MB (first → last tenth) | backlog RSS MB (first → last tenth) | statuses |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Redis per queued match job: {r['redis_bytes_per_queued_match'] / 1000:.2f} kB; per finished match: "
        f"{r['redis_bytes_per_finished_match'] / 1000:.2f} kB (used_memory over {r['args']['queued_sample']:,} jobs); "
        f"a finished verify document: {r['redis_bytes_verify_document'] / 1000:.2f} kB (MEMORY USAGE); "
        f"Redis growth per verify row over the backlog: {r['redis_growth_per_verify'] / 1000:.2f} kB. "
        f"Redis peak: {r['redis_peak_mb']:.0f} MB.",
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
