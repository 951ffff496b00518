"""Data protection: no biometric data in logs, everything the pipeline writes to Redis expires,
erasure really erases, and credentials come only from settings and the environment.

Gallery erasure across processes (a ``delete`` in one KYCDeepFaceDB is seen by another's cached
index) is tested in tests/shared/test_gallery.py::test_delete_erases_everywhere; here we check the
bytes are gone from Redis and from its AOF files.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api_stub.app import create_app
from harness import RedisServer, S3Endpoint
from shared import keys
from shared.config import ApiKey, Settings, redact_url
from shared.engine import KYCDeepFace
from shared.gallery import KYCDeepFaceDB
from shared.jobs import JobStatus
from shared.schemas import FacesResult
from shared.tenants import DEFAULT_TENANT, Scope
from tests.conftest import ROOT
from tests.reliability.conftest import fault_env, producer_for, ref, wait_terminal, worker_running

pytestmark = pytest.mark.services

JOB_TTL_S = 8
API_KEY = "dp-test-key-5f2c9a"
ROOT_PACKAGES = ("shared", "workers", "api_stub")


def image_fingerprints(data: bytes) -> list[str]:
    """Strings that would appear in a log that printed (part of) these bytes: base64 at each of
    the three alignments, hex, and Python's bytes repr, all taken from the middle of the file."""
    mid = len(data) // 2
    out = [base64.b64encode(data[mid + k : mid + k + 48]).decode()[4:-4] for k in range(3)]
    out.append(data[mid : mid + 24].hex())
    out.append(repr(data[mid : mid + 24])[2:-1])
    return out


def features_fingerprints(features: str) -> list[str]:
    """A features string is base64 of the model id and the vector: any 24-character window."""
    return [features[i : i + 24] for i in range(0, len(features) - 24, 24)]


