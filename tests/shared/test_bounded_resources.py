"""Bounded resources of a worker process, through the job runner on a real Redis: galleries share
one connection pool and a bounded cache, an unknown gallery creates nothing, and job documents
cannot name local files, spell ``top_k`` in other scripts, or break readers when corrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from shared import keys
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.errors import JobError, ReferenceRejectedError, UnreadableJobError
from shared.jobs import JobDocument, JobStatus, JobStore
from shared.jobs.inputs import parse_top_k
from shared.jobs.owner import process_is_running
from shared.jobs.resources import Resources
from shared.jobs.runner import execute, time_out
from shared.jobs.stub import StubJobStore
from shared.producer import Producer
from shared.storage import store_for
from tests.conftest import FACES_DIR, features_of

pytestmark = pytest.mark.services

LOCK_TTL_S = 60.0
GALLERIES = 1000


def clients_of(client: redis.Redis, url: str) -> int:
    """Connections open on ``url``'s database (CLIENT LIST), the asking one excluded."""
    db = int(url.rsplit("/", 1)[1])
    return sum(1 for c in client.client_list() if int(c["db"]) == db) - 1


def run(resources: Resources, jobs: StubJobStore, kind: str, inputs: dict[str, str], job_id: str) -> JobDocument:
    jobs.create(JobDocument.new(kind, inputs, job_id))
    execute(job_id, resources, LOCK_TTL_S)
    doc = jobs.get(job_id)
    assert doc is not None and doc.status.terminal
    return doc


@pytest.fixture()
def gallery_settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, gallery_cache_size=8, gallery_file_dir=tmp_path / "galleries")


def test_a_thousand_unknown_galleries_leave_the_client_count_flat_and_no_keys(
    engine: KYCDeepFace, gallery_settings: Settings, redis_url: str
) -> None:
    jobs = StubJobStore()
    resources = Resources(gallery_settings, engine=engine, jobs=jobs)  # type: ignore[arg-type]
    probe = features_of(engine, "fr_obama.jpg")
    with redis.Redis.from_url(redis_url) as admin:
        before, server_before = clients_of(admin, redis_url), admin.info("clients")["connected_clients"]
        for i in range(GALLERIES):
            kind, inputs = ("delete", {"face_id": "x"}) if i % 2 else ("search", {"probe": probe})
            doc = run(resources, jobs, kind, {"gallery": f"g{i}", **inputs}, f"j{i}")
            assert doc.status is JobStatus.FAILED and doc.error is not None
            assert doc.error.type == "GalleryNotFoundError" and f"g{i}" in doc.error.message
        # One pool for the process, whatever the documents named (it was one client per gallery).
        assert clients_of(admin, redis_url) <= before + 1
        assert admin.info("clients")["connected_clients"] <= server_before + 1
        assert admin.dbsize() == 0
        assert not gallery_settings.gallery_file_dir.exists()
    resources.close()


def test_open_galleries_are_bounded_and_share_one_pool(
    engine: KYCDeepFace, gallery_settings: Settings, redis_url: str
) -> None:
    jobs = StubJobStore()
    resources = Resources(gallery_settings, engine=engine, jobs=jobs)  # type: ignore[arg-type]
    obama, other = features_of(engine, "fr_obama.jpg"), features_of(engine, "fr_biden.jpg")
    with redis.Redis.from_url(redis_url) as admin:
        before = clients_of(admin, redis_url)
        for i in range(3 * gallery_settings.gallery_cache_size):
            enrolled = run(resources, jobs, "enroll", {"gallery": f"g{i}", "face_id": "obama", "probe": obama}, f"e{i}")
            assert enrolled.status is JobStatus.SUCCEEDED, enrolled.error
            assert len(resources._galleries) <= gallery_settings.gallery_cache_size
        assert clients_of(admin, redis_url) <= before + 1
        assert "g0" not in resources._galleries  # the least recently used went first
        # An evicted gallery opens again from the store, with its templates.
        found = run(resources, jobs, "search", {"gallery": "g0", "probe": obama, "top_k": "1"}, "s0")
        assert found.result is not None and found.result["candidates"][0]["face_id"] == "obama"
        missing = run(resources, jobs, "search", {"gallery": "g1", "probe": other, "top_k": "1"}, "s1")
        assert missing.result is not None and missing.result["candidates"] == []  # no match: nothing listed
        # Deleting from an existing gallery erases; from an unknown one, it writes nothing.
        assert run(resources, jobs, "delete", {"gallery": "g0", "face_id": "obama"}, "d0").status is JobStatus.SUCCEEDED
        keys_before = admin.dbsize()
        assert run(resources, jobs, "delete", {"gallery": "nope", "face_id": "obama"}, "d1").status is JobStatus.FAILED
        assert admin.dbsize() == keys_before
        assert admin.keys(f"{keys.GALLERY_PREFIX}{{nope}}*") == []
    resources.close()


def test_the_file_store_creates_no_file_for_an_unknown_gallery(engine: KYCDeepFace, tmp_path: Path) -> None:
    settings = Settings(gallery_store="file", gallery_file_dir=tmp_path / "galleries")
    jobs = StubJobStore()
    resources = Resources(settings, engine=engine, jobs=jobs)  # type: ignore[arg-type]
    doc = run(resources, jobs, "delete", {"gallery": "ghost", "face_id": "x"}, "d")
    assert doc.error is not None and doc.error.type == "GalleryNotFoundError"
    assert not (tmp_path / "galleries").exists()
    probe = features_of(engine, "fr_obama.jpg")
    assert (
        run(resources, jobs, "enroll", {"gallery": "real", "face_id": "o", "probe": probe}, "e").status
        is JobStatus.SUCCEEDED
    )
    assert run(resources, jobs, "delete", {"gallery": "real", "face_id": "o"}, "d2").status is JobStatus.SUCCEEDED
    assert [p.name for p in (tmp_path / "galleries").glob("*.sqlite3")] == ["real.sqlite3"]
    resources.close()


