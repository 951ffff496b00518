"""``kycface api-key new`` and the CLI's ``--tenant``, as an operator runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from api_stub.app import create_app
from shared.config import Settings
from shared.tenants import api_key_hash

pytestmark = pytest.mark.services


def kycface(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )


def mint(*args: str) -> tuple[str, dict[str, dict[str, object]]]:
    run = kycface("api-key", "new", *args)
    assert run.returncode == 0, run.stderr
    key_line, entry_line = run.stdout.splitlines()
    key = key_line.removeprefix("key: ")
    entry: dict[str, dict[str, object]] = json.loads(entry_line.removeprefix("KYC_API_KEYS entry: "))
    return key, entry


def test_a_minted_key_is_printed_once_and_configured_by_its_hash(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, entry = mint("--tenant", "acme", "--scopes", "jobs:submit,jobs:read", "--key-id", "acme-1")
    assert key.startswith("kyc_") and len(key) >= 4 + 43  # 256 random bits, base64url
    assert entry == {"acme-1": {"sha256": api_key_hash(key), "tenant": "acme", "scopes": ["jobs:read", "jobs:submit"]}}
    assert key not in json.dumps(entry)
    assert mint("--scopes", "review")[0] != key  # fresh randomness each time
    monkeypatch.setenv("KYC_API_KEYS", json.dumps(entry))
    monkeypatch.setenv("KYC_BROKER_URL", redis_url)
    with TestClient(create_app(Settings()), headers={"X-API-Key": key}) as client:
        doc = client.post("/v1/jobs", json={"kind": "faces", "image": "s3://kyc-images/a.jpg"}).json()
        assert doc["tenant"] == "acme"
        assert client.get(f"/v1/jobs/{doc['job_id']}").status_code == 200
        enroll = {"kind": "enroll", "gallery": "g", "face_id": "x", "probe": "s3://kyc-images/a.jpg"}
        assert client.post("/v1/jobs", json=enroll).status_code == 403


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--scopes", "jobs:submit,admin"], "scopes are a comma-separated list of"),
        (["--scopes", "jobs:read", "--tenant", "a/b"], "tenant must be"),
        (["--tenant", "acme"], "--scopes"),
    ],
)
def test_bad_mint_requests_are_usage_errors(args: list[str], why: str) -> None:
    run = kycface("api-key", "new", *args)
    assert run.returncode == 2 and why in run.stderr and run.stdout == ""


def test_submit_and_status_take_a_tenant(redis_url: str) -> None:
    env = {"KYC_BROKER_URL": redis_url}
    submitted = kycface("submit", "faces", "s3://kyc-images/a.jpg", "--job-id", "cli-1", "--tenant", "acme", **env)
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["tenant"] == "acme"
    found = kycface("status", "cli-1", "--tenant", "acme", **env)
    assert found.returncode == 0 and json.loads(found.stdout)["job_id"] == "cli-1"
    elsewhere = kycface("status", "cli-1", **env)  # the default tenant has no such job
    assert elsewhere.returncode == 1 and "no job 'cli-1'" in elsewhere.stderr
