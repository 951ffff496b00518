"""Fixtures shared by every test: real models, real photos, and real services on loopback.

Services (redis-server, an S3 endpoint) are started by the fixtures on free ports, so tests never
touch a developer's data and every session starts clean. Where a service cannot be started the
test is skipped locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FACES_DIR = SHARED / "faces"
LFW_DIR = SHARED / "lfw-calib"
LIVENESS_DIR = SHARED / "liveness"
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, why: str) -> None:
    """Skip locally, fail in CI: a missing prerequisite must never turn CI green."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI is missing a prerequisite: {why}")
        pytest.skip(why)


@dataclass(frozen=True)
class Photo:
    file: str
    identity: str
    faces_expected: str
    path: Path

    @property
    def min_faces(self) -> int:
        return int(self.faces_expected.rstrip("+"))

    @property
    def exact(self) -> bool:
        return not self.faces_expected.endswith("+")


def load_photos() -> list[Photo]:
    with (FACES_DIR / "labels.csv").open() as fh:
        return [Photo(r["file"], r["identity"], r["faces_expected"], FACES_DIR / r["file"]) for r in csv.DictReader(fh)]


@pytest.fixture(scope="session")
def photos() -> list[Photo]:
    need((FACES_DIR / "labels.csv").is_file(), f"face photos not found at {FACES_DIR}")
    return load_photos()


@pytest.fixture(scope="session")
def settings() -> Settings:
    s = Settings()
    need(s.model_dir.is_dir(), f"model directory {s.model_dir} not found (set KYC_MODEL_DIR)")
    return s


@pytest.fixture(scope="session")
def engine(settings: Settings):  # type: ignore[no-untyped-def]
    from shared.engine import KYCDeepFace

    return KYCDeepFace(settings=settings)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


class RedisServer:
    """A private redis-server; ``stop()``/``start()`` simulate a crash and restart on the same port."""

    def __init__(self, workdir: Path, appendonly: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always", "--maxmemory-policy", "noeviction", "--loglevel", "warning",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self, hard: bool = True) -> None:
        if self.proc is not None:
            if hard:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    with tempfile.TemporaryDirectory(prefix="kyc-redis-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        yield server
        server.stop()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the session's private Redis."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    bucket: str = "kyc-images"
    results_bucket: str = "kyc-results"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    """moto's standalone S3 HTTP server on loopback: boto3 talks real HTTP to it."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        need(False, "moto[server] is not installed")
        raise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_port(port)
    yield S3Endpoint(url=f"http://127.0.0.1:{port}")
    server.stop()


@pytest.fixture()
def s3(s3_server: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Endpoint]:
    """Fresh buckets on the S3 endpoint, and AWS credentials for boto3's usual chain."""
    import boto3

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1")
    # moto's reset endpoint wipes every bucket between tests.
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{s3_server.url}/moto-api/reset", method="POST")).close()
    client.create_bucket(Bucket=s3_server.bucket)
    client.create_bucket(Bucket=s3_server.results_bucket)
    yield s3_server


# --- Celery workers (pipeline tests) -----------------------------------------------------------


def pipeline_env(broker_url: str, s3: S3Endpoint, **overrides: str) -> dict[str, str]:
    """Environment for a worker subprocess: the test's Redis and S3, the real models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")}
    env.update(
        {
            "KYC_BROKER_URL": broker_url,
            "KYC_S3_ENDPOINT_URL": s3.url,
            "KYC_S3_BUCKET": s3.bucket,
            "KYC_S3_RESULTS_BUCKET": s3.results_bucket,
            "KYC_MODEL_DIR": str(Settings().model_dir),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class CeleryWorker:
    """``celery -A workers worker`` as a subprocess in its own process group, logging to a file."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        concurrency: int = 2,
        queues: str = "kyc.heavy,kyc.light",
        loglevel: str = "INFO",
    ):
        self.env = env
        self.loglevel = loglevel
        self.log_path = log_path
        self.concurrency = concurrency
        self.queues = queues
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        import sys
        import uuid

        args = [
            sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", "prefork",
            "-c", str(self.concurrency), "-Q", self.queues, "--loglevel", self.loglevel,
            "-n", f"kyc-test-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat",
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log()
            # The pool is up, and every child has loaded and warmed its models.
            if " ready." in text and text.count("worker process ") >= self.concurrency:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {self.proc.returncode}:\n{text[-4000:]}")
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"celery worker not ready after {timeout_s}s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, grace_s=30)
        self.proc = None


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group a test started (``start_new_session``), SIGKILL after ``grace_s``."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # warm shutdown: Celery finishes or requeues its jobs
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextmanager
def celery_worker(env: dict[str, str], log_dir: Path, concurrency: int = 2) -> Iterator[CeleryWorker]:
    """A started worker for the duration of the block (use from a module- or session-scoped fixture)."""
    need(Settings().model_dir.is_dir(), "models not found (set KYC_MODEL_DIR)")
    worker = CeleryWorker(env, log_dir / "celery-worker.log", concurrency)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@contextmanager
def s3_with_photos(s3_server: S3Endpoint) -> Iterator[S3Endpoint]:
    """Like the ``s3`` fixture, for a wider scope: fresh buckets, the photos under ``faces/``."""
    import urllib.request

    import boto3

    need((FACES_DIR / "labels.csv").is_file(), f"face photos not found at {FACES_DIR}")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        }.items():  # fmt: skip
            mp.setenv(key, value)
        urllib.request.urlopen(urllib.request.Request(f"{s3_server.url}/moto-api/reset", method="POST")).close()
        client = boto3.client("s3", endpoint_url=s3_server.url, region_name="us-east-1")
        client.create_bucket(Bucket=s3_server.bucket)
        client.create_bucket(Bucket=s3_server.results_bucket)
        for photo in load_photos():
            client.put_object(Bucket=s3_server.bucket, Key=f"faces/{photo.file}", Body=photo.path.read_bytes())
        yield s3_server


def features_of(engine: Any, name: str) -> str:
    """The features of the single usable face of a photo of ``../shared/faces``."""
    from shared.schemas import FacesResult

    result = engine.get_faces((FACES_DIR / name).read_bytes())
    if not isinstance(result, FacesResult) or len(result.faces) != 1:
        raise AssertionError(f"{name}: expected one usable face, got {result}")
    return result.faces[0].features


@pytest.fixture(scope="module")
def photos_s3(s3_server: S3Endpoint) -> Iterator[S3Endpoint]:
    """The photos of ../shared/faces in the S3 bucket, for a module's worker."""
    with s3_with_photos(s3_server) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def broker_url(redis_server: RedisServer, request: pytest.FixtureRequest) -> str:
    """A clean Redis database for a module whose worker outlives single tests.

    The module names it with ``DB = n``; the function-scoped ``redis_url`` uses database 0.
    """
    import redis

    url = f"redis://127.0.0.1:{redis_server.port}/{int(request.module.DB)}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture()
def default_float_environment() -> Iterator[None]:
    """The thread's default floating-point environment for the test, restored after it.

    Every onnxruntime session sets ``session.set_denormal_as_zero`` (fr_feature is 7x slower
    without it), which flushes subnormals on the creating thread for the rest of the process.
    Hypothesis refuses to generate floats then; code that never loads a model (the HTTP stub)
    never runs that way in production, so its fuzz test runs with the default environment.
    """
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    saved = ctypes.create_string_buffer(256)  # larger than any libc's fenv_t
    libm.fegetenv(saved)
    libm.fesetenv(ctypes.c_void_p(-1))  # glibc's FE_DFL_ENV
    try:
        yield
    finally:
        libm.fesetenv(saved)
