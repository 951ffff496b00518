"""At DEBUG, the S3 client's logs carry no credential, signature or signed header."""

from __future__ import annotations

import logging

import pytest

from shared.config import Settings
from shared.errors import ObjectNotFoundError
from shared.storage import s3 as s3_module
from shared.storage.s3 import S3Store
from tests.conftest import S3Endpoint

ACCESS_KEY = "AKIAKYCLOGTEST000001"
SECRET_KEY = "kycLogTestSecret/0123456789abcdefghijKLMN"
# moto's server runs in the test process; its records are the far end of the wire, not ours.
SERVER_LOGGERS = ("moto", "werkzeug")


def test_s3_calls_at_debug_log_no_credentials(
    s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setattr(s3_module, "_clients", {})  # a client built here, from these credentials
    caplog.set_level(logging.DEBUG)
    # What an operator chasing an S3 problem would do: botocore, and its HTTP layer, at DEBUG.
    caplog.set_level(logging.DEBUG, logger="botocore")
    caplog.set_level(logging.DEBUG, logger="botocore.endpoint")
    caplog.set_level(logging.DEBUG, logger="botocore.auth")
    store = S3Store(Settings(s3_endpoint_url=s3.url, s3_allowed_buckets=[s3.bucket]))
    ref = f"s3://{s3.bucket}/log-test/photo.jpg"
    store.put(ref, b"\xff\xd8not really a photo")
    assert store.get(ref) == b"\xff\xd8not really a photo"
    assert store.put_new(ref, b"again") is False
    with pytest.raises(ObjectNotFoundError):
        store.get(f"s3://{s3.bucket}/log-test/missing.jpg")

    ours = [r for r in caplog.records if not r.name.startswith(SERVER_LOGGERS)]
    text = "\n".join(f"{r.levelname} {r.name} {r.getMessage()} {r.exc_text or ''}" for r in ours)
    # The capture did see DEBUG traffic of these calls (urllib3's request lines), and botocore
    # still logs at INFO (where it found the credentials), so the checks below look at real logs.
    assert any(r.levelno == logging.DEBUG and "log-test/photo.jpg" in r.getMessage() for r in ours), text
    assert any(r.name.startswith("botocore") and r.levelno == logging.INFO for r in ours), text
    for secret in ("Authorization", "Signature", "AWS4-HMAC-SHA256", "X-Amz-Security-Token", SECRET_KEY, ACCESS_KEY):
        assert secret not in text, f"{secret!r} in the DEBUG log"
    assert not any(r.name.startswith("botocore") and r.levelno < logging.INFO for r in ours)
