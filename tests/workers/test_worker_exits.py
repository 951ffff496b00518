"""``kycface worker``'s exit status once it has started: 0 for a warm shutdown (SIGTERM), 70 when
Celery gives up ("Could not start worker processes"), which ``app.worker_main`` used to turn
into 0, so a supervisor restarting ``on-failure`` left the queue without a consumer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from harness import ROOT, TEST_FEATURES_KEY, stop_process_group
from shared.config import Settings
from shared.exits import EX_OK, EX_SOFTWARE
from tests.conftest import require_worker_tier

pytestmark = [pytest.mark.e2e, pytest.mark.services]


@contextmanager
def kycface_worker(redis_url: str, log_path: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``kycface worker`` as a user runs it, in its own process group, stopped on the way out."""
    require_worker_tier()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")}
    env |= {
        "KYC_BROKER_URL": redis_url,
        "KYC_FEATURES_KEY": TEST_FEATURES_KEY,
        "KYC_MODEL_DIR": str(Settings().model_dir),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "shared.cli.main", "worker", "--loglevel", "INFO", *args]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop_process_group(proc, grace_s=20)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout_s}s:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.01)


def test_a_pool_that_cannot_start_ends_the_worker_with_status_70(redis_url: str, tmp_path: Path) -> None:
    log_path = tmp_path / "worker.log"
    killed: set[int] = set()
    with kycface_worker(redis_url, log_path, "-c", "2") as proc:

        def kill_each_pool_process() -> bool:
            # Every pool process as soon as it appears, while it still loads its models: Celery
            # checks once, when its event loop starts, that the pool came up.
            try:
                children = psutil.Process(proc.pid).children()
            except psutil.NoSuchProcess:
                children = []
            for child in children:
                if child.pid not in killed:
                    killed.add(child.pid)
                    os.kill(child.pid, signal.SIGKILL)
            return proc.poll() is not None

        wait_for(kill_each_pool_process, 90, "the worker did not exit", log_path)
    log = log_path.read_text(errors="replace")
    assert "Could not start worker processes" in log
    assert proc.returncode == EX_SOFTWARE, log[-3000:]
    assert killed


@pytest.mark.parametrize("moment", ["starting", "ready"])
@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_sigterm_is_a_clean_stop(redis_url: str, tmp_path: Path, pool: str, moment: str) -> None:
    """Status 0 whenever the SIGTERM comes: while a solo worker still loads its models (before
    Celery handles SIGTERM), or once it is ready (Celery's warm shutdown)."""
    log_path = tmp_path / "worker.log"
    marker = "worker process" if moment == "starting" else " ready."
    with kycface_worker(redis_url, log_path, "--pool", pool, "-c", "1") as proc:
        wait_for(lambda: marker in log_path.read_text(errors="replace"), 90, f"no {marker!r}", log_path)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == EX_OK, log_path.read_text(errors="replace")[-3000:]
