"""The reviewers' queue: finished verify jobs a person should look at, and their decisions.

A job joins the queue when it finishes (the worker's finish hook calls :func:`consider`) with a
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
from shared.events.outbox import recall
from shared.jobs.model import JobDocument, JobStatus, ReviewDecision

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
    """Queue ``doc`` for review if it needs it and was not decided; idempotent (``ZADD NX``)."""
    if doc.review is not None or not why(settings, doc).needed:
        return False
    finished = (doc.finished_at or doc.created_at).timestamp()
    client.zadd(keys.review_queue_key(), {doc.job_id: finished}, nx=True)
    return True


def pending(client: redis.Redis, limit: int = 100) -> list[str]:
    """Job ids waiting for a reviewer, oldest first."""
    return [
        j.decode() if isinstance(j, bytes) else str(j) for j in client.zrange(keys.review_queue_key(), 0, limit - 1)
    ]


def drop(client: redis.Redis, job_id: str) -> None:
    """Take a job off the queue (it expired: nothing left to review)."""
    client.zrem(keys.review_queue_key(), job_id)


def decide(
    client: redis.Redis,
    settings: Settings,
    job_id: str,
    decision: Literal["approved", "rejected"],
    note: str,
    reviewer: str,
) -> JobDocument:
    """Record a reviewer's decision in the job document and publish it, once.

    Returns:
        The document with its ``review``.

    Raises:
        JobError: no such job, not a finished job, or already decided.
    """
    doc_key = keys.job_key(job_id)
    review = ReviewDecision(decision=decision, note=note, reviewer=reviewer, decided_at=datetime.now(UTC))
    tenant = recall(client, job_id).tenant
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
                    "tenant": tenant,
                    "decision": decision,
                    "reviewer": reviewer,
                    "time": review.decided_at.isoformat(),
                }
                pipe.multi()
                pipe.set(doc_key, reviewed.to_json(), keepttl=True)
                pipe.xadd(settings.review_stream, event, maxlen=settings.events_stream_max_len, approximate=True)
                pipe.zrem(keys.review_queue_key(), job_id)
                pipe.execute()
                return reviewed
            except redis.WatchError:
                continue
