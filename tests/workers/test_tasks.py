"""The task's control flow, run eagerly in-process (``Task.apply``) on a real Redis job store
with stand-in engines and stores: transient retries, their budget, the soft time limit, and a
result the archive refuses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from celery.exceptions import SoftTimeLimitExceeded

from shared.config import Settings
from shared.errors import StorageUnavailableError
from shared.jobs import JobDocument, JobStatus, JobStore
from shared.jobs.resources import Resources
from shared.storage.refs import parse_ref
from shared.storage.s3 import translate_error
from shared.storage.stub import StubImageStore
from workers import process, tasks

pytestmark = pytest.mark.services


class SlowEngine:
    """An engine whose job outlives the soft time limit."""

    def describe(self, data: bytes) -> Any:
        raise SoftTimeLimitExceeded()


class DeniedArchive:
    """A result archive whose bucket policy refuses our writes (S3 AccessDenied)."""

    def ref_for(self, job_id: str) -> str:
        return f"s3://kyc-results/{job_id}.json"

    def write_once(self, doc: JobDocument) -> JobDocument:
        denied = ClientError(
            {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject"
        )
        raise translate_error(denied, parse_ref(self.ref_for(doc.job_id)))

    def read(self, job_id: str) -> JobDocument | None:
        return None


@pytest.fixture()
def jobs(redis_url: str) -> Iterator[JobStore]:
    yield JobStore(Settings(redis_url=redis_url, max_attempts=3, retry_backoff_s=0.01, retry_backoff_max_s=0.02))


def use(monkeypatch: pytest.MonkeyPatch, jobs: JobStore, engine: Any, images: Any) -> None:
    settings = Settings(redis_url="redis://unused", max_attempts=3, task_soft_time_limit_s=60)
    found = Resources(settings, engine=engine, images=images, jobs=jobs, interrupts=(SoftTimeLimitExceeded,))
    monkeypatch.setattr(process, "resources", lambda: found)


faces = tasks.JOB_TASKS["faces"]


def statuses(returned: str | list[str]) -> list[str]:
    """The statuses a task returned: one per message (a batch task returns a list)."""
    return [returned] if isinstance(returned, str) else returned


def test_transient_errors_are_retried_then_fail_after_max_attempts(
    jobs: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = StubImageStore(fail_with=StorageUnavailableError("s3://kyc-images/a.jpg: S3 unreachable"))
    use(monkeypatch, jobs, engine=SlowEngine(), images=down)
    doc, _ = jobs.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, "flaky"))
    faces.apply(args=[doc.job_id])
    final = jobs.get("flaky")
    assert final is not None and final.status is JobStatus.FAILED
    assert down.reads == 3 and final.attempts == 3
    assert final.error is not None and final.error.type == "StorageUnavailableError"
    assert "gave up after 3 attempts" in final.error.message


def test_soft_time_limit_fails_the_job(jobs: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, jobs, engine=SlowEngine(), images=StubImageStore({"s3://kyc-images/a.jpg": b"x"}))
    doc, _ = jobs.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, "slow"))
    faces.apply(args=[doc.job_id])
    final = jobs.get("slow")
    assert final is not None and final.status is JobStatus.FAILED and final.attempts == 1
    assert final.error is not None and final.error.type == "TimeLimitExceeded"
    assert final.error.message == "job exceeded the 60s time limit"


def test_redelivery_of_a_finished_job_runs_nothing(jobs: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    down = StubImageStore()
    use(monkeypatch, jobs, engine=SlowEngine(), images=down)
    doc, _ = jobs.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, "done"))
    finished = jobs.finish(doc.running(1).succeeded({"code": "SUCCESS"}), token=None)
    assert statuses(faces.apply(args=["done"]).get()) == ["succeeded"]
    assert down.reads == 0 and jobs.get("done") == finished


def test_unknown_job_is_dropped(jobs: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, jobs, engine=SlowEngine(), images=StubImageStore())
    assert statuses(faces.apply(args=["never-submitted"]).get()) == ["missing"]


def test_a_result_the_archive_refuses_leaves_a_failure_record(jobs: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    class Engine:
        def describe(self, data: bytes) -> Any:
            from shared.schemas import FacesResult

            return FacesResult(faces=[], partial_faces=[])

    jobs.archive = DeniedArchive()  # type: ignore[assignment]
    jobs.mode = "s3"
    use(monkeypatch, jobs, engine=Engine(), images=StubImageStore({"s3://kyc-images/a.jpg": b"x"}))
    jobs.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, "denied"))
    assert statuses(faces.apply(args=["denied"]).get()) == ["failed"]
    final = jobs.get("denied")
    assert final is not None and final.status is JobStatus.FAILED and final.error is not None
    assert final.error.type == "StorageError" and "access denied" in final.error.message
    assert final.error.message.startswith("result not stored:")
