"""Run jobs: the one place where errors become job documents. No queue code here.

Everything below raises typed errors (:mod:`shared.errors`); :func:`complete` turns them into a
terminal document once, keeping the error's type and code. :func:`execute` is a worker's whole
job: claim, run, store, and say whether the message must come back later. The Celery tasks, the
embedded backlog and tests all go through here, so a job's answer does not depend on how it was
scheduled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from shared.errors import KYCFaceError, StorageUnavailableError, TimeLimitExceeded
from shared.jobs.context import JobContext
from shared.jobs.model import JobDocument, JobFailure
from shared.jobs.owner import execution_token
from shared.jobs.registry import REGISTRY
from shared.jobs.resources import Resources
from shared.jobs.store import ClaimOutcome
from shared.metrics import observe_job
from shared.schemas import to_dict
from shared.tenants import DEFAULT_TENANT, Tenant

log = logging.getLogger(__name__)


def run_job(
    kind: str,
    inputs: dict[str, Any],
    resources: Resources,
    timings: dict[str, float] | None = None,
    tenant: Tenant = DEFAULT_TENANT,
) -> dict[str, Any]:
    """Execute one job and return its answer as a JSON-ready dict.

    An unusable image is an answer (``INVALID_IMAGE``, ``NO_FACE``...), not an exception.

    Args:
        kind: a registered kind (see :data:`shared.jobs.registry.REGISTRY`).
        inputs: the job's inputs as strings; parsed here, once, by the kind's input model.
        resources: the process's engine, stores and galleries.
        timings: if given, receives seconds spent per stage (``fetch_s``, ``compute_s``).
        tenant: whose galleries the job may open.

    Returns:
        The kind's result document.

    Raises:
        KYCFaceError: the leaf that says why there is no answer (``StorageUnavailableError`` is
            transient).
    """
    spec = REGISTRY.get(kind)
    parsed = spec.parse(inputs)
    result = spec.handler(parsed, JobContext(resources, timings if timings is not None else {}, tenant))
    return to_dict(result)


def complete(doc: JobDocument, resources: Resources, final_attempt: bool = True) -> JobDocument:
    """Run a job document and return its terminal document.

    Args:
        doc: the job (its kind and inputs).
        resources: the process's engine, stores and galleries.
        final_attempt: whether a transient error ends the job (True) or is raised so that the
            caller can try again.

    Returns:
        ``succeeded`` with the answer, or ``failed`` with the error as plain data (its type,
        code and message). Never raises for a bad image, a missing object or a bug.

    Raises:
        StorageUnavailableError: transient, and not ``final_attempt``.
    """
    timings = dict(doc.timings)
    try:
        result = run_job(doc.kind, doc.inputs, resources, timings, Tenant(doc.tenant))
    except StorageUnavailableError as exc:
        if not final_attempt:
            raise
        message = f"{exc.message} (gave up after {doc.attempts} attempt{'' if doc.attempts == 1 else 's'})"
        return doc.failed(JobFailure.from_exception(exc).model_copy(update={"message": message}), timings)
    except KYCFaceError as exc:
        log.info("job %s failed: %s", doc.address, exc.message)
        return doc.failed(JobFailure.from_exception(exc), timings)
    except resources.interrupts:
        limit = resources.settings.task_soft_time_limit_s
        return doc.failed(JobFailure.from_exception(TimeLimitExceeded(f"job exceeded the {limit}s time limit")))
    except Exception as exc:
        log.exception("job %s failed unexpectedly", doc.address)
        return doc.failed(JobFailure.from_exception(exc), timings)
    return doc.succeeded(result, timings)


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery of a job's message.

    Attributes:
        status: the job's status after it (``succeeded``, ``failed``, ``queued``...), or
            ``missing`` when there is no such job.
        retry: the message must be delivered again: after ``retry_in_s`` seconds when set (a
            busy job), else after the worker's backoff for ``attempt`` (a transient error).
        retry_in_s: see ``retry``.
        attempt: the attempt that ended.
    """

    status: str
    retry: bool = False
    retry_in_s: float | None = None
    attempt: int = 0


