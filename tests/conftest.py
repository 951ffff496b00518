"""Fixtures shared by every test: real models, real photos, and real services on loopback.

Services (redis-server, an S3 endpoint) are started by the fixtures on free ports, so tests never
touch a developer's data and every session starts clean. Where a service cannot be started the
test is skipped locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import AWS_TEST_CREDENTIALS, TEST_FEATURES_KEY, CeleryWorker, MotoS3, RedisServer, S3Endpoint, worker_env
from shared.config import Settings

# Before any settings are read: this process and the workers it starts seal features alike.
os.environ["KYC_FEATURES_KEY"] = TEST_FEATURES_KEY

ROOT = Path(__file__).resolve().parent.parent  # the checkout
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


# --- services -----------------------------------------------------------------------------------

# Every module gets its own databases on the session's redis-server (see ``redis_url``).
REDIS_DATABASES = 256


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    with (
        tempfile.TemporaryDirectory(prefix="kyc-redis-") as tmp,
        RedisServer(Path(tmp), databases=REDIS_DATABASES) as server,
    ):
        yield server


@pytest.fixture(scope="session")
def _redis_databases(redis_server: RedisServer) -> Iterator[int]:
    """Database numbers not yet handed out on the session's server (0 stays unused)."""
    return itertools.count(1)


def _allocate_database(server: RedisServer, numbers: Iterator[int]) -> str:
    number = next(numbers)
    if number >= server.databases:
        raise RuntimeError(f"all {server.databases} Redis databases handed out: raise REDIS_DATABASES")
    return server.db_url(number)


@pytest.fixture(scope="module")
def module_redis_url(redis_server: RedisServer, _redis_databases: Iterator[int]) -> str:
    """The module's own database: no other module reads, writes or flushes it."""
    return _allocate_database(redis_server, _redis_databases)


@pytest.fixture()
def redis_url(module_redis_url: str) -> str:
    """The module's own database, emptied before each test (FLUSHDB of that database only)."""
    import redis

    with redis.Redis.from_url(module_redis_url) as client:
        client.flushdb()
    return module_redis_url


@pytest.fixture(scope="module")
def broker_url(redis_server: RedisServer, _redis_databases: Iterator[int]) -> str:
    """Another database of the module's own, for a worker that outlives single tests: ``redis_url``
    flushes its database before every test, this one is never flushed."""
    return _allocate_database(redis_server, _redis_databases)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """moto's standalone S3 HTTP server on loopback, for the session."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        need(False, "moto[server] is not installed")
    with MotoS3() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(moto_s3: MotoS3) -> S3Endpoint:
    return S3Endpoint(url=moto_s3.url)


@contextmanager
def aws_credentials() -> Iterator[None]:
    """AWS credentials for boto3's usual chain, for the block."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in AWS_TEST_CREDENTIALS.items():
            mp.setenv(key, value)
        yield


@pytest.fixture()
def s3(moto_s3: MotoS3, s3_server: S3Endpoint) -> Iterator[S3Endpoint]:
    """Fresh, empty buckets on the S3 endpoint, and AWS credentials for boto3's usual chain."""
    with aws_credentials():
        yield moto_s3.fresh(s3_server)


@pytest.fixture(scope="module")
def photos_s3(moto_s3: MotoS3, s3_server: S3Endpoint) -> Iterator[S3Endpoint]:
    """Fresh buckets holding the photos of ../shared/faces under ``faces/``, for a module's worker."""
    need((FACES_DIR / "labels.csv").is_file(), f"face photos not found at {FACES_DIR}")
    with aws_credentials():
        yield moto_s3.fresh(s3_server, {f"faces/{p.file}": p.path.read_bytes() for p in load_photos()})


# --- Celery workers ------------------------------------------------------------------------------

WORKER_TIERS = {"e2e", "reliability"}
_running: list[pytest.Item] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _running[:] = [item]  # before its fixtures, so a worker fixture knows which test asked for it


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reliability = ROOT / "tests" / "reliability"
    for item in items:
        if reliability in item.path.parents:
            item.add_marker(pytest.mark.reliability)


def require_worker_tier() -> None:
    """A real worker costs seconds: only the ``e2e`` and ``reliability`` tiers may start one."""
    if _running and not WORKER_TIERS & {m.name for m in _running[0].iter_markers()}:
        pytest.fail(f"{_running[0].nodeid} starts a Celery worker: mark it e2e (pytestmark = pytest.mark.e2e)")


def pipeline_env(broker_url: str, s3: S3Endpoint, **overrides: str) -> dict[str, str]:
    """Environment for a worker subprocess: the test's Redis and S3, the real models."""
    return worker_env(broker_url, s3, Settings().model_dir, **overrides)


def start_worker(
    env: dict[str, str], log_path: Path, concurrency: int = 2, timeout_s: float = 90.0, **options: Any
) -> CeleryWorker:
    """A started worker (the caller stops it), after the tier and model checks."""
    require_worker_tier()
    need(Settings().model_dir.is_dir(), "models not found (set KYC_MODEL_DIR)")
    worker = CeleryWorker(env, log_path, concurrency, **options)
    worker.start(timeout_s)
    return worker


@contextmanager
def celery_worker(env: dict[str, str], log_dir: Path, concurrency: int = 2, **options: Any) -> Iterator[CeleryWorker]:
    """A started worker for the duration of the block (use from a module- or session-scoped fixture)."""
    worker = start_worker(env, log_dir / "celery-worker.log", concurrency, **options)
    try:
        yield worker
    finally:
        worker.stop()


def features_of(engine: Any, name: str) -> str:
    """The features of the single usable face of a photo of ``../shared/faces``."""
    from shared.schemas import FacesResult

    result = engine.get_faces((FACES_DIR / name).read_bytes())
    if not isinstance(result, FacesResult) or len(result.faces) != 1:
        raise AssertionError(f"{name}: expected one usable face, got {result}")
    return result.faces[0].template()


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
