"""``kyc:jobs-running``, the sweeper's view of claimed jobs: every claim puts its job there at its
lock's expiry, in the claim script; a terminal write takes it out, in the finish script."""

from __future__ import annotations

import time

import pytest

from shared import keys
from shared.config import Settings
from shared.jobs import JobDocument, JobStore
from shared.jobs.model import JobFailure
from shared.jobs.store import ClaimOutcome

pytestmark = pytest.mark.services


@pytest.fixture()
def store(redis_url: str) -> JobStore:
    return JobStore(Settings(redis_url=redis_url, job_ttl_s=600))


def new(store: JobStore, job_id: str) -> str:
    return store.create(JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}, job_id))[0].address


def expiry(store: JobStore, job_id: str) -> float | None:
    return store.redis.zscore(keys.jobs_running_key(), job_id)


def test_a_claim_enters_the_running_set_at_its_locks_expiry_and_a_finish_leaves_it(store: JobStore) -> None:
    job = new(store, "one")
    assert expiry(store, job) is None  # queued: the unstarted set's, not this one's
    before = time.time()
    claim = store.claim(job, "here:1:a", lock_ttl_s=120, max_attempts=3)
    assert claim.outcome is ClaimOutcome.CLAIMED and claim.doc is not None
    assert before + 120 <= (expiry(store, job) or 0) <= time.time() + 120
    # Given back after a transient error: still there until its next claim sets a new time.
    store.requeue(claim.doc, "here:1:a", JobFailure(type="StorageUnavailableError", message="down"))
    assert expiry(store, job) is not None
    again = store.claim(job, "here:1:b", lock_ttl_s=10, max_attempts=3)
    assert again.doc is not None and (expiry(store, job) or 0) <= time.time() + 10
    store.finish(again.doc.succeeded({"faces": []}), token="here:1:b")
    assert expiry(store, job) is None
    assert store.expired_running(older_than_s=0) == []


def test_a_batch_claim_enters_every_job_and_a_dead_letter_none(store: JobStore) -> None:
    jobs = [new(store, f"batch-{i}") for i in range(3)]
    claims = store.claim_many(jobs, "here:1:c", lock_ttl_s=0.05, max_attempts=1)
    assert all(c.outcome is ClaimOutcome.CLAIMED for c in claims)
    assert all(expiry(store, j) is not None for j in jobs)
    time.sleep(0.1)
    assert sorted(store.expired_running(older_than_s=0)) == sorted(jobs)
    # A group's loss is charged to none of its jobs (the bisect rule), so the job first loses an
    # execution of its own; past its attempts, the next claim dead-letters it and the terminal
    # write takes it out.
    alone = store.claim(jobs[0], "here:1:d", lock_ttl_s=0.05, max_attempts=1)
    assert alone.outcome is ClaimOutcome.CLAIMED
    time.sleep(0.1)
    exhausted = store.claim(jobs[0], "here:1:e", lock_ttl_s=10, max_attempts=1)
    assert exhausted.outcome is ClaimOutcome.EXHAUSTED
    assert expiry(store, jobs[0]) is None
    store.look_again(jobs[1], time.time() + 60)
    assert store.expired_running(older_than_s=0) == [jobs[2]]
