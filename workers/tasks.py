"""Thin tasks: claim the job, run it through ``shared``, store the terminal document.

The retry policy lives in :class:`JobTask`, once for every kind. Only transient errors (storage
or Redis unavailable) are retried, with exponential backoff and jitter; a bad image is an answer
and a missing object a final failure. Attempts are counted in Redis, not by Celery, because a
redelivery after a worker crash is invisible to Celery's retry count.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded

from shared.errors import StorageUnavailableError
from shared.jobs import ClaimOutcome, JobDocument, JobFailure
from shared.jobs.owner import execution_token
from shared.producer import Producer
from shared.runner import complete
from workers import resources
from workers.app import app, lock_ttl_s, settings
from workers.routes import ROUTES, SWEEP_TASK

log = logging.getLogger(__name__)


class JobTask(Task):
    """Base of every job task: the one place for retries and time-limit handling."""

    def backoff_s(self, attempt: int) -> float:
        """Exponential backoff, jittered over its upper half so retries of a burst spread out."""
        ceiling = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** max(attempt - 1, 0))
        return random.uniform(ceiling / 2, ceiling)

    def retry_later(self, countdown: float) -> Retry:
        """Schedule another delivery of this message in ``countdown`` seconds.

        Celery publishes the retry as a new message; when that publish fails (the broker is down
        too) it raises ``Reject(requeue=False)`` and the message would be dropped with the job
        left unfinished. Requeue it instead: the broker gives it back (or, if the reject cannot
        reach it either, redelivers it after the visibility timeout).
        """
        try:
            return self.retry(countdown=countdown, max_retries=None)
        except Reject as exc:
            if exc.requeue:
                raise
            log.warning("task %s: could not publish its retry (%s); requeueing", self.request.id, exc.reason)
            raise Reject(exc.reason, requeue=True) from None

    def process(self, job_id: str) -> str:
        """Run one job at most once to a terminal document; returns the job's status."""
        try:
            return self._process(job_id)
        except StorageUnavailableError as exc:
            # Redis (job store) unavailable: nothing could be recorded, so let the broker retry.
            log.warning("job %s: %s; retrying", job_id, exc.message)
            raise self.retry_later(self.backoff_s(self.request.retries + 1)) from None

    def _process(self, job_id: str) -> str:
        res = resources.get(settings)
        token = execution_token()
        claim = res.jobs.claim(job_id, token, lock_ttl_s(settings), settings.max_attempts)
        if claim.outcome is ClaimOutcome.MISSING:
            log.warning("job %s: no document (expired or never submitted); dropped", job_id)
            return "missing"
        if claim.outcome is ClaimOutcome.BUSY:
            # Another execution holds the run lock (a redelivery while it runs, or its worker
            # died on another host): look again when the lock expires; by then it is done or free.
            raise self.retry_later(claim.retry_in_s)
        if claim.outcome is not ClaimOutcome.CLAIMED or claim.doc is None:
            # DONE: a redelivery of a finished job. EXHAUSTED: the claim wrote the dead letter.
            return claim.doc.status.value if claim.doc is not None else "missing"
        doc = _with_queue_time(claim.doc)
        try:
            final = complete(doc, res.engine, res.images, reraise=(SoftTimeLimitExceeded,))
        except SoftTimeLimitExceeded:
            limit = settings.task_soft_time_limit_s
            final = doc.failed(JobFailure(type="TimeLimitExceeded", message=f"job exceeded the {limit}s time limit"))
        except StorageUnavailableError as exc:
            failure = JobFailure.from_exception(exc)
            if doc.attempts >= settings.max_attempts:
                message = f"{exc.message} (gave up after {doc.attempts} attempts)"
                final = doc.failed(failure.model_copy(update={"message": message}))
            else:
                res.jobs.requeue(doc, token, failure)
                log.warning("job %s: %s; retry %d", job_id, exc.message, doc.attempts)
                raise self.retry_later(self.backoff_s(doc.attempts)) from None
        start = time.perf_counter()
        stored = res.jobs.finish(final, token)
        # Stage timings for operators and bench/pipeline.py; never inputs or results.
        log.info(
            "job %s %s attempt=%d %s write_s=%.6f",
            job_id,
            stored.status.value,
            doc.attempts,
            " ".join(f"{k}={v:.6f}" for k, v in sorted(final.timings.items())),
            time.perf_counter() - start,
        )
        return stored.status.value


def _with_queue_time(doc: JobDocument) -> JobDocument:
    """Record how long the job waited between submission and this start (retries included)."""
    if doc.started_at is None:
        return doc
    waited = (doc.started_at - doc.created_at).total_seconds()
    return doc.model_copy(update={"timings": {"queue_s": round(waited, 6)}})


def _register(kind: str) -> Any:
    name, _queue = ROUTES[kind]

    @app.task(name=name, base=JobTask, bind=True)
    def run(self: JobTask, job_id: str) -> str:
        return self.process(job_id)

    return run


faces = _register("faces")
verify = _register("verify")
match = _register("match")
enroll = _register("enroll")
search = _register("search")
delete = _register("delete")


_sweeper: dict[int, Producer] = {}


@app.task(name=SWEEP_TASK, ignore_result=True)
def requeue_stale() -> int:
    """Re-send jobs whose message never reached a worker (see :meth:`Producer.requeue_stale`)."""
    pid = os.getpid()
    if pid not in _sweeper:  # one per process: connections are not fork-safe
        _sweeper[pid] = Producer(settings)
    return len(_sweeper[pid].requeue_stale(settings.sweep_stale_s))