def execute(job_id: str, resources: Resources, lock_ttl_s: float) -> Outcome:
    """Run one job at most once to a terminal document, as a worker does for each message.

    Args:
        job_id: the job the message names.
        resources: the process's resources (its job store holds the document).
        lock_ttl_s: how long the run lock outlives a crashed holder.

    Raises:
        StorageUnavailableError: the job store itself is down; nothing could be recorded.
    """
    jobs, settings = resources.jobs, resources.settings
    token = execution_token()
    claim = jobs.claim(job_id, token, lock_ttl_s, settings.max_attempts)
    if claim.outcome is ClaimOutcome.MISSING:
        log.warning("job %s: no document (expired or never submitted); dropped", job_id)
        return Outcome("missing")
    if claim.outcome is ClaimOutcome.BUSY:
        # Another execution holds the run lock (a redelivery while it runs, or its worker died
        # on another host): look again when the lock expires; by then it is done or free.
        return Outcome("busy", retry=True, retry_in_s=claim.retry_in_s)
    if claim.outcome is not ClaimOutcome.CLAIMED or claim.doc is None:
        # DONE: a redelivery of a finished job. EXHAUSTED: the claim wrote the dead letter.
        # Either way the finish hook runs (again): a hook that failed last time is retried here.
        if claim.doc is not None and claim.doc.status.terminal:
            return finished(resources, claim.doc, claim.doc.attempts)
        return Outcome(claim.doc.status.value if claim.doc is not None else "missing")
    doc = _with_queue_time(claim.doc)
    try:
        final = complete(doc, resources, final_attempt=doc.attempts >= settings.max_attempts)
    except StorageUnavailableError as exc:
        jobs.requeue(doc, token, JobFailure.from_exception(exc))
        log.warning("job %s: %s; retry %d", job_id, exc.message, doc.attempts)
        return Outcome("queued", retry=True, attempt=doc.attempts)
    start = time.perf_counter()
    stored = store_result(resources, final, token)
    write_s = time.perf_counter() - start
    # Stage timings for operators and bench/pipeline.py; never inputs or results.
    log.info(
        "job %s %s attempt=%d %s write_s=%.6f",
        job_id,
        stored.status.value,
        doc.attempts,
        " ".join(f"{k}={v:.6f}" for k, v in sorted(final.timings.items())),
        write_s,
    )
    observe_job(stored.kind, stored.status.value, result_code(stored), final.timings, write_s)
    return finished(resources, stored, doc.attempts)


def finished(resources: Resources, doc: JobDocument, attempt: int) -> Outcome:
    """Hand a stored terminal document to the process's ``on_terminal`` hook.

    The one place every finished job passes, first run or redelivery. The hook is idempotent, so
    when it fails (Redis or the broker down) the message is retried, and the redelivery (a
    ``DONE`` claim) calls it again.
    """
    hook = resources.on_terminal
    if hook is not None:
        try:
            hook(doc)
        except Exception as exc:
            log.warning("job %s: finish hook failed (%s); retry", doc.address, type(exc).__name__)
            return Outcome(doc.status.value, retry=True, attempt=max(attempt, 1))
    return Outcome(doc.status.value, attempt=attempt)


def store_result(resources: Resources, final: JobDocument, token: str) -> JobDocument:
    """Write the terminal document; when it cannot be stored, a failure record in its place.

    A permanent error of the result archive (S3 AccessDenied, a missing bucket) would otherwise
    leave the job ``running`` until its TTL, with no one to tell.

    Raises:
        StorageUnavailableError: the job store is down (the message is retried).
    """
    try:
        return resources.jobs.finish(final, token)
    except StorageUnavailableError:
        raise
    except Exception as exc:
        why = exc.message if isinstance(exc, KYCFaceError) else f"internal error: {type(exc).__name__}"
        log.error("job %s: the result could not be stored: %s", final.job_id, why)
        failure = JobFailure.from_exception(exc).model_copy(update={"message": f"result not stored: {why}"})
        return resources.jobs.finish(final.failed(failure, final.timings), token, archive=False)


def result_code(doc: JobDocument) -> str:
    """The code a terminal document carries: its answer's (``SUCCESS``, ``NO_FACE``...) or its error's."""
    if doc.result is not None:
        return str(doc.result.get("code", ""))
    return doc.error.code if doc.error is not None else ""


def _with_queue_time(doc: JobDocument) -> JobDocument:
    """Record how long the job waited between submission and this start (retries included)."""
    if doc.started_at is None:
        return doc
    waited = (doc.started_at - doc.created_at).total_seconds()
    return doc.model_copy(update={"timings": {"queue_s": round(waited, 6)}})
