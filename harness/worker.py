"""``celery -A workers worker`` as a subprocess in its own process group, logging to a file."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

from harness.processes import stop_process_group
from harness.s3 import AWS_TEST_CREDENTIALS, S3Endpoint

ROOT = Path(__file__).resolve().parent.parent
# A features sealing key for one test or benchmark session, shared with the workers it starts.
TEST_FEATURES_KEY = "test-session:" + secrets.token_hex(32)


def worker_env(broker_url: str, s3: S3Endpoint, model_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a worker subprocess: this process's, minus every ``KYC_`` variable (a
    developer's own settings must not leak in), plus the given broker, S3 endpoint and models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")}
    env.update(AWS_TEST_CREDENTIALS)
    env.update(
        {
            "KYC_BROKER_URL": broker_url,
            "KYC_S3_ENDPOINT_URL": s3.url,
            "KYC_S3_BUCKET": s3.bucket,
            "KYC_MODEL_DIR": str(model_dir),
            # The caller's key, so features it seals verify in the worker and the other way round.
            "KYC_FEATURES_KEY": os.environ.get("KYC_FEATURES_KEY", TEST_FEATURES_KEY),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if s3.results_bucket:
        env["KYC_S3_RESULTS_BUCKET"] = s3.results_bucket
    env.update(overrides)
    return env


class CeleryWorker:
    """A Celery worker subprocess; :meth:`start` returns once every pool child is ready.

    ``pool="solo"`` runs the tasks in the worker's own process (one at a time, whatever
    ``concurrency`` says); ``pool_pids`` is then that process.

    Readiness is read from the worker's INFO log, so keep ``loglevel`` at INFO or below.
    """

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        concurrency: int = 2,
        queues: str = "kyc.heavy,kyc.light,kyc.webhooks",
        loglevel: str = "INFO",
        extra_args: list[str] | None = None,
        pool: str = "prefork",
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.concurrency = concurrency
        self.queues = queues
        self.loglevel = loglevel
        self.extra_args = extra_args or []
        self.pool = pool
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the worker and wait until it and its children have loaded and warmed the models.

        Raises:
            RuntimeError: the worker exited during start-up (its log's tail attached).
            TimeoutError: not ready within ``timeout_s``; the worker is stopped first.
        """
        args = [
            sys.executable, "-m", "celery", "-A", "workers", "worker", "--pool", self.pool,
            "-c", str(self.concurrency), "-Q", self.queues, "--loglevel", self.loglevel,
            "-n", f"kyc-test-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
            "--without-heartbeat", *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log()
            # A solo worker is one process: it loads its models once ready, as a pool child would;
            # a thread pool (the webhook queue's) loads none.
            processes = {"solo": 1, "threads": 0}.get(self.pool, self.concurrency)
            if " ready." in text and text.count("worker process ") >= processes:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {self.proc.returncode}:\n{text[-4000:]}")
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"celery worker not ready after {timeout_s}s:\n{self.log()[-4000:]}")

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the worker is not running")
        return self.proc.pid

    def pool_pids(self) -> set[int]:
        """Pids of the pool processes (the main process's children); empty once it is gone."""
        import psutil

        if self.proc is None:
            return set()
        if self.pool == "solo":
            return {self.proc.pid}
        try:
            return {p.pid for p in psutil.Process(self.proc.pid).children()}
        except psutil.NoSuchProcess:
            return set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, grace_s: float = 30.0) -> None:
        """Warm shutdown of the whole process group; SIGKILL after ``grace_s``."""
        if self.proc is not None:
            stop_process_group(self.proc, grace_s=grace_s)
        self.proc = None
