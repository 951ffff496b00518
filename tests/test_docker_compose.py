"""The compose file: valid for the docker CLI when one is installed, and wired as operations expect."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = ROOT / "docker" / "docker-compose.yml"


def compose_cli() -> list[str] | None:
    """``docker compose`` (v2 plugin) or ``docker-compose`` (v1), whichever is installed."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return spec


def test_the_docker_cli_accepts_the_compose_file() -> None:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI installed")  # optional tooling, even in CI
    run = subprocess.run([*cli, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_every_role_is_there(compose: dict[str, Any]) -> None:
    assert {"redis", "minio", "minio-init", "worker", "worker-light", "beat", "api", "flower"} <= set(
        compose["services"]
    )


def test_redis_keeps_queued_work(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


def test_models_are_mounted_into_workers_only(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("worker", "worker-light"):
        assert any(v.endswith(":/models:ro") for v in services[name]["volumes"]), name
    assert "volumes" not in services["api"]
    for dockerfile in ("Dockerfile.worker", "Dockerfile.api"):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert "\nUSER kyc" in text, dockerfile
        assert ".onnx" not in text, f"{dockerfile} must not bake model weights"


def test_services_are_wired_by_kyc_settings(compose: dict[str, Any]) -> None:
    from shared.config import Settings

    known = {f"KYC_{name.upper()}" for name in Settings.model_fields}
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        unknown = {k for k in env if k.startswith("KYC_")} - known
        assert not unknown, f"{name} sets unknown settings {unknown}"
    for name in ("worker", "worker-light", "beat", "api"):
        assert compose["services"][name]["environment"]["KYC_BROKER_URL"] == "redis://redis:6379/0"


def test_dockerfiles_copy_what_the_package_needs() -> None:
    # What the wheel ships (pyproject's package list), not every folder with an __init__ (bench, tests).
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    for dockerfile in ("Dockerfile.worker", "Dockerfile.api"):
        text = (ROOT / "docker" / dockerfile).read_text()
        for package in packages:
            assert f"COPY {package} ./{package}" in text, (dockerfile, package)


def test_minio_notifies_the_events_service_through_redis(compose: dict[str, Any]) -> None:
    from shared.config import Settings

    services = compose["services"]
    minio = services["minio"]["environment"]
    assert minio["MINIO_NOTIFY_REDIS_ENABLE_KYC"] == "on" and minio["MINIO_NOTIFY_REDIS_FORMAT_KYC"] == "access"
    events = services["events"]["environment"]
    assert minio["MINIO_NOTIFY_REDIS_KEY_KYC"] == events["KYC_EVENTS_BUCKET_KEY"]
    assert minio["MINIO_NOTIFY_REDIS_ADDRESS_KYC"] == "redis:6379" and events["KYC_EVENTS_BUCKET_SOURCE"] == "list"
    init = services["minio-init"]["command"][0]
    assert init.count("mc event add --ignore-existing local/kyc-images arn:minio:sqs::kyc:redis") == 2
    # The rule table parses as the events service will read it.
    rules = Settings(event_rules=json.loads(events["KYC_EVENT_RULES"])).event_rules
    assert [r.kind for r in rules] == ["verify", "enroll"]


def test_metrics_are_scraped_and_the_dashboard_shows_the_series(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("worker", "worker-light"):
        assert services[name]["environment"]["KYC_METRICS_PORT"] == "9100", name
    assert services["api"]["environment"]["KYC_API_METRICS"] == "true"
    scrape = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())["scrape_configs"]
    workers = next(c for c in scrape if c["job_name"] == "kyc-worker")["dns_sd_configs"][0]
    assert set(workers["names"]) == {"worker", "worker-light"} and workers["port"] == 9100
    assert any(v.endswith(":/var/lib/grafana/dashboards/kycdeepface.json:ro") for v in services["grafana"]["volumes"])
    dashboard = json.loads((ROOT / "docker" / "grafana" / "kycdeepface.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for series in ("kyc_jobs_total", "kyc_job_stage_seconds_bucket", "kyc_queue_depth", "kyc_batch_size_bucket",
                   "kyc_model_info"):  # fmt: skip
        assert series in exprs, series


def test_no_default_features_key_and_results_expire_with_their_jobs(compose: dict[str, Any]) -> None:
    env = compose["x-kyc-env"]
    assert env["KYC_FEATURES_KEY"].startswith("${KYC_FEATURES_KEY:?")  # compose stops without one
    init = " ".join(compose["services"]["minio-init"]["command"])
    assert "mc ilm import local/kyc-results" in init and '"Key":"kyc-expire-days"' in init
    assert compose["services"]["minio-init"]["environment"]["KYC_JOB_TTL_S"] == env["KYC_JOB_TTL_S"]


def test_workers_have_time_to_drain_before_the_sigkill(compose: dict[str, Any]) -> None:
    """A worker's warm shutdown lasts at most the hard time limit: compose must wait longer."""
    from shared.config import Settings

    limit_s = Settings.model_fields["task_time_limit_s"].default
    for name in ("worker", "worker-light"):
        grace = compose["services"][name]["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) >= limit_s + 20, (name, grace)
    assert compose["services"]["beat"]["command"][:2] == ["kycface", "beat"]  # its refusals have a status


def test_webhooks_have_their_own_queue_and_thread_pool(compose: dict[str, Any]) -> None:
    from shared.jobs.registry import WEBHOOK_QUEUE
    from workers.app import WEBHOOK_TASK, app

    services = compose["services"]
    command = services["worker-webhooks"]["command"]
    assert command[command.index("--queues") + 1] == WEBHOOK_QUEUE and command[command.index("--pool") + 1] == "threads"
    for name in ("worker", "worker-light"):  # the job workers never consume deliveries
        assert WEBHOOK_QUEUE not in services[name]["command"], name
    assert app.conf.task_routes[WEBHOOK_TASK] == {"queue": WEBHOOK_QUEUE}
