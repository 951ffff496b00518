"""Batched execution: pipelined claim/finish on real Redis, and batches answering exactly as one job
at a time does, on the real engine and the sample photos."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.client import Pipeline

from shared import keys
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.jobs import ClaimOutcome, JobDocument, JobStatus, JobStore
from shared.jobs.owner import execution_token
from shared.jobs.resources import Resources
from shared.jobs.runner import complete, execute, execute_many
from shared.storage import LocalStore
from tests.conftest import FACES_DIR

pytestmark = pytest.mark.services

FACES = ["df_couple.jpg", "fr_obama.jpg", "fr_two_people.jpg", "sk_rocket.jpg", "fr_biden2.jpg", "sk_coffee.png"]
VERIFY = [("fr_obama.jpg", "fr_obama2.jpg"), ("fr_obama.jpg", "fr_biden.jpg"), ("sk_rocket.jpg", "fr_obama.jpg")]


def faces_job(job_id: str, image: str = "s3://kyc-images/a.jpg") -> JobDocument:
    return JobDocument.new("faces", {"image": image}, job_id)


@pytest.fixture()
def store(redis_url: str) -> JobStore:
    return JobStore(Settings(redis_url=redis_url, job_ttl_s=600))


# -- pipelined claim and finish ------------------------------------------------------------------


def test_claim_many_claims_each_and_answers_as_claim(store: JobStore, redis_url: str) -> None:
    for n in range(4):
        store.create(faces_job(f"j{n}"))
    other = execution_token()
    assert store.claim("j1", other, 60, 3).outcome is ClaimOutcome.CLAIMED  # busy for the batch
    store.finish(store.claim("j2", other, 60, 3).doc.succeeded({"code": "SUCCESS"}), other)  # type: ignore[union-attr]
    token = execution_token()
    claims = store.claim_many(["j0", "j1", "j2", "j3", "nope"], token, 60, 3)
    assert [c.outcome for c in claims] == [
        ClaimOutcome.CLAIMED,
        ClaimOutcome.BUSY,
        ClaimOutcome.DONE,
        ClaimOutcome.CLAIMED,
        ClaimOutcome.MISSING,
    ]
    client = redis.Redis.from_url(redis_url)
    for job_id in ("j0", "j3"):
        assert client.get(keys.job_lock_key(job_id)) == token.encode()
        assert client.get(keys.job_attempts_key(job_id)) == b"1/5"  # one attempt, in a group of five
        assert store.attempts(job_id) == 1
        assert store.get(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert store.unstarted(0) == []


def test_claim_many_dead_letters_past_max_attempts(store: JobStore, redis_url: str) -> None:
    store.create(faces_job("a"))
    store.create(faces_job("b"))
    redis.Redis.from_url(redis_url).set(keys.job_attempts_key("a"), 3)
    claims = store.claim_many(["a", "b"], execution_token(), 60, 3)
    assert [c.outcome for c in claims] == [ClaimOutcome.EXHAUSTED, ClaimOutcome.CLAIMED]
    assert store.get("a").error.type == "MaxAttemptsExceeded"  # type: ignore[union-attr]


def test_finish_many_writes_once_and_releases_only_its_locks(store: JobStore, redis_url: str) -> None:
    for n in range(3):
        store.create(faces_job(f"f{n}"))
    token = execution_token()
    running = [c.doc for c in store.claim_many(["f0", "f1", "f2"], token, 60, 3)]
    assert all(d is not None for d in running)
    # Another execution finished f1 first: its document stays.
    store.redis.delete(keys.job_lock_key("f1"))
    first = running[1].succeeded({"code": "SUCCESS", "first": True})  # type: ignore[union-attr]
    store.finish(first, None)
    done = store.finish_many([d.succeeded({"code": "SUCCESS"}) for d in running], token)  # type: ignore[union-attr]
    assert done[1].result == {"code": "SUCCESS", "first": True}
    assert [store.get(f"f{n}").result for n in range(3)] == [  # type: ignore[union-attr]
        {"code": "SUCCESS"},
        {"code": "SUCCESS", "first": True},
        {"code": "SUCCESS"},
    ]
    client = redis.Redis.from_url(redis_url)
    assert client.exists(keys.job_lock_key("f0"), keys.job_lock_key("f2")) == 0
    assert 0 < client.ttl(keys.job_key("f0")) <= 600


def test_claim_many_of_a_changed_job_falls_back_to_single_claims(store: JobStore) -> None:
    """A watched key written between the MGET and the EXEC (another worker) must not be lost."""
    for n in range(2):
        store.create(faces_job(f"w{n}"))
    real_pipeline = store.redis.pipeline
    raced: list[bool] = []

    def racing_pipeline(*args: Any, **kwargs: Any) -> Pipeline:
        """A pipeline whose first MGET is followed by another client's write to a watched key."""
        pipe = real_pipeline(*args, **kwargs)
        mget = pipe.mget

        def racing_mget(*keys_: Any) -> Any:
            queued = mget(*keys_)
            if not raced:
                raced.append(True)
                redis.Redis(connection_pool=store.redis.connection_pool).set(keys.job_attempts_key("w0"), 1)
            return queued

        pipe.mget = racing_mget  # type: ignore[method-assign, assignment]
        return pipe

    store.redis.pipeline = racing_pipeline  # type: ignore[method-assign]
    try:
        claims = store.claim_many(["w0", "w1"], execution_token(), 60, 3)
    finally:
        store.redis.pipeline = real_pipeline  # type: ignore[method-assign]
    assert [c.outcome for c in claims] == [ClaimOutcome.CLAIMED, ClaimOutcome.CLAIMED]
    assert store.attempts("w0") == 2  # the other client's attempt counted, then ours
    assert store.attempts("w1") == 1


