"""Chaos with chunks on: a queued verify backlog (``run_backlog``, its default chunks of
``KYC_BACKLOG_CHUNK`` = 8 jobs per message) while a pool process of the worker is SIGKILLed at
least every 3 s (any of its processes, as an OOM killer would pick), at the production attempt
limit (``KYC_MAX_ATTEMPTS`` = 3). About a minute: every kill costs a pool process its model load.

Before the bisect, one such run failed eight innocent jobs: a chunk's loss was charged to every
job in it. Now every job must end ``succeeded`` with exactly one document, in the backlog's
directory, equal to its in-process answer (``run_job`` on the same S3 objects).
"""

from __future__ import annotations

import csv
import itertools
import random
import re
import threading
import time
from pathlib import Path

import pytest
import redis

from harness import RedisServer, S3Endpoint
from shared.backlog.manifest import iter_manifest
from shared.backlog.run import run_backlog
from shared.engine import KYCDeepFace
from shared.jobs import JobDocument, JobStatus
from shared.jobs.resources import Resources
from shared.jobs.runner import run_job
from shared.storage import store_for
from tests.reliability.conftest import (
    fault_env,
    kill_quietly,
    producer_for,
    ref,
    wait_drained,
    worker_running,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

PAIRS = 48
JOBS = 8 * PAIRS
KILL_EVERY_S = 3.0  # at most this long between two SIGKILLs of a pool process


def test_every_job_of_a_chunked_backlog_succeeds_once_under_repeated_kills(
    aof_redis: RedisServer,
    photo_bucket: S3Endpoint,
    small_photos: dict[str, bytes],
    engine: KYCDeepFace,
    tmp_path: Path,
) -> None:
    photo_keys = sorted(small_photos)
    rng = random.Random(28)
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["job_id", "selfie", "document"])
        pairs = [rng.sample(photo_keys, 2) for _ in range(PAIRS)]
        # Each pair several times over: a backlog long enough for the kills at any engine speed
        # (on a quiet machine the pairs alone were done before the third kill).
        for i in range(JOBS):
            selfie, document = pairs[i % PAIRS]
            writer.writerow([f"chaos-{i:04d}", ref(selfie), ref(document)])
    # The in-process answer of each pair: the handler the worker runs, on the same S3 objects.
    producer = producer_for(aof_redis.url, photo_bucket)
    local = Resources(producer.settings, engine=engine, images=store_for(producer.settings))
    answers: dict[tuple[str, str], object] = {}
    expected = {}
    for row in iter_manifest(manifest):
        inputs = row.job.run_inputs()
        pair = (inputs["selfie"], inputs["document"])
        if pair not in answers:
            answers[pair] = run_job("verify", inputs, local)
        expected[row.job.job_id] = answers[pair]
    producer.close()

    env = fault_env(aof_redis.url, photo_bucket, KYC_TASK_SOFT_TIME_LIMIT_S="20", KYC_TASK_TIME_LIMIT_S="25")
    settings = producer.settings.model_copy(update={"backlog_window": 64})
    assert settings.backlog_chunk == 8 and settings.max_attempts == 3  # the defaults under test
    client = redis.Redis.from_url(aof_redis.url)
    out = tmp_path / "out"
    kills: list[float] = []
    report: list[object] = []

    def run() -> None:
        report.append(run_backlog(iter_manifest(manifest), out, settings, str(manifest), timeout_s=180))

    try:
        with worker_running(env, tmp_path / "worker.log") as worker:
            backlog = threading.Thread(target=run, daemon=True)
            started = time.monotonic()
            backlog.start()
            while backlog.is_alive() and time.monotonic() - started < 200:
                # One of the pool's processes, whatever it is doing (running a chunk, idle, still
                # loading its models), as an OOM killer or a failing node would.
                pool = sorted(worker.pool_pids())
                if pool and kill_quietly(rng.choice(pool)):
                    kills.append(time.monotonic() - started)
                time.sleep(rng.uniform(2.0, KILL_EVERY_S - 0.2))
            backlog.join(timeout=30)
            drained = wait_drained(client)
            log = worker.log()
    finally:
        client.close()

    splits = len(re.findall(r"came back after its process was lost", log))
    gaps = [b - a for a, b in itertools.pairwise(kills)]
    print(f"\nchaos: {len(kills)} SIGKILLs in {kills[-1]:.0f}s (longest gap {max(gaps):.1f}s), {splits} splits")
    assert report, "the backlog did not finish"
    assert len(kills) >= 5 and max(gaps) <= KILL_EVERY_S
    docs = {path.stem: JobDocument.from_json(path.read_bytes()) for path in out.glob("chaos-*.json")}
    assert sorted(docs) == sorted(expected)  # exactly one document per job, none missing
    failed = {j: d.error for j, d in docs.items() if d.status is not JobStatus.SUCCEEDED}
    assert not failed, failed
    wrong = [j for j, d in docs.items() if d.result != expected[j]]
    assert not wrong, f"{len(wrong)} jobs answered differently in process: {wrong[:5]}"
    assert drained, "messages left on the broker after every job finished"
