"""The task's control flow, run eagerly in-process (``Task.apply``) on a real Redis job store
with stand-in engines and stores: transient retries, their budget, and the soft time limit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from shared.config import Settings
from shared.errors import StorageUnavailableError
from shared.jobs import JobDocument, JobStatus, JobStore
from workers import resources, tasks

pytestmark = pytest.mark.services


class DownStore:
    """S3 that never answers."""

    def __init__(self) -> None:
        self.calls = 0

    def get(self, ref: str) -> bytes:
        self.calls += 1
        raise StorageUnavailableError(f"{ref}: S3 unreachable (EndpointConnectionError)")

    def put(self, ref: str, data: bytes) -> None:
        raise StorageUnavailableError("S3 unreachable")


class SlowEngine:
    """An engine whose job outlives the soft time limit."""

    def get_faces(self, data: bytes) -> Any:
        raise SoftTimeLimitExceeded()


class OneByteStore:
    def get(self, ref: str) -> bytes:
        return b"x"

    def put(self, ref: str, data: bytes) -> None:
        raise NotImplementedError


@pytest.fixture()
def jobs(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobStore]:
    settings = Settings(redis_url=redis_url, max_attempts=3, retry_backoff_s=0.01, retry_backoff_max_s=0.02)
    monkeypatch.setattr(tasks, "settings", settings)
    yield JobStore(settings)


def use(monkeypatch: pytest.MonkeyPatch, jobs: JobStore, engine: Any, images: Any) -> None:
    found = resources.Resources(settings=tasks.settings, engine=engine, images=images, jobs=jobs)
    monkeypatch.setattr(resources, "get", lambda settings: found)


def test_transient_errors_are_retried_then_fail_after_max_attempts(
    jobs: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = DownStore()
    use(monkeypatch, jobs, engine=SlowEngine(), images=down)
    doc, _ = jobs.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, "flaky"))
    tasks.faces.apply(args=[doc.job_id])
    final = jobs.get("flaky")
    assert final is not None and final.status is JobStatus.FAILED
    assert down.calls == 3 and final.attempts == 3
    assert final.error is not None and final.error.type == "StorageUnavailableError"
    assert "gave up after 3 attempts" in final.error.message


def test_soft_time_limit_fails_the_job(jobs: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, jobs, engine=SlowEngine(), images=OneByteStore())
    doc, _ = jobs.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, "slow"))
    tasks.faces.apply(args=[doc.job_id])
    final = jobs.get("slow")
    assert final is not None and final.status is JobStatus.FAILED and final.attempts == 1
    assert final.error is not None and final.error.type == "TimeLimitExceeded"


def test_redelivery_of_a_finished_job_runs_nothing(jobs: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    down = DownStore()
    use(monkeypatch, jobs, engine=SlowEngine(), images=down)
    doc, _ = jobs.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, "done"))
    finished = jobs.finish(doc.running(1).succeeded({"code": "SUCCESS"}), token=None)
    assert tasks.faces.apply(args=["done"]).get() == "succeeded"
    assert down.calls == 0 and jobs.get("done") == finished


def test_unknown_job_is_dropped(jobs: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, jobs, engine=SlowEngine(), images=DownStore())
    assert tasks.faces.apply(args=["never-submitted"]).get() == "missing"
