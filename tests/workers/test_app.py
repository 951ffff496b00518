"""The Celery app's production settings, and a worker that refuses to start misconfigured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import Settings
from shared.jobs import REGISTRY
from tests.conftest import ROOT
from workers.app import create_app, lock_ttl_s, visibility_timeout_s


def test_at_least_once_settings() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", task_soft_time_limit_s=50, task_time_limit_s=80)
    conf = create_app(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.task_acks_on_failure_or_timeout is True
    # A process reserves one batch of messages (one message when batching is off).
    assert conf.worker_prefetch_multiplier == settings.batch_size
    assert create_app(settings.model_copy(update={"batch_size": 1})).conf.worker_prefetch_multiplier == 1
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (50, 80)
    # Redelivery of a reserved message must wait for the hard limit and the longest countdown.
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert visibility == visibility_timeout_s(settings) > lock_ttl_s(settings) > 80
    assert conf.worker_proc_alive_timeout >= 60
    assert {spec.task: {"queue": spec.queue} for spec in REGISTRY}.items() <= conf.task_routes.items()
    assert {q.name for q in conf.task_queues} == {"kyc.heavy", "kyc.light", "kyc.webhooks"}


def test_every_kind_has_its_task_on_its_queue() -> None:
    from workers import tasks

    routes = {spec.name: (spec.task, spec.queue) for spec in REGISTRY}
    assert routes["faces"] == ("kyc.jobs.faces", "kyc.heavy")
    assert routes["verify"][1] == routes["enroll"][1] == routes["search"][1] == "kyc.heavy"
    assert routes["match"][1] == routes["delete"][1] == routes["forget"][1] == "kyc.light"
    assert all(task in tasks.app.tasks for task, _ in routes.values())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "KYC_BROKER_URL is not set"),
        (
            {"KYC_BROKER_URL": "redis://127.0.0.1:1/0", "KYC_TASK_SOFT_TIME_LIMIT_S": "100"},
            "SOFT_TIME_LIMIT_S must be below",
        ),
        # No features key and no explicit development setting: never a key nobody else shares.
        ({"KYC_BROKER_URL": "redis://127.0.0.1:1/0"}, "KYC_FEATURES_KEY is not set"),
        ({"KYC_BROKER_URL": "redis://127.0.0.1:1/0", "KYC_FEATURES_KEY": "k:short"}, "at least 32 characters"),
    ],
)
def test_worker_refuses_to_start_misconfigured(env: dict[str, str], message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")} | env
    args = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-c", "1", "--loglevel", "WARNING"]
    done = subprocess.run(args, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)
    assert done.returncode == 78  # EX_CONFIG, from the start-up check inside Celery
    assert message in done.stderr


def test_worker_refuses_to_start_without_models(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")}
    env |= {
        "KYC_BROKER_URL": "redis://127.0.0.1:1/0",
        "KYC_MODEL_DIR": str(tmp_path),
        "KYC_FEATURES_EPHEMERAL_KEY": "true",
    }
    args = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-c", "1", "--loglevel", "WARNING"]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 78  # EX_CONFIG, from the start-up check inside Celery
    assert "not found" in done.stderr and "KYC_MODEL_DIR" in done.stderr
