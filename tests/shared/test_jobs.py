"""Job documents and their Redis store: idempotent create, at-most-one running execution,
terminal documents final, the dead letter, and the S3 archive."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

import pytest
import redis

from harness import S3Endpoint, free_port
from shared import keys
from shared.config import Settings
from shared.errors import FeaturesError, JobError, ReferenceRejectedError, StorageUnavailableError
from shared.jobs import ClaimOutcome, JobDocument, JobFailure, JobStatus, JobStore
from shared.jobs.owner import execution_token, holder_is_dead

pytestmark = pytest.mark.services


def faces_job(job_id: str | None = "job-1") -> JobDocument:
    return JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, job_id)


@pytest.fixture()
def store(redis_url: str) -> JobStore:
    return JobStore(Settings(redis_url=redis_url, job_ttl_s=600))


# -- the document --------------------------------------------------------------------------------


def test_document_roundtrip_and_wire_format() -> None:
    doc = faces_job().running(1).succeeded({"code": "SUCCESS", "faces": [], "partial_faces": []}, {"fetch_s": 0.1})
    assert JobDocument.from_json(doc.to_json()) == doc
    wire = json.loads(doc.to_json())
    assert wire["schema_version"] == 1
    assert wire["status"] == "succeeded" and wire["kind"] == "faces"
    assert datetime.fromisoformat(wire["created_at"]).tzinfo is not None
    assert [s.value for s in JobStatus] == ["queued", "running", "succeeded", "failed"]


@pytest.mark.parametrize(
    ("kind", "inputs", "job_id", "error"),
    [
        ("faces", {}, None, JobError),
        ("faces", {"image": "s3://kyc-images/a.jpg", "extra": "x"}, None, JobError),
        ("faces", {"image": ""}, None, JobError),
        ("faces", {"image": "s3://kyc-images/../a.jpg"}, None, ReferenceRejectedError),
        ("launch", {"image": "a.jpg"}, None, JobError),
        ("match", {"features1": "b" * 20_000, "features2": "a"}, None, JobError),
        ("match", {"features1": "not base64!", "features2": "a"}, None, FeaturesError),
        ("faces", {"image": "a.jpg"}, "has space", JobError),
        ("faces", {"image": "a.jpg"}, "x" * 200, JobError),
    ],
)
def test_bad_requests_are_refused(kind: str, inputs: dict[str, str], job_id: str | None, error: type) -> None:
    with pytest.raises(error):
        JobDocument.new(kind, inputs, job_id)


def test_failure_record_never_echoes_unexpected_messages() -> None:
    failure = JobFailure.from_exception(ValueError("pixel data 0x89PNG..."))
    assert failure.type == "ValueError" and "0x89PNG" not in failure.message
    known = JobFailure.from_exception(JobError("bad request"))
    assert (known.code, known.type, known.message) == ("ERROR", "JobError", "bad request")


# -- the store -----------------------------------------------------------------------------------


def test_create_is_set_nx_with_ttl(store: JobStore, redis_url: str) -> None:
    first, created = store.create(faces_job())
    assert created
    again, created_again = store.create(faces_job())
    assert not created_again and again == first
    ttl = redis.Redis.from_url(redis_url).ttl(keys.job_key("job-1"))
    assert 0 < ttl <= 600


def test_claim_finish_and_terminal_states_are_final(store: JobStore) -> None:
    store.create(faces_job())
    claim = store.claim("job-1", "token-a", lock_ttl_s=60, max_attempts=3)
    assert claim.outcome is ClaimOutcome.CLAIMED and claim.doc is not None
    assert claim.doc.status is JobStatus.RUNNING and claim.doc.attempts == 1
    assert store.get("job-1") == claim.doc

    # A redelivery while the first execution runs must not start a second one.
    busy = store.claim("job-1", "token-b", lock_ttl_s=60, max_attempts=3)
    assert busy.outcome is ClaimOutcome.BUSY and 0 < busy.retry_in_s <= 60

    done = store.finish(claim.doc.succeeded({"code": "SUCCESS"}), "token-a")
    assert done.status is JobStatus.SUCCEEDED
    # A late second execution cannot replace the answer, whatever it computed.
    late = store.finish(claim.doc.failed(JobFailure(type="X", message="late")), "token-b")
    assert late == done and store.get("job-1") == done
    assert store.claim("job-1", "token-c", 60, 3).outcome is ClaimOutcome.DONE
    assert store.attempts("job-1") == 1


def test_a_claim_that_races_another_reads_again_and_never_runs_twice(store: JobStore, redis_url: str) -> None:
    store.create(faces_job())
    rival = JobStore(Settings(redis_url=redis_url, job_ttl_s=600))
    write = store._claim
    raced = []

    def racing(*args: object, **kwargs: object) -> object:
        if not raced:  # between this claim's read and its write, another execution claims the job
            raced.append(rival.claim("job-1", "token-rival", 60, 3))
        return write(*args, **kwargs)

    store._claim = racing  # type: ignore[method-assign]
    claim = store.claim("job-1", "token-a", 60, 3)
    assert raced[0].outcome is ClaimOutcome.CLAIMED
    # The write saw the change and refused; read again, the job is the rival's.
    assert claim.outcome is ClaimOutcome.BUSY
    assert redis.Redis.from_url(redis_url).get(keys.job_lock_key("job-1")) == b"token-rival"
    assert store.attempts("job-1") == 1 and store.get("job-1") == raced[0].doc


def test_a_terminal_document_survives_a_racing_requeue(store: JobStore) -> None:
    store.create(faces_job())
    claim = store.claim("job-1", "token-a", 60, 3)
    assert claim.doc is not None
    done = store.finish(claim.doc.succeeded({"code": "SUCCESS"}), "token-a")
    # A stale execution's requeue (not final) cannot turn the answer back into a queued job.
    again = store.requeue(claim.doc, "token-b", JobFailure(type="StorageUnavailableError", message="down"))
    assert again == done and store.get("job-1") == done


def test_a_batch_claim_starts_each_job_as_its_own_claim_would(store: JobStore, redis_url: str) -> None:
    import numpy as np

    from shared import features

    probe = features.encode("fr_feature", np.ones(512, np.float32) / np.sqrt(512))
    alone, together = (
        [JobDocument.new("match", {"features1": probe, "features2": probe}, f"{tag}-{i}") for i in range(3)]
        for tag in ("alone", "together")
    )
    for doc in [*alone, *together]:
        store.create(doc)
    singles = [store.claim(d.job_id, "token-a", 60, 3) for d in alone]
    batch = store.claim_many([d.job_id for d in together], "token-b", 60, 3)
    for one, many in zip(singles, batch, strict=True):
        assert one.outcome is many.outcome is ClaimOutcome.CLAIMED and one.doc is not None and many.doc is not None
        # The probes held beside the job come with it (a match job runs on them).
        assert many.doc.held_features == one.doc.held_features != {}


def test_a_batch_finish_writes_as_each_finish_would(store: JobStore, redis_url: str) -> None:
    import numpy as np

    from shared import features
    from shared.tenants import Tenant, scoped

    client = redis.Redis.from_url(redis_url)
    tenant = Tenant("acme")
    probe = features.encode("fr_feature", np.ones(512, np.float32) / np.sqrt(512), tenant=tenant)
    digest = features.digest(features.decode(probe))
    finals = {}
    for tag in ("alone", "together"):
        docs = [
            JobDocument.new("match", {"features1": probe, "features2": probe}, f"{tag}-{i}", tenant) for i in range(3)
        ]
        for doc in docs:
            store.create(doc)
        claims = store.claim_many([d.address for d in docs], f"token-{tag}", 60, 3)
        done = [c.doc.succeeded({"code": "SUCCESS", "faces": [{"features": probe}]}) for c in claims if c.doc]
        finals[tag] = (
            [store.finish(d, f"token-{tag}") for d in done]
            if tag == "alone"
            else store.finish_many(done, "token-together")
        )
        for doc in docs:
            # Stored under the tenant's address, the probe no longer held, the lock released.
            assert store.get(doc.address) is not None and store.get(doc.address).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]
            assert not client.exists(keys.job_features_key(doc.address), keys.job_lock_key(doc.address))
    # Both ways, every result holding the template is indexed for erasure.
    members = {m.decode() for m in client.smembers(keys.features_jobs_key(scoped(tenant, digest)))}
    assert members == {d.address for tag in finals for d in finals[tag]}
    # A second finish of a finished batch changes nothing.
    again = store.finish_many([d.failed(JobFailure(type="X", message="late")) for d in finals["together"]], "t")
    assert again == [store.get(d.address) for d in finals["together"]]
    assert {d.status for d in again} == {JobStatus.SUCCEEDED}


def test_lock_is_released_only_by_its_holder(store: JobStore, redis_url: str) -> None:
    store.create(faces_job())
    claim = store.claim("job-1", "token-a", 60, 3)
    assert claim.doc is not None
    store.requeue(claim.doc, "someone-else", JobFailure(type="StorageUnavailableError", message="down"))
    assert redis.Redis.from_url(redis_url).get(keys.job_lock_key("job-1")) == b"token-a"
    requeued = store.requeue(claim.doc, "token-a", JobFailure(type="StorageUnavailableError", message="down"))
    assert requeued.status is JobStatus.QUEUED and requeued.error is not None
    again = store.claim("job-1", "token-b", 60, 3)
    assert again.outcome is ClaimOutcome.CLAIMED and again.doc is not None and again.doc.attempts == 2


def test_past_max_attempts_the_job_is_dead_lettered(store: JobStore, redis_url: str) -> None:
    store.create(faces_job())
    client = redis.Redis.from_url(redis_url)
    for attempt in (1, 2):
        assert store.claim("job-1", f"t{attempt}", 60, max_attempts=2).outcome is ClaimOutcome.CLAIMED
        client.delete(keys.job_lock_key("job-1"))  # as if the worker died and its lock expired
    dead = store.claim("job-1", "t3", 60, max_attempts=2)
    assert dead.outcome is ClaimOutcome.EXHAUSTED and dead.doc is not None
    assert dead.doc.status is JobStatus.FAILED and dead.doc.attempts == 3
    assert dead.doc.error is not None and dead.doc.error.type == "MaxAttemptsExceeded"
    assert store.get("job-1") == dead.doc


def test_missing_job(store: JobStore) -> None:
    assert store.get("nope") is None
    assert store.claim("nope", "t", 60, 3).outcome is ClaimOutcome.MISSING


def test_discard_only_removes_a_queued_job(store: JobStore) -> None:
    store.create(faces_job("a"))
    store.discard("a")
    assert store.get("a") is None
    store.create(faces_job("b"))
    store.claim("b", "t", 60, 3)
    store.discard("b")
    assert store.get("b") is not None


def test_unreachable_redis_is_transient() -> None:
    store = JobStore(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(StorageUnavailableError):
        store.get("x")


def test_no_redis_configured() -> None:
    with pytest.raises(JobError):
        JobStore(Settings(redis_url=None, broker_url=None))


# -- S3 archive ----------------------------------------------------------------------------------


def archive_settings(redis_url: str, s3: S3Endpoint, mode: Literal["s3", "both"]) -> Settings:
    return Settings(redis_url=redis_url, s3_endpoint_url=s3.url, s3_results_bucket=s3.results_bucket, result_store=mode)


def test_s3_mode_keeps_an_envelope_in_redis(redis_url: str, s3: S3Endpoint) -> None:
    store = JobStore(archive_settings(redis_url, s3, "s3"))
    store.create(faces_job())
    claim = store.claim("job-1", "t", 60, 3)
    assert claim.doc is not None
    final = store.finish(claim.doc.succeeded({"code": "SUCCESS", "faces": []}), "t")
    envelope = JobDocument.from_json(redis.Redis.from_url(redis_url).get(keys.job_key("job-1")) or b"")
    assert envelope.result is None and envelope.result_ref == "s3://kyc-results/results/job-1.json"
    assert store.get("job-1") == final and final.result == {"code": "SUCCESS", "faces": []}
    # Once Redis has forgotten the job (TTL), the archive still answers.
    redis.Redis.from_url(redis_url).flushdb()
    assert store.get("job-1") == final


def test_archive_is_written_once(redis_url: str, s3: S3Endpoint) -> None:
    store = JobStore(archive_settings(redis_url, s3, "both"))
    store.create(faces_job())
    claim = store.claim("job-1", "t", 60, 3)
    assert claim.doc is not None
    first = store.finish(claim.doc.succeeded({"code": "SUCCESS", "n": 1}), "t")
    # A second execution that reached S3 first in another world: S3's If-None-Match arbitrates.
    redis.Redis.from_url(redis_url).set(keys.job_key("job-1"), claim.doc.to_json())
    second = store.finish(claim.doc.succeeded({"code": "SUCCESS", "n": 2}), "t2")
    assert second == first and store.get("job-1") == first
    assert store.archive is not None and store.archive.read("job-1") == first
    assert first.kind == "faces"


def test_stale_lock_of_a_dead_local_process_is_taken_over(store: JobStore, redis_url: str) -> None:
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store.create(faces_job())
    client = redis.Redis.from_url(redis_url)
    dead_token = f"{socket.gethostname()}:{gone.pid}:abc"
    client.set(keys.job_lock_key("job-1"), dead_token, px=60_000)
    assert holder_is_dead(dead_token)
    assert store.claim("job-1", execution_token(), 60, 3).outcome is ClaimOutcome.CLAIMED

    # A live holder, or one on another host, is never second-guessed.
    store.create(faces_job("job-2"))
    for token in (f"{socket.gethostname()}:1:abc", f"elsewhere:{gone.pid}:abc", execution_token()):
        client.set(keys.job_lock_key("job-2"), token, px=60_000)
        assert not holder_is_dead(token)
        assert store.claim("job-2", "t", 60, 3).outcome is ClaimOutcome.BUSY


def test_eviction_policy(store: JobStore) -> None:
    assert store.eviction_policy() == "noeviction"  # the fixture's redis-server is started so
