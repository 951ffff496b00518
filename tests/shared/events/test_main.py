"""``kycface events`` (and ``python -m shared.events``) wired from the environment alone, as a
deployment runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from tests.conftest import ROOT, S3Endpoint, pipeline_env
from tests.shared.events.conftest import RULES, job_ids

pytestmark = pytest.mark.services


CLI = "from shared.cli.main import main; raise SystemExit(main())"


@pytest.mark.parametrize("command", [["-m", "shared.events"], ["-c", CLI, "events"]], ids=["module", "kycface"])
def test_the_service_consumes_from_the_environment(
    command: list[str], redis_url: str, s3: S3Endpoint, client: redis.Redis
) -> None:
    client.xadd("kyc:intake", {"kind": "faces", "image": "s3://kyc-images/a.jpg", "job_id": "cli-1:faces"})
    client.rpush("kyc:bucket-events", json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}))
    env = pipeline_env(
        redis_url,
        s3,
        KYC_EVENT_RULES=json.dumps([rule.model_dump() for rule in RULES]),
        KYC_EVENTS_BLOCK_MS="50",
    )
    run = subprocess.run(
        [sys.executable, *command, "--max-batches", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert job_ids(client) == ["cli-1:faces"]
    assert "'created': 1" in run.stderr and "'ignored': 1" in run.stderr