@pytest.mark.slow
def test_no_biometrics_in_debug_logs_and_every_job_key_expires(
    aof_redis: RedisServer,
    photo_bucket: S3Endpoint,
    small_photos: dict[str, bytes],
    engine: KYCDeepFace,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = ["small/fr_obama.jpg.jpg", "small/fr_biden.jpg.jpg", "small/df_couple.jpg.jpg"]
    feats = []
    for name in names:
        found = engine.get_faces(small_photos[name])
        assert isinstance(found, FacesResult) and found.faces
        feats.append(found.faces[0].features)
    env = fault_env(aof_redis.url, photo_bucket, KYC_JOB_TTL_S=str(JOB_TTL_S))
    client = redis.Redis.from_url(aof_redis.url)
    settings = Settings(
        broker_url=aof_redis.url,
        s3_endpoint_url=photo_bucket.url,
        job_ttl_s=JOB_TTL_S,
        api_keys={"dp": ApiKey.of(API_KEY, tuple(Scope))},
    )
    producer = producer_for(aof_redis.url, photo_bucket, job_ttl_s=JOB_TTL_S)
    no_ttl: set[str] = set()
    # The completion-event stream, the review stream and queue: trimmed by length, never expired.
    trimmed = (settings.events_completed_stream, settings.review_stream, keys.review_queue_key(DEFAULT_TENANT))

    def every_key_has_a_ttl() -> None:
        for key in client.scan_iter(match=keys.PREFIX + "*", count=500):
            name = key.decode()
            if name in (keys.jobs_unstarted_key(), keys.jobs_running_key()):
                continue  # job ids only, each removed at its claim / its end (checked below)
            if name in trimmed:
                continue  # trimmed by length, not time; what they carry is checked below
            ttl = client.ttl(name)
            if ttl == -1 or ttl > JOB_TTL_S:
                no_ttl.add(f"{name} ttl={ttl}")

    caplog.set_level(logging.DEBUG)
    try:
        with (
            worker_running(env, tmp_path / "worker.log", loglevel="DEBUG") as worker,
            TestClient(create_app(settings, producer), headers={"X-API-Key": API_KEY}) as api,
        ):
            ids = [producer.submit_faces(ref(n)).job_id for n in names]
            ids.append(producer.submit_verify(ref(names[0]), ref(names[1])).job_id)
            ids.append(producer.submit_match(feats[0], feats[1]).job_id)
            ids.append(producer.submit_faces(ref("small/no-such.jpg")).job_id)  # a failed job
            body = {"kind": "match", "features1": feats[2], "features2": feats[0]}
            posted = api.post("/v1/jobs", json=body)
            assert posted.status_code == 202
            ids.append(posted.json()["job_id"])
            bad = api.post("/v1/jobs", json={"kind": "match", "features1": feats[1], "features2": "x"})
            assert bad.status_code == 422
            final = wait_terminal(client, ids, timeout_s=30, poll_s=0.1, between=every_key_has_a_ttl)
            polled = api.get(f"/v1/jobs/{ids[-1]}")
            assert polled.status_code == 200 and polled.json()["status"] == "succeeded"
            every_key_has_a_ttl()
            result_features = [f["features"] for d in final.values() if d.result for f in d.result.get("faces", [])]
            assert client.zcard(keys.jobs_unstarted_key()) == 0
            assert client.zcard(keys.jobs_running_key()) == 0
            # Past the TTL nothing of these jobs is left: documents, inputs, attempt counters, locks.
            deadline = time.monotonic() + JOB_TTL_S + 5
            while list(client.scan_iter(match=keys.PREFIX + "job*")) and time.monotonic() < deadline:
                time.sleep(0.5)
            left = [k.decode() for k in client.scan_iter(match=keys.PREFIX + "*") if k.decode() not in trimmed]
            events = repr(client.xrange(settings.events_completed_stream))
            log_text = worker.log()
    finally:
        producer.close()

    assert {d.status for d in final.values()} == {JobStatus.SUCCEEDED, JobStatus.FAILED}
    assert not no_ttl, f"keys without a TTL (or above KYC_JOB_TTL_S): {sorted(no_ttl)}"
    assert left == [], left
    assert "DEBUG" in log_text and len(log_text) > 2000  # the worker did log at DEBUG
    api_log = "\n".join(r.getMessage() for r in caplog.records)
    # Positive controls: the fingerprints do find what they look for where it is (a faces result).
    assert any(fp in final[ids[0]].to_json() for fp in features_fingerprints(feats[0]))
    # A match job's document names its features by digest; a verify result keeps no template.
    for job in (ids[3], ids[4]):
        for f in feats:
            assert not any(fp in final[job].to_json() for fp in features_fingerprints(f)), final[job].kind
    assert all(any(fp in base64.b64encode(small_photos[n]).decode() for fp in image_fingerprints(small_photos[n]))
               for n in names)  # fmt: skip
    assert all(job_id in events for job_id in ids)  # every job published its event; no features in it:
    for where, text in (("worker log", log_text), ("API/producer log", api_log), ("completion events", events)):
        for name in names:
            for fp in image_fingerprints(small_photos[name]):
                assert fp not in text, f"{where} carries bytes of {name}"
        for f in feats + result_features:
            for fp in features_fingerprints(f):
                assert fp not in text, f"{where} carries a features string"


def test_gallery_delete_erases_the_template_from_redis_and_its_aof(
    aof_redis: RedisServer, settings: Settings, small_photos: dict[str, bytes], engine: KYCDeepFace
) -> None:
    found = engine.get_faces(small_photos["small/fr_obama.jpg.jpg"])
    assert isinstance(found, FacesResult)
    secret = found.faces[0].features
    other = engine.get_faces(small_photos["small/fr_biden.jpg.jpg"]).faces[0].features  # type: ignore[union-attr]
    gallery_settings = settings.model_copy(update={"redis_url": aof_redis.url, "gallery_store": "redis"})
    client = redis.Redis.from_url(aof_redis.url)
    with KYCDeepFaceDB("erasure", settings=gallery_settings) as db:
        assert db.set("person-1", secret)["code"] == "SUCCESS"
        assert db.set("person-2", other)["code"] == "SUCCESS"
        # At rest the templates are encrypted: what Redis and its AOF hold is the ciphertext.
        stored = {k.decode(): v for k, v in client.hgetall(keys.gallery_faces_key("erasure")).items()}
        assert secret.encode() not in stored["person-1"] and other.encode() not in stored["person-2"]
        assert db.find_face(secret)["found"] == "person-1"
        assert db.delete("person-1")["deleted"] is True
        assert db.find_face(secret)["found"] is None
    # Nothing in Redis holds the template any more (the change log holds face ids only).
    for key in client.scan_iter():
        dump = client.dump(key) or b""
        assert stored["person-1"] not in dump and secret.encode() not in dump, key
    # The AOF still has the old write until it is rewritten; after a rewrite it is gone.
    client.bgrewriteaof()
    deadline = time.monotonic() + 20
    while client.info("persistence")["aof_rewrite_in_progress"] or client.info("persistence")["aof_rewrite_scheduled"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    on_disk = b"".join(p.read_bytes() for p in aof_redis.workdir.rglob("*") if p.is_file())
    assert stored["person-1"] not in on_disk and secret.encode() not in on_disk
    assert stored["person-2"] in on_disk  # the check can see templates that are still there


# Things that look like credentials: AWS access key ids, secrets assigned in code, URLs with a
# password in them.
CREDENTIAL_PATTERNS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"(aws_secret_access_key|aws_access_key_id|password|secret)\s*[=:]\s*['\"][^'\"]{6,}['\"]", re.I),
    re.compile(r"redis[s]?://[^/\s:@]*:[^@\s/]+@"),
]


def test_no_credentials_in_the_code() -> None:
    files = [p for pkg in ROOT_PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    files += list((ROOT / "docker").glob("*"))
    assert len(files) > 30
    hits = [
        f"{path.relative_to(ROOT)}: {m.group(0)}"
        for path in files
        if path.is_file()
        for pattern in CREDENTIAL_PATTERNS
        for m in pattern.finditer(path.read_text(errors="replace"))
    ]
    assert hits == []
    # boto3 gets no explicit keys anywhere: credentials come from its usual chain (env, role).
    s3_code = (ROOT / "shared" / "storage" / "s3.py").read_text()
    assert "aws_access_key_id" not in s3_code and "aws_secret_access_key" not in s3_code


def test_settings_never_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYC_WEBHOOK_SECRETS", '{"acme": "key-one-4c1d", "beta": "key-two-99ab"}')
    monkeypatch.setenv("KYC_BROKER_URL", "redis://:hunter2-pass@redis.internal:6379/0")
    monkeypatch.setenv("KYC_REDIS_URL", "rediss://app:hunter2-pass@redis.internal:6380/1")
    settings = Settings()
    shown = repr(settings) + str(settings)
    for secret in ("key-one-4c1d", "key-two-99ab", "hunter2-pass"):
        assert secret not in shown
    assert "redis.internal" in shown  # redacted, not dropped
    assert [k.get_secret_value() for k in settings.webhook_secrets.values()] == ["key-one-4c1d", "key-two-99ab"]
    assert settings.broker_url == "redis://:hunter2-pass@redis.internal:6379/0"  # still usable
    assert redact_url("redis://u:p@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
