"""The Celery app's production settings, and a worker that refuses to start misconfigured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import Settings
from tests.conftest import ROOT
from workers import routes
from workers.app import create_app, lock_ttl_s, visibility_timeout_s


def test_at_least_once_settings() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", task_soft_time_limit_s=50, task_time_limit_s=80)
    conf = create_app(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.task_acks_on_timeout is False
    assert conf.worker_prefetch_multiplier == 1
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (50, 80)
    # Redelivery of a reserved message must wait for the hard limit and the longest countdown.
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert visibility == visibility_timeout_s(settings) > lock_ttl_s(settings) > 80
    assert conf.worker_proc_alive_timeout >= 60
    assert conf.task_routes == routes.task_routes()
    assert {q.name for q in conf.task_queues} == {"kyc.heavy", "kyc.light"}


def test_routes() -> None:
    assert routes.route("faces") == ("kyc.jobs.faces", routes.HEAVY_QUEUE)
    assert routes.route("verify")[1] == routes.HEAVY_QUEUE
    assert routes.route("match")[1] == routes.LIGHT_QUEUE
    with pytest.raises(KeyError):
        routes.route("unknown")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "KYC_BROKER_URL is not set"),
        (
            {"KYC_BROKER_URL": "redis://127.0.0.1:1/0", "KYC_TASK_SOFT_TIME_LIMIT_S": "100"},
            "SOFT_TIME_LIMIT_S must be below",
        ),
    ],
)
def test_worker_refuses_to_start_misconfigured(env: dict[str, str], message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")} | env
    args = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-c", "1", "--loglevel", "WARNING"]
    done = subprocess.run(args, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert message in done.stderr


def test_worker_refuses_to_start_without_models(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")}
    env |= {"KYC_BROKER_URL": "redis://127.0.0.1:1/0", "KYC_MODEL_DIR": str(tmp_path)}
    args = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-c", "1", "--loglevel", "WARNING"]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "not found" in done.stderr and "KYC_MODEL_DIR" in done.stderr
