"""shared/config.py: KYC_ environment variables in, validated values out, secrets never printed.

Every test starts from an environment without any KYC_ variable, so a developer's own settings
cannot change the outcome.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from shared import config
from shared.config import Settings, redact_url
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KYC_"):
            monkeypatch.delenv(name)


def test_variables_are_read_with_the_prefix_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYC_DET_SCORE_THRESHOLD", "0.7")
    monkeypatch.setenv("KYC_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("KYC_EMBED_FLIP", "true")
    monkeypatch.setenv("KYC_MODEL_DIR", "/opt/models")
    monkeypatch.setenv("DET_SCORE_THRESHOLD", "0.1")  # no prefix: not ours
    s = Settings()
    assert (s.det_score_threshold, s.max_attempts, s.embed_flip) == (0.7, 5, True)
    assert s.model_dir == Path("/opt/models")


def test_list_settings_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYC_S3_ALLOWED_BUCKETS", '["selfies", "documents"]')
    monkeypatch.setenv("KYC_S3_BUCKET", "main")
    assert Settings().allowed_buckets() == {"selfies", "documents", "main"}
    monkeypatch.delenv("KYC_S3_ALLOWED_BUCKETS")
    assert Settings().allowed_buckets() == {"main"}  # by default only the configured bucket


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KYC_MAX_ATTEMPTS", "0"),
        ("KYC_DET_SCORE_THRESHOLD", "1.5"),
        ("KYC_VERIFY_CONFIDENCE", "-0.1"),
        ("KYC_RESULT_STORE", "postgres"),
        ("KYC_GALLERY_SHARDS", "zero"),
        ("KYC_JOB_TTL_S", "-1"),
    ],
)
def test_out_of_range_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert name.removeprefix("KYC_").lower() in str(caught.value)


def test_redis_url_defaults_to_the_broker() -> None:
    assert Settings(broker_url="redis://b:6379/0").resolved_redis_url() == "redis://b:6379/0"
    assert Settings(broker_url="redis://b/0", redis_url="redis://r/1").resolved_redis_url() == "redis://r/1"
    assert Settings().resolved_redis_url() is None


def test_passwords_and_api_keys_never_reach_a_repr() -> None:
    s = Settings(
        broker_url="redis://user:hunter2@broker:6379/0",
        s3_endpoint_url="https://minio:s3cret@s3.internal",
        webhook_secrets={"acme": SecretStr("key-material")},
    )
    shown = repr(s) + str(s)
    assert "hunter2" not in shown and "s3cret" not in shown and "key-material" not in shown
    assert "redis://user:***@broker:6379/0" in shown
    assert s.broker_url == "redis://user:hunter2@broker:6379/0"  # the value itself is intact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://u:pw@h/0", "redis://u:***@h/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("http://u@h", "http://u@h"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_onnx_threads_share_the_cores_between_worker_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config.os, "cpu_count", lambda: 8)
    assert Settings().worker_processes() == 8
    assert Settings().onnx_threads() == 1
    assert Settings(worker_concurrency=2).onnx_threads() == 4
    assert Settings(worker_concurrency=3).onnx_threads() == 2
    assert Settings(worker_concurrency=16).onnx_threads() == 1  # never 0
    assert Settings(worker_concurrency=2, intra_op_threads=3).onnx_threads() == 3  # explicit wins


def test_model_dir_defaults_to_the_checkouts_sibling() -> None:
    sibling = ROOT.parent / "shared" / "models"
    expected = sibling if sibling.is_dir() else Path.home() / ".cache" / "kycdeepface" / "models"
    assert Settings().model_dir == expected


def test_get_settings_builds_once() -> None:
    config.get_settings.cache_clear()
    try:
        assert config.get_settings() is config.get_settings()
    finally:
        config.get_settings.cache_clear()
