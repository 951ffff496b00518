"""Thin tasks: one per registered job kind, the chunk of several jobs, and the sweeper. The work
is in ``shared.jobs.runner``.

Each job task hands its job id to :func:`shared.jobs.runner.execute` (claim, run, store) and
turns the outcome's retry request into a Celery retry; the chunk task hands its ids to
:func:`shared.jobs.runner.execute_many`. The policy is ``workers.policy.KYCTask``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from celery.exceptions import Reject
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest, apply_batches_task

from shared.errors import StorageUnavailableError
from shared.jobs.model import JobStatus
from shared.jobs.registry import CHUNK_TASK, REGISTRY
from shared.jobs.runner import Outcome, execute, execute_many, time_out
from workers import process
from workers.app import SWEEP_TASK, app, lock_ttl_s, visibility_timeout_s
from workers.app import settings as app_settings
from workers.policy import KYCTask


class JobTask(KYCTask):
    """The task of a job kind: its attempts are counted by the job's claim in Redis."""

    attempts_in_job_store = True

    def on_hard_time_limit(self, args: Any, limit_s: float) -> None:
        time_out(str(args[0]), process.resources(), limit_s)

    def countdown(self, outcome: Outcome) -> float:
        """Seconds until a job that must come back is delivered again: its own wait (a busy
        lock), or the backoff of its attempt."""
        return outcome.retry_in_s if outcome.retry_in_s is not None else self.backoff_s(outcome.attempt)


def run(task: JobTask, job_id: str) -> str:
    """Run one job; returns its status (``missing`` for an unknown job)."""
    resources = process.resources()
    outcome = execute(job_id, resources, lock_ttl_s(resources.settings))
    if outcome.retry:
        raise task.retry_later(task.countdown(outcome))
    return outcome.status


log = logging.getLogger(__name__)


class BatchJobTask(Batches, JobTask):
    """A job kind's task with ``KYC_BATCH_SIZE`` > 1: the consumer buffers up to that many
    messages (or ``KYC_BATCH_FLUSH_MS``) and hands them to one pool call.

    Every message is acknowledged after the batch returns (late ack). When the pool process
    dies mid-batch (SIGKILL, the hard time limit), the consumer acknowledges the messages whose
    job already has its terminal document and gives back only the others.
    """

    def flush(self, requests: Collection[Request]) -> Any:
        batch = list(requests)
        for request in batch:
            # The line Celery's default strategy logs for every message it takes.
            log.info("Task %s[%s] received", request.name, request.id)

        def give_back(_: Any) -> None:
            try:
                finished = process.resources().jobs.terminal([str(r.args[0]) for r in batch])
            except StorageUnavailableError:
                finished = [False] * len(batch)  # give every one back: a finished job is a no-op
            for request, done in zip(batch, finished, strict=True):
                if done:
                    request.acknowledge()
                else:
                    request.reject(requeue=True)
            log.warning("batch of %d lost or failed; %d given back", len(batch), finished.count(False))

        def on_return(statuses: Any) -> None:
            if not isinstance(statuses, list) or len(statuses) != len(batch):
                give_back(statuses)  # the batch raised: nothing says which jobs ended
                return
            for request, status in zip(batch, statuses, strict=True):
                if status == REQUEUE:
                    request.reject(requeue=True)
                else:
                    request.acknowledge()

        return self._pool.apply_async(
            apply_batches_task,
            (self, ([SimpleRequest.from_request(r) for r in batch],), 0, None),
            callback=on_return,
            error_callback=give_back,
        )


# What run_batch answers for a message whose retry could not be published: the consumer gives
# the message itself back to the broker instead of acknowledging it.
REQUEUE = "requeue"


def run_batch(task: BatchJobTask, requests: list[SimpleRequest]) -> list[str]:
    """Run a batch of job messages: per message, its job's status, or :data:`REQUEUE`.

    A message that must come back is published again under its id, after its countdown; when
    that publish fails too (the broker is down), :data:`REQUEUE` has the consumer give the
    message itself back rather than acknowledge it.
    """
    resources = process.resources()
    job_ids = [str(r.args[0]) for r in requests]
    try:
        outcomes = execute_many(job_ids, resources, lock_ttl_s(resources.settings))
    except StorageUnavailableError as exc:
        # Nothing could be recorded: every message comes back after the backoff.
        log.warning("batch of %d: %s; retrying every message", len(requests), exc.message)
        return [_send_again(task, request, task.backoff_s(1), "queued") for request in requests]
    lost = [job_id for job_id, outcome in zip(job_ids, outcomes, strict=True) if outcome.lost]
    split_sent = not lost or send_split(lost, len(job_ids), (requests[0].delivery_info or {}).get("routing_key"))
    statuses = []
    for request, outcome in zip(requests, outcomes, strict=True):
        if outcome.retry:
            statuses.append(_send_again(task, request, task.countdown(outcome), outcome.status))
        elif outcome.lost and not split_sent:
            statuses.append(REQUEUE)
        else:
            statuses.append(outcome.status)
    return statuses


def _send_again(task: BatchJobTask, request: SimpleRequest, countdown: float, status: str) -> str:
    """Publish the message anew under its own id: ``status``, or :data:`REQUEUE` if it cannot be."""
    delivery = request.delivery_info or {}
    if delivery.get("is_eager"):
        task.apply(request.args, task_id=request.id)  # as Celery runs an eager retry: at once
        return status
    try:
        task.apply_async(request.args, task_id=request.id, countdown=countdown, queue=delivery.get("routing_key"))
    except Exception as exc:  # kombu's OperationalError and the transport's own
        log.warning("job %s: could not publish its retry (%s); requeueing", request.id, type(exc).__name__)
        return REQUEUE
    return status


