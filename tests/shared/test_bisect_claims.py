"""Poison isolation in the job store: a group (a chunk, a batch) that lost its process is not
charged an attempt per job; claimed in a group again its jobs come back ``LOST`` (queued, for the
caller to re-send split), and only executions that ran alone are charged. On real Redis, and on
the in-memory stub the runner's unit tests use."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from shared.config import Settings
from shared.jobs import ClaimOutcome, JobDocument, JobStatus, JobStore
from shared.jobs.owner import execution_token
from shared.jobs.stub import StubJobStore

pytestmark = pytest.mark.services


def dead_token() -> str:
    """The token of an execution whose process (on this host) has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}:lost"


def jobs_of(store: JobStore | StubJobStore, n: int, prefix: str = "j") -> list[str]:
    for i in range(n):
        store.create(JobDocument.new("faces", {"image": f"s3://kyc-images/{prefix}{i}.jpg"}, f"{prefix}{i}"))
    return [f"{prefix}{i}" for i in range(n)]


@pytest.fixture(params=["redis", "stub"])
def store(request: pytest.FixtureRequest, redis_url: str) -> JobStore | StubJobStore:
    if request.param == "stub":
        return StubJobStore()
    return JobStore(Settings(redis_url=redis_url, job_ttl_s=600))


def lose(store: JobStore | StubJobStore, job_ids: list[str]) -> None:
    """Claim ``job_ids`` together under a process that is gone: what a SIGKILL mid-chunk leaves."""
    claims = store.claim_many(job_ids, dead_token(), 60, 3)
    assert all(c.outcome is ClaimOutcome.CLAIMED for c in claims)


def test_a_lost_group_is_put_back_uncharged_and_named(store: JobStore | StubJobStore) -> None:
    ids = jobs_of(store, 4)
    lose(store, ids)
    assert [store.attempts(i) for i in ids] == [1, 1, 1, 1]  # charged while it runs
    again = store.claim_many(ids, execution_token(), 60, 3)
    assert [c.outcome for c in again] == [ClaimOutcome.LOST] * 4
    for job_id in ids:
        doc = store.get(job_id)
        assert doc is not None and doc.status is JobStatus.QUEUED and doc.attempts == 0
        assert doc.error is not None and doc.error.type == "WorkerLost"
        assert doc.error.message == (
            f"its process was lost while running it with 3 other jobs (image s3://kyc-images/{job_id}.jpg)"
        )
        assert store.attempts(job_id) == 0
    # The halves run: claimed (no longer lost), charged one attempt each.
    first = store.claim_many(ids[:2], execution_token(), 60, 3)
    assert [c.outcome for c in first] == [ClaimOutcome.CLAIMED] * 2
    assert [store.attempts(i) for i in ids[:2]] == [1, 1]


def test_attempts_are_charged_only_when_a_job_ran_alone(store: JobStore | StubJobStore) -> None:
    ids = jobs_of(store, 8, "p")
    poison, group = ids[0], ids
    # 8 -> 4 -> 2 -> 1: each group that held the poison lost its process; none is charged.
    while len(group) > 1:
        lose(store, group)
        assert all(c.outcome is ClaimOutcome.LOST for c in store.claim_many(group, execution_token(), 60, 3))
        group = group[: len(group) // 2]
    assert store.attempts(poison) == 0
    # Alone, every lost execution counts: the third is the last one allowed.
    for attempt in (1, 2, 3):
        claim = store.claim(poison, dead_token(), 60, 3)
        assert claim.outcome is ClaimOutcome.CLAIMED and claim.doc is not None and claim.doc.attempts == attempt
    dead = store.claim(poison, execution_token(), 60, 3)
    assert dead.outcome is ClaimOutcome.EXHAUSTED and dead.doc is not None
    assert dead.doc.status is JobStatus.FAILED and dead.doc.error is not None
    assert dead.doc.error.type == "MaxAttemptsExceeded"
    assert "its process was lost while running it alone (image s3://kyc-images/p0.jpg)" in dead.doc.error.message


def test_a_job_lost_in_a_group_and_claimed_alone_is_charged_once(store: JobStore | StubJobStore) -> None:
    ids = jobs_of(store, 3, "s")
    lose(store, ids)
    claim = store.claim(ids[1], execution_token(), 60, 3)
    # The group's start is refunded, this one charged: one attempt, and the loss on record.
    assert claim.outcome is ClaimOutcome.CLAIMED and claim.doc is not None and claim.doc.attempts == 1
    assert claim.doc.error is not None and claim.doc.error.type == "WorkerLost"
    assert store.attempts(ids[1]) == 1


def test_a_group_that_finished_is_not_lost(store: JobStore | StubJobStore) -> None:
    ids = jobs_of(store, 2, "f")
    token = execution_token()
    running = [c.doc for c in store.claim_many(ids, token, 60, 3)]
    store.finish_many([d.succeeded({"code": "SUCCESS"}) for d in running if d is not None], token)
    again = store.claim_many(ids, execution_token(), 60, 3)
    assert [c.outcome for c in again] == [ClaimOutcome.DONE] * 2
    assert [store.attempts(i) for i in ids] == [1, 1]
