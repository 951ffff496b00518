"""Fault-injection harness: a test-owned redis-server with AOF, moto S3 with small photos, real
Celery worker subprocesses that the tests kill and restart, and helpers to watch many jobs.

Every test here owns its Redis (so it may kill it) and starts its workers through
:func:`worker_running`, which stops them, and any pool process orphaned by a SIGKILLed parent,
whatever the test did.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import psutil
import pytest
import redis

from harness import CeleryWorker, RedisServer, S3Endpoint, stop_process_group
from shared import keys
from shared.config import Settings
from shared.jobs import JobDocument
from shared.producer import Producer
from tests.conftest import ROOT, load_photos, need, pipeline_env, start_worker

SMALL_SIDE_PX = 360
SMALL_PREFIX = "small/"

# Worker settings for fault tests: time limits and margins small enough that a message lost
# with its worker comes back within seconds (visibility timeout = 5 + 7 + 2 = 14 s), retries fast.
FAST_RECOVERY = {
    "KYC_TASK_SOFT_TIME_LIMIT_S": "4",
    "KYC_TASK_TIME_LIMIT_S": "5",
    "KYC_LOCK_MARGIN_S": "2",
    "KYC_REDELIVERY_MARGIN_S": "2",
    "KYC_UNACKED_RESTORE_INTERVAL_S": "1",
    "KYC_RETRY_BACKOFF_S": "0.2",
    "KYC_RETRY_BACKOFF_MAX_S": "1",
}


def shrink(data: bytes, side_px: int = SMALL_SIDE_PX) -> bytes:
    """The photo re-encoded as a JPEG no larger than ``side_px``: the same faces, faster jobs."""
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    h, w = image.shape[:2]
    scale = min(1.0, side_px / max(h, w))
    small = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf.tobytes())


@pytest.fixture(scope="session")
def small_photos() -> dict[str, bytes]:
    """Object key (under ``small/``) -> bytes of every photo of ../shared/faces, shrunk."""
    return {f"{SMALL_PREFIX}{p.file}.jpg": shrink(p.path.read_bytes()) for p in load_photos()}


@pytest.fixture()
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server owned by this test alone: AOF with fsync on every write, noeviction."""
    import shutil

    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        yield server


@pytest.fixture()
def photo_bucket(s3: S3Endpoint, small_photos: dict[str, bytes]) -> S3Endpoint:
    """Fresh buckets (the ``s3`` fixture) holding the small photos."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1")
    for key, data in small_photos.items():
        client.put_object(Bucket=s3.bucket, Key=key, Body=data)
    return s3


def ref(key: str, bucket: str = "kyc-images") -> str:
    return f"s3://{bucket}/{key}"


def producer_for(redis_url: str, s3: S3Endpoint, **overrides: object) -> Producer:
    values: dict[str, object] = {
        "broker_url": redis_url,
        "s3_endpoint_url": s3.url,
        "s3_bucket": s3.bucket,
        "s3_results_bucket": s3.results_bucket,
    }
    values.update(overrides)
    return Producer(Settings(**values))  # type: ignore[arg-type]


# --- workers ------------------------------------------------------------------------------------


def kill_quietly(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids: Iterable[int], timeout_s: float = 15.0) -> None:
    """Wait for processes to exit; SIGKILL the ones still there (they are ours) at the deadline."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        kill_quietly(proc.pid)
    psutil.wait_procs(alive, timeout=5)


@contextmanager
def worker_running(
    env: dict[str, str], log_path: Path, concurrency: int = 2, timeout_s: float = 90.0, loglevel: str = "INFO"
) -> Iterator[CeleryWorker]:
    """A started ``celery -A workers worker``; stopped on exit with every process it forked."""
    worker = start_worker(env, log_path, concurrency, timeout_s, loglevel=loglevel)
    main = worker.pid
    seen = worker.pool_pids()
    try:
        yield worker
    finally:
        if worker.proc is not None:
            seen |= worker.pool_pids()
            if worker.proc.poll() is not None:
                worker.proc = None  # the main process is gone; only orphans may be left
        worker.stop()
        wait_gone(seen | {main}, timeout_s=10)


def fault_env(redis_url: str, s3: S3Endpoint, **overrides: str) -> dict[str, str]:
    return pipeline_env(redis_url, s3, **{**FAST_RECOVERY, **overrides})


# --- watching jobs ------------------------------------------------------------------------------


def busy_pool_pids(client: redis.Redis, pool: set[int]) -> list[int]:
    """Pool processes holding a job's run lock right now (the token is host:pid:nonce)."""
    found = []
    for key in client.scan_iter(match=keys.JOB_LOCK_PREFIX + "*", count=100):
        holder: bytes | None = client.get(key)  # type: ignore[assignment]
        if holder is not None and (pid := int(holder.decode().split(":")[1])) in pool and pid not in found:
            found.append(pid)
    return found


def documents(client: redis.Redis, job_ids: list[str]) -> dict[str, JobDocument | None]:
    """Each job's document as stored in Redis now (one MGET per 500 ids)."""
    out: dict[str, JobDocument | None] = {}
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        raws = client.mget([keys.job_key(j) for j in chunk])
        out.update({j: None if raw is None else JobDocument.from_json(raw) for j, raw in zip(chunk, raws, strict=True)})
    return out


def wait_terminal(
    client: redis.Redis,
    job_ids: list[str],
    timeout_s: float,
    poll_s: float = 0.25,
    between: Callable[[], None] | None = None,
) -> dict[str, JobDocument]:
    """Poll until every job is ``succeeded`` or ``failed``; ``between`` runs after each poll.

    Raises:
        TimeoutError: naming how many jobs are unfinished, and in which state.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        docs = documents(client, job_ids)
        pending = {j: d for j, d in docs.items() if d is None or not d.status.terminal}
        if not pending:
            return {j: d for j, d in docs.items() if d is not None}
        if time.monotonic() >= deadline:
            states: dict[str, int] = {}
            for d in pending.values():
                name = "missing" if d is None else d.status.value
                states[name] = states.get(name, 0) + 1
            sample = {j: (d.status.value, d.attempts) if d else None for j, d in list(pending.items())[:5]}
            raise TimeoutError(
                f"{len(pending)} of {len(job_ids)} jobs unfinished after {timeout_s}s: {states} {sample}"
            )
        if between is not None:
            between()
        time.sleep(poll_s)


def queue_is_drained(client: redis.Redis) -> bool:
    """No message left on the job queues nor reserved (kombu's ``unacked`` hash)."""
    return client.llen("kyc.heavy") == 0 and client.llen("kyc.light") == 0 and client.hlen("unacked") == 0


def wait_drained(client: redis.Redis, timeout_s: float = 30.0) -> bool:
    """:func:`queue_is_drained`, polled until it holds or ``timeout_s`` passed: whether it holds."""
    deadline = time.monotonic() + timeout_s
    while not queue_is_drained(client) and time.monotonic() < deadline:
        time.sleep(0.5)
    return queue_is_drained(client)


@contextmanager
def beat_running(env: dict[str, str], workdir: Path, timeout_s: float = 30.0) -> Iterator[Path]:
    """``celery -A workers beat`` (the periodic sweeper) as a subprocess; yields its log path."""
    import subprocess
    import sys

    log_path = workdir / "celery-beat.log"
    args = [
        sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel", "INFO",
        "--schedule", str(workdir / "celerybeat-schedule"),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while "beat: Starting" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery beat did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield log_path
    finally:
        stop_process_group(proc, grace_s=10)