def _register(task_name: str, batch_size: int, flush_ms: int) -> Any:
    if batch_size > 1:

        @app.task(name=task_name, base=BatchJobTask, bind=True, flush_every=batch_size,
                  flush_interval=flush_ms / 1000)  # fmt: skip
        def batch(self: BatchJobTask, requests: list[SimpleRequest]) -> list[str]:
            return run_batch(self, requests)

        return batch

    @app.task(name=task_name, base=JobTask, bind=True)
    def job(self: JobTask, job_id: str) -> str:
        return run(self, job_id)

    return job


# Only kinds with a batch handler (the image kinds) are batched: the others gain little from it,
# and the gallery kinds keep one job per message, spread over the pool's processes.
JOB_TASKS = {
    spec.name: _register(
        spec.task, app_settings.batch_size if REGISTRY.batch(spec.name) else 1, app_settings.batch_flush_ms
    )
    for spec in REGISTRY
}


class ChunkTask(JobTask):
    """Several jobs in one message (a backlog's chunk): one message consumed for all of them,
    claimed, run and finished together. The message is acknowledged after them all (late ack);
    if its process dies, the redelivery finds the finished jobs done and re-sends the others
    split (:func:`send_split`)."""

    def on_hard_time_limit(self, args: Any, limit_s: float) -> None:
        # The chunk's jobs run together, so every one still running reached the limit with it,
        # and which of them held it there is unknown: several are re-sent split, as after any
        # lost process (Celery acknowledges this message next); one alone is failed, final.
        resources = process.resources()
        running = [doc for j in args[0] if (doc := resources.jobs.get(str(j))) and doc.status is JobStatus.RUNNING]
        queue = REGISTRY.get(running[0].kind).queue if running else None
        if len(running) > 1 and send_split([d.address for d in running], len(args[0]), queue):
            return
        for doc in running:
            time_out(doc.address, resources, limit_s)


@app.task(name=CHUNK_TASK, base=ChunkTask, bind=True)
def run_chunk(self: ChunkTask, job_ids: list[str]) -> list[str]:
    """Run a chunk's jobs; per job, its status. A job that must come back later (busy, a
    transient error) is sent again on its own, as a chunk of one, after its countdown; the jobs
    of a chunk that came back after its process was lost are re-sent split (:func:`send_split`)."""
    resources = process.resources()
    outcomes = execute_many([str(j) for j in job_ids], resources, lock_ttl_s(resources.settings))
    queue = (self.request.delivery_info or {}).get("routing_key")
    lost = [str(job_id) for job_id, outcome in zip(job_ids, outcomes, strict=True) if outcome.lost]
    if lost and not send_split(lost, len(job_ids), queue):
        # Give the whole chunk back: its lost jobs are queued again and run together next time.
        raise Reject("could not publish a split chunk", requeue=True)
    for job_id, outcome in zip(job_ids, outcomes, strict=True):
        if outcome.retry:
            try:
                self.apply_async(([job_id],), countdown=self.countdown(outcome), queue=queue)
            except Exception as exc:  # kombu's OperationalError and the transport's own
                # The broker is down: give the whole chunk back; its finished jobs are no-ops.
                raise Reject(f"could not publish a retry ({type(exc).__name__})", requeue=True) from None
    return [o.status for o in outcomes]


def halves(job_ids: list[str]) -> list[list[str]]:
    """``job_ids`` in two halves (the first the larger), or the one job alone."""
    middle = (len(job_ids) + 1) // 2
    return [part for part in (job_ids[:middle], job_ids[middle:]) if part]


def send_split(lost: list[str], group: int, queue: str | None) -> bool:
    """Re-send the jobs of a group (a chunk, a batch) that came back after its process was lost,
    as two chunk messages of half of them each: a job that kills its process every time is
    alone after log2(group) losses, and only then are its attempts charged (docs/OPERATIONS.md,
    "Poison jobs"), while its neighbours run apart from it and finish.

    Returns:
        Whether every half was published (False: the broker is down).
    """
    parts = halves(lost)
    try:
        for part in parts:
            app.send_task(CHUNK_TASK, args=[part], queue=queue)
    except Exception as exc:  # kombu's OperationalError and the transport's own
        log.warning("could not re-send %d lost job(s) split (%s)", len(lost), type(exc).__name__)
        return False
    log.warning(
        "group of %d came back after its process was lost: %d unfinished job(s) re-sent as chunks of %s",
        group,
        len(lost),
        " and ".join(str(len(p)) for p in parts),
    )
    return True


@app.task(name=SWEEP_TASK, ignore_result=True)
def requeue_stale() -> int:
    """Re-send jobs whose message never reached a worker (see :meth:`shared.producer.Producer.requeue_stale`),
    and jobs left running with no message (:meth:`~shared.producer.Producer.requeue_expired`)."""
    resources = process.resources()
    settings = resources.settings
    unsent = resources.producer.requeue_stale(settings.sweep_stale_s)
    # Past the lock's expiry, a lost worker's message needs the rest of its visibility timeout
    # to come back by itself (workers.app.visibility_timeout_s): look only once that is over.
    grace_s = visibility_timeout_s(settings) - lock_ttl_s(settings) + settings.sweep_stale_s
    expired = resources.producer.requeue_expired(grace_s, settings.max_attempts)
    return len(unsent) + len(expired.resent) + len(expired.failed)