# -- a batch answers as one job at a time ---------------------------------------------------------


@pytest.fixture(scope="module")
def local() -> LocalStore:
    return LocalStore(max_bytes=25 * 1024 * 1024)


def _inputs() -> list[tuple[str, dict[str, str]]]:
    jobs = [("faces", {"image": str(FACES_DIR / name)}) for name in FACES]
    jobs += [("verify", {"selfie": str(FACES_DIR / s), "document": str(FACES_DIR / d)}) for s, d in VERIFY]
    jobs += [("faces", {"image": str(FACES_DIR / "missing.jpg")})]  # a per-job failure inside a batch
    return jobs


def test_batch_on_and_off_give_identical_documents(engine: KYCDeepFace, local: LocalStore, redis_url: str) -> None:
    settings = engine.settings.model_copy(update={"redis_url": redis_url})
    resources = Resources(settings, engine=engine, images=local, jobs=JobStore(settings))
    jobs = _inputs()
    singles = [resources.jobs.create(JobDocument.new(k, i, f"one-{n}"))[0] for n, (k, i) in enumerate(jobs)]
    batched = [resources.jobs.create(JobDocument.new(k, i, f"many-{n}"))[0] for n, (k, i) in enumerate(jobs)]
    for doc in singles:
        execute(doc.job_id, resources, 60)
    outcomes = execute_many([d.job_id for d in batched], resources, 60)
    assert [o.status for o in outcomes] == ["succeeded"] * (len(jobs) - 1) + ["failed"]
    for one, many in zip(singles, batched, strict=True):
        a, b = resources.jobs.get(one.job_id), resources.jobs.get(many.job_id)
        assert a is not None and b is not None
        assert (a.status, a.result, a.error) == (b.status, b.result, b.error)
        # ... and equal to the in-process engine's own answer.
        assert b.result == complete(JobDocument.new(b.kind, b.inputs), resources).result
    # A redelivered batch changes nothing and runs nothing.
    again = execute_many([d.job_id for d in batched], resources, 60)
    assert [o.status for o in again] == [o.status for o in outcomes]


@pytest.mark.parametrize("faces_per_call", [1, 32])
def test_describe_many_equals_describe(engine: KYCDeepFace, faces_per_call: int) -> None:
    # 32: every face of the batch in one embedder call (a GPU's way, or a CPU's with threads).
    engine = KYCDeepFace(settings=engine.settings.model_copy(update={"ort_batch_faces_max": faces_per_call}))
    images = [(FACES_DIR / name).read_bytes() for name in FACES] + [b"not an image"]
    many = engine.describe_many([(b, None, False) for b in images])
    assert many == [engine.describe(b) for b in images]


def test_faces_per_embedder_call_follow_the_provider_and_the_threads() -> None:
    assert Settings(intra_op_threads=1).ort_batch_faces() == 1  # one thread: a batch only costs
    assert Settings(intra_op_threads=2).ort_batch_faces() == 32
    assert Settings(ort_providers=["CUDAExecutionProvider"], intra_op_threads=1).ort_batch_faces() == 128
    assert Settings(intra_op_threads=1, ort_batch_faces_max=8).ort_batch_faces() == 8


def test_unavailable_provider_is_a_typed_error_naming_the_installed(settings: Settings) -> None:
    from shared.errors import ProviderUnavailableError

    with pytest.raises(ProviderUnavailableError, match="CPUExecutionProvider") as err:
        KYCDeepFace(settings=settings.model_copy(update={"ort_providers": ["NoSuchExecutionProvider"]}))
    assert "NoSuchExecutionProvider" in str(err.value)
