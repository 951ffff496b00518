"""The job runner without a worker: the registry's dispatch, the error path and the retry
decisions, on the real engine with the in-memory image and job stores (no Redis, no S3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.errors import ObjectNotFoundError, StorageError, StorageUnavailableError
from shared.jobs import REGISTRY, JobDocument, JobStatus
from shared.jobs.context import JobContext
from shared.jobs.inputs import FeaturesInput, ImageRef, InputType
from shared.jobs.registry import HEAVY_QUEUE, JobInputs, Registry, job_kind
from shared.jobs.resources import Resources
from shared.jobs.runner import execute, execute_many
from shared.jobs.stub import StubJobStore
from shared.schemas import FacesResult, InvalidImageResult, MatchResult, to_dict
from shared.storage.refs import Ref
from shared.storage.stub import StubImageStore
from tests.conftest import FACES_DIR

OBAMA = "s3://kyc-images/fr_obama.jpg"
OBAMA2 = "s3://kyc-images/fr_obama2.jpg"
LOCK_TTL_S = 120.0


@pytest.fixture()
def images() -> StubImageStore:
    return StubImageStore(
        {OBAMA: (FACES_DIR / "fr_obama.jpg").read_bytes(), OBAMA2: (FACES_DIR / "fr_obama2.jpg").read_bytes()}
    )


def resources(engine: KYCDeepFace, images: Any, jobs: StubJobStore, **settings: Any) -> Resources:
    base = engine.settings.model_copy(update={"max_attempts": 3, **settings})
    return Resources(base, engine=engine, images=images, jobs=jobs)  # type: ignore[arg-type]


# A kind declared in a registry of its own, as a new module of shared/jobs/kinds/ would declare
# it in the project's.
TEST_KINDS = Registry()


class CountInputs(JobInputs):
    image: ImageRef


@job_kind("count_faces", queue=HEAVY_QUEUE, help="how many usable faces", registry=TEST_KINDS)
def count_faces(inputs: CountInputs, job: JobContext) -> FacesResult | InvalidImageResult:
    return job.compute(job.engine.describe, job.fetch(inputs.image))


def submit(jobs: StubJobStore, kind: str, inputs: dict[str, str], job_id: str) -> JobDocument:
    doc, _ = jobs.create(JobDocument.new(kind, inputs, job_id))
    return doc


def test_every_kind_is_declared_once_with_its_task_and_queue() -> None:
    routes = {spec.name: (spec.task, spec.queue) for spec in REGISTRY}
    assert routes == {
        "faces": ("kyc.jobs.faces", "kyc.heavy"),
        "verify": ("kyc.jobs.verify", "kyc.heavy"),
        "match": ("kyc.jobs.match", "kyc.light"),
        "enroll": ("kyc.jobs.enroll", "kyc.heavy"),
        "search": ("kyc.jobs.search", "kyc.heavy"),
        "delete": ("kyc.jobs.delete", "kyc.light"),
        "forget": ("kyc.jobs.forget", "kyc.light"),
    }
    assert REGISTRY.get("verify").fields() == {
        "selfie": InputType.REF,
        "document": InputType.REF,
        "include_features": InputType.FLAG,
    }
    assert REGISTRY.get("search").fields()["top_k"] is InputType.TOP_K


def test_a_new_kind_is_one_declaration_and_its_handler(engine: KYCDeepFace, images: StubImageStore) -> None:
    spec = TEST_KINDS.get("count_faces")
    assert (spec.task, spec.queue, spec.fields()) == ("kyc.jobs.count_faces", HEAVY_QUEUE, {"image": InputType.REF})
    parsed = spec.parse({"image": OBAMA})
    assert isinstance(parsed.image, Ref) and parsed.to_wire({"image": OBAMA}) == {"image": OBAMA}  # type: ignore[attr-defined]
    timings: dict[str, float] = {}
    answer = spec.handler(parsed, JobContext(Resources(engine.settings, engine=engine, images=images), timings))
    assert isinstance(answer, FacesResult) and len(answer.faces) == 1
    assert timings["fetch_s"] >= 0 and timings["compute_s"] > 0


def test_inputs_travel_parsed(engine: KYCDeepFace) -> None:
    class MatchInputs(JobInputs):
        a: FeaturesInput
        b: FeaturesInput

    face = to_dict(engine.get_faces((FACES_DIR / "fr_obama.jpg").read_bytes()))["faces"][0]["features"]
    parsed = MatchInputs.model_validate({"a": face, "b": face})
    # The decoded vector goes to the engine as it is: the answer is the engine's own.
    assert to_dict(engine.compare(parsed.a, parsed.b)) == to_dict(engine.match_faces(face, face))  # type: ignore[attr-defined]


def test_a_verify_job_runs_to_its_answer(engine: KYCDeepFace, images: StubImageStore) -> None:
    jobs = StubJobStore()
    submit(jobs, "verify", {"selfie": OBAMA, "document": OBAMA2}, "v1")
    outcome = execute("v1", resources(engine, images, jobs), LOCK_TTL_S)
    final = jobs.get("v1")
    assert outcome.status == "succeeded" and not outcome.retry
    assert final is not None and final.status is JobStatus.SUCCEEDED and final.attempts == 1
    assert final.result is not None and final.result["code"] == "SUCCESS" and final.result["verified"] is True
    assert {"queue_s", "fetch_s", "compute_s"} <= set(final.timings)
    assert execute("v1", resources(engine, images, jobs), LOCK_TTL_S).status == "succeeded"  # a redelivery
    assert images.reads == 2


def test_a_missing_object_fails_keeping_its_type(engine: KYCDeepFace, images: StubImageStore) -> None:
    jobs = StubJobStore()
    submit(jobs, "faces", {"image": "s3://kyc-images/none.jpg"}, "gone")
    assert execute("gone", resources(engine, images, jobs), LOCK_TTL_S).status == "failed"
    final = jobs.get("gone")
    assert final is not None and final.error is not None
    assert (final.error.type, final.error.code) == (ObjectNotFoundError.__name__, "ERROR")


def test_transient_errors_retry_then_fail_after_max_attempts(engine: KYCDeepFace) -> None:
    down = StubImageStore(fail_with=StorageUnavailableError("s3://kyc-images/a.jpg: S3 unreachable"))
    jobs = StubJobStore()
    submit(jobs, "faces", {"image": "s3://kyc-images/a.jpg"}, "flaky")
    res = resources(engine, down, jobs)
    first = execute("flaky", res, LOCK_TTL_S)
    assert (first.status, first.retry, first.retry_in_s, first.attempt) == ("queued", True, None, 1)
    queued = jobs.get("flaky")
    assert queued is not None and queued.status is JobStatus.QUEUED and queued.error is not None
    assert execute("flaky", res, LOCK_TTL_S).retry
    last = execute("flaky", res, LOCK_TTL_S)
    final = jobs.get("flaky")
    assert last.status == "failed" and not last.retry and down.reads == 3
    assert final is not None and final.error is not None and final.error.type == "StorageUnavailableError"
    assert "gave up after 3 attempts" in final.error.message


def test_a_job_past_max_attempts_is_dead_lettered(engine: KYCDeepFace, images: StubImageStore) -> None:
    jobs = StubJobStore()
    submit(jobs, "faces", {"image": OBAMA}, "poison")
    jobs.counts["poison"] = 3  # as if it had killed its worker three times
    assert execute("poison", resources(engine, images, jobs), LOCK_TTL_S).status == "failed"
    final = jobs.get("poison")
    assert final is not None and final.error is not None and final.error.type == "MaxAttemptsExceeded"
    assert images.reads == 0


def test_a_job_held_by_another_execution_is_retried_when_its_lock_expires(
    engine: KYCDeepFace, images: StubImageStore
) -> None:
    jobs = StubJobStore()
    submit(jobs, "faces", {"image": OBAMA}, "busy")
    assert jobs.claim("busy", "other-host:1:x", LOCK_TTL_S, 3).doc is not None
    outcome = execute("busy", resources(engine, images, jobs), LOCK_TTL_S)
    assert outcome.retry and outcome.retry_in_s is not None and 1.0 <= outcome.retry_in_s <= LOCK_TTL_S


def test_the_soft_time_limit_is_recorded_as_time_limit_exceeded(images: StubImageStore) -> None:
    class Interrupt(Exception):
        """Stands in for a task runner's asynchronous interrupt (Celery's SoftTimeLimitExceeded)."""

    class SlowEngine:
        """A fake engine (plumbing only): its job outlives the soft time limit."""

        def describe(self, data: bytes) -> Any:
            raise Interrupt

    jobs = StubJobStore()
    submit(jobs, "faces", {"image": OBAMA}, "slow")
    settings = Settings(task_soft_time_limit_s=5, max_attempts=3)
    res = Resources(settings, engine=SlowEngine(), images=images, jobs=jobs, interrupts=(Interrupt,))  # type: ignore[arg-type]
    assert execute("slow", res, LOCK_TTL_S).status == "failed"
    final = jobs.get("slow")
    assert final is not None and final.error is not None
    assert (final.error.type, final.error.message) == ("TimeLimitExceeded", "job exceeded the 5s time limit")


def test_a_result_the_archive_refuses_leaves_a_failure_record(engine: KYCDeepFace, images: StubImageStore) -> None:
    jobs = StubJobStore(archive_error=StorageError("s3://kyc-results/denied.json: access denied"))
    submit(jobs, "match", {"features1": features(engine), "features2": features(engine)}, "denied")
    assert execute("denied", resources(engine, images, jobs), LOCK_TTL_S).status == "failed"
    final = jobs.get("denied")
    assert final is not None and final.status is JobStatus.FAILED and final.error is not None
    assert final.error.type == "StorageError" and final.error.message.startswith("result not stored:")
    assert not jobs.locks  # the run lock is released: nothing waits for this job any more


def features(engine: KYCDeepFace) -> str:
    found = engine.get_faces((FACES_DIR / "fr_obama.jpg").read_bytes())
    assert isinstance(found, FacesResult)
    return found.faces[0].features


def test_matching_uses_the_engines_compare(engine: KYCDeepFace, images: StubImageStore) -> None:
    jobs = StubJobStore()
    a = features(engine)
    submit(jobs, "match", {"features1": a, "features2": a}, "m1")
    execute("m1", resources(engine, images, jobs), LOCK_TTL_S)
    final = jobs.get("m1")
    assert final is not None and final.result == to_dict(engine.compare(a, a))
    assert isinstance(engine.compare(a, a), MatchResult)


def test_every_finish_reaches_the_hook_and_a_failed_hook_retries(engine: KYCDeepFace, images: StubImageStore) -> None:
    """The finish hook (completion event, webhook, review queue in a worker) sees the terminal
    document; when it fails, the message comes back and the redelivery calls it again."""
    jobs = StubJobStore()
    res = resources(engine, images, jobs)
    seen: list[list[tuple[str, str]]] = []
    failures = [RuntimeError("redis down")]

    def hook(docs: Sequence[JobDocument]) -> None:
        seen.append([(doc.job_id, doc.status.value) for doc in docs])
        if failures:
            raise failures.pop()

    res.on_terminal = hook
    submit(jobs, "faces", {"image": OBAMA}, "hook-1")
    first = execute("hook-1", res, LOCK_TTL_S)
    assert first.status == "succeeded" and first.retry  # stored, but the hook failed: retry
    again = execute("hook-1", res, LOCK_TTL_S)  # the redelivery: the job is done, the hook runs
    assert again.status == "succeeded" and not again.retry
    assert seen == [[("hook-1", "succeeded")], [("hook-1", "succeeded")]]
    assert jobs.attempts("hook-1") == 1  # the job itself ran once


def test_a_chunks_finishes_reach_the_hook_together(engine: KYCDeepFace, images: StubImageStore) -> None:
    """One hook call for a chunk's terminal documents (one round trip for their events); when it
    fails, every job of the chunk is retried, and each redelivery calls it again for its job."""
    jobs = StubJobStore()
    res = resources(engine, images, jobs)
    seen: list[list[str]] = []
    failures = [RuntimeError("redis down")]

    def hook(docs: Sequence[JobDocument]) -> None:
        seen.append([doc.job_id for doc in docs])
        if failures:
            raise failures.pop()

    res.on_terminal = hook
    ids = ["chunk-1", "chunk-2", "chunk-3"]
    for job_id, ref in zip(ids, [OBAMA, OBAMA2, "s3://kyc-images/missing.jpg"], strict=True):
        submit(jobs, "faces", {"image": ref}, job_id)
    outcomes = execute_many(ids, res, LOCK_TTL_S)
    assert [(o.status, o.retry) for o in outcomes] == [("succeeded", True), ("succeeded", True), ("failed", True)]
    assert seen == [ids]
    again = execute_many(ids, res, LOCK_TTL_S)  # the redelivered chunk: done, the hook runs once more
    assert [(o.status, o.retry) for o in again] == [("succeeded", False), ("succeeded", False), ("failed", False)]
    assert seen == [ids, [ids[0]], [ids[1]], [ids[2]]]  # a finished job's redelivery is answered alone
    assert [jobs.attempts(j) for j in ids] == [1, 1, 1]
