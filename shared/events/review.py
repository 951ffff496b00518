"""The reviewers' queues: finished verify jobs a person should look at, and their decisions.

Each tenant has its own queue, and every call names the tenant, so a reviewer reaches only its own
tenant's cases. A job joins its tenant's queue when it finishes (the worker's finish hook calls :func:`consider`) with a
confidence in the review band or a low selfie liveness score. A decision is written into the job
document (``review``: approved or rejected, the note, the reviewer's key id, the time), published
on the review stream and taken off the queue, in one Redis transaction; a job is decided once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis

from shared import keys
from shared.config import Settings
from shared.errors import JobError
from shared.jobs.model import JobDocument, JobStatus, ReviewDecision
from shared.tenants import Tenant, scoped

REVIEWED_KINDS = ("verify",)
REVIEW_FIELDS = ("job_id", "kind", "tenant", "decision", "reviewer", "time")


@dataclass(frozen=True)
class Why:
    """Why a job needs a person: the numbers the reviewer weighs."""

    confidence: float | None
    liveness: float | None
    in_band: bool
    low_liveness: bool

    @property
    def needed(self) -> bool:
        return self.in_band or self.low_liveness


def why(settings: Settings, doc: JobDocument) -> Why:
    """What of ``doc`` puts it in the queue (nothing for another kind or a failed job)."""
    result: dict[str, Any] = doc.result or {}
    if doc.kind not in REVIEWED_KINDS or doc.status is not JobStatus.SUCCEEDED:
        return Why(None, None, False, False)
    confidence = result.get("confidence")
    liveness = (result.get("liveness") or {}).get("score")
    in_band = confidence is not None and settings.review_confidence_min <= confidence <= settings.review_confidence_max
    low = liveness is not None and liveness < settings.review_liveness_below
    return Why(confidence, liveness, in_band, low)


def consider(client: redis.Redis, settings: Settings, doc: JobDocument) -> bool:
    """Queue ``doc`` for review in its tenant's queue if it needs it and was not decided;
    idempotent (``ZADD NX``)."""
    if doc.review is not None or not why(settings, doc).needed:
        return False
    finished = (doc.finished_at or doc.created_at).timestamp()
    client.zadd(keys.review_queue_key(doc.tenant), {doc.job_id: finished}, nx=True)
    return True


def pending(client: redis.Redis, tenant: Tenant, limit: int = 100) -> list[str]:
    """Job ids (within ``tenant``) waiting for a reviewer, oldest first."""
    found = client.zrange(keys.review_queue_key(tenant), 0, limit - 1)
    return [j.decode() if isinstance(j, bytes) else str(j) for j in found]


def drop(client: redis.Redis, tenant: Tenant, job_id: str) -> None:
    """Take a job off its tenant's queue (it expired: nothing left to review)."""
    client.zrem(keys.review_queue_key(tenant), job_id)


def decide(
    client: redis.Redis,
    settings: Settings,
    tenant: Tenant,
    job_id: str,
    decision: Literal["approved", "rejected"],
    note: str,
    reviewer: str,
) -> JobDocument:
    """Record a reviewer's decision in ``tenant``'s job ``job_id`` and publish it, once.

    Returns:
        The document with its ``review``.

    Raises:
        JobError: no such job, not a finished job, or already decided.
    """
    doc_key = keys.job_key(scoped(tenant, job_id))
    review = ReviewDecision(decision=decision, note=note, reviewer=reviewer, decided_at=datetime.now(UTC))
    with client.pipeline() as pipe:
        while True:
            try:
                pipe.watch(doc_key)
                raw = pipe.get(doc_key)
                if raw is None:
                    raise JobError(f"job {job_id} does not exist (or expired)")
                doc = JobDocument.from_json(raw)
                if not doc.status.terminal:
                    raise JobError(f"job {job_id} is {doc.status.value}: only a finished job is reviewed")
                if doc.review is not None:
                    raise JobError(f"job {job_id} was already {doc.review.decision}")
                reviewed = doc.model_copy(update={"review": review})
                event: dict[Any, Any] = {
                    "job_id": job_id,
                    "kind": doc.kind,
                    "tenant": doc.tenant,
                    "decision": decision,
                    "reviewer": reviewer,
                    "time": review.decided_at.isoformat(),
                }
                pipe.multi()
                pipe.set(doc_key, reviewed.to_json(), keepttl=True)
                pipe.xadd(settings.review_stream, event, maxlen=settings.events_stream_max_len, approximate=True)
                pipe.zrem(keys.review_queue_key(tenant), job_id)
                pipe.execute()
                return reviewed
            except redis.WatchError:
                continue