# -- local paths -----------------------------------------------------------------------------------


def test_a_job_naming_a_local_path_is_refused_without_a_local_root(engine: KYCDeepFace, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((FACES_DIR / "fr_obama.jpg").read_bytes())
    jobs = StubJobStore()
    unconfined = Resources(Settings(), engine=engine, jobs=jobs)  # type: ignore[arg-type]
    doc = run(unconfined, jobs, "faces", {"image": str(secret)}, "local-1")
    assert doc.status is JobStatus.FAILED and doc.error is not None
    assert doc.error.type == "ReferenceRejectedError" and "KYC_LOCAL_STORAGE_ROOT" in doc.error.message
    assert str(secret) not in doc.error.message
    with pytest.raises(ReferenceRejectedError):
        store_for(Settings()).validate(f"file://{secret}")
    # Under a configured root, the same job reads its file; outside it, it is still refused.
    confined = Resources(Settings(local_storage_root=tmp_path), engine=engine, jobs=jobs)  # type: ignore[arg-type]
    assert run(confined, jobs, "faces", {"image": "secret.jpg"}, "local-2").status is JobStatus.SUCCEEDED
    outside = run(confined, jobs, "faces", {"image": str(FACES_DIR / "fr_obama.jpg")}, "local-3")
    assert outside.error is not None and outside.error.type == "ReferenceRejectedError"
    # The embedded mode reads the files its own manifest names.
    assert store_for(Settings(), any_local_path=True).get(str(secret)) == secret.read_bytes()


# -- top_k -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelt", ["١٠", "²", "１０", "10\n", " 10", "+10"])
def test_top_k_is_ascii_digits_only(spelt: str) -> None:
    with pytest.raises(JobError, match="top_k"):
        parse_top_k(spelt)
    with pytest.raises(JobError, match="top_k"):
        JobDocument.new("search", {"gallery": "g", "probe": "s3://kyc-images/a.jpg", "top_k": spelt})
    assert parse_top_k("10") == 10


def test_a_stored_top_k_in_another_script_fails_typed_at_the_worker(engine: KYCDeepFace) -> None:
    jobs = StubJobStore()
    resources = Resources(Settings(), engine=engine, jobs=jobs)  # type: ignore[arg-type]
    good = JobDocument.new("search", {"gallery": "g", "probe": features_of(engine, "fr_obama.jpg")}, "k")
    # Written around the producer (an older one, or by hand): the worker's edge parses it again.
    jobs.create(good.model_copy(update={"inputs": {**good.inputs, "top_k": "²"}}))
    execute("k", resources, LOCK_TTL_S)
    doc = jobs.get("k")
    assert doc is not None and doc.error is not None
    assert (doc.status, doc.error.type) == (JobStatus.FAILED, "JobError") and "top_k" in doc.error.message


# -- unreadable documents --------------------------------------------------------------------------


def _corrupt(client: redis.Redis, job_id: str, raw: Any) -> None:
    client.set(keys.job_key(job_id), raw)
    client.zadd(keys.jobs_unstarted_key(), {job_id: 1.0})


def test_an_unreadable_document_is_typed_for_readers_the_sweeper_and_workers(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(broker_url=redis_url)
    producer = Producer(settings)
    client = producer.jobs.redis
    _corrupt(client, "old-schema", '{"schema_version": 0, "job_id": "old-schema"}')
    _corrupt(client, "not-json", b"\xff\xfe garbage")
    for job_id in ("old-schema", "not-json"):
        with pytest.raises(UnreadableJobError):
            producer.get_job(job_id)
    with caplog.at_level("ERROR"):
        assert producer.requeue_stale(older_than_s=0) == []
    assert "old-schema" in caplog.text and "not-json" in caplog.text
    assert client.zcard(keys.jobs_unstarted_key()) == 0  # forgotten: the next sweep does not trip
    assert producer.requeue_stale(older_than_s=0) == []
    resources = Resources(settings, jobs=JobStore(settings))
    assert execute("old-schema", resources, LOCK_TTL_S).status == "unreadable"
    resources.close()
    producer.close()


# -- the hard time limit ---------------------------------------------------------------------------


def test_a_job_killed_at_the_hard_limit_is_failed_once_and_final(engine: KYCDeepFace) -> None:
    jobs = StubJobStore()
    resources = Resources(Settings(), engine=engine, jobs=jobs)  # type: ignore[arg-type]
    jobs.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, "killed"))
    claim = jobs.claim("killed", "token-of-the-dead-process", LOCK_TTL_S, max_attempts=3)
    assert claim.doc is not None and claim.doc.status is JobStatus.RUNNING
    final = time_out("killed", resources, 90)
    assert final is not None and final.status is JobStatus.FAILED and final.error is not None
    assert (final.error.type, final.error.message) == (
        "TimeLimitExceeded",
        "job exceeded the 90s hard time limit; its process was killed",
    )
    # A redelivery finds it final and runs nothing; a second report changes nothing either.
    assert execute("killed", resources, LOCK_TTL_S).status == "failed"
    assert time_out("killed", resources, 90) == final == jobs.get("killed")
    assert jobs.attempts("killed") == 1
    assert time_out("never-submitted", resources, 90) is None


def test_a_killed_process_not_yet_reaped_is_not_running() -> None:
    assert process_is_running(os.getpid())
    child = subprocess.Popen(["sleep", "30"])
    assert process_is_running(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_is_running(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not process_is_running(child.pid)  # a zombie until reaped: killed is not running
    child.wait()
    assert not process_is_running(child.pid)
