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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.errors import KYCFaceError, StorageUnavailableError, TimeLimitExceeded, UnreadableJobError
from shared.jobs.context import JobContext
from shared.jobs.model import JobDocument, JobFailure
from shared.jobs.owner import execution_token
from shared.jobs.registry import REGISTRY
from shared.jobs.resources import Resources
from shared.jobs.store import Claim, ClaimOutcome
from shared.metrics import observe_batch, observe_job
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
        result = run_job(doc.kind, doc.run_inputs(), resources, timings, Tenant(doc.tenant))
    except (Exception, *resources.interrupts) as exc:  # type: ignore[misc]
        return _failed(doc, exc, timings, resources, final_attempt)
    return doc.succeeded(result, timings)


def complete_many(docs: list[JobDocument], resources: Resources) -> list[JobDocument | StorageUnavailableError]:
    """:func:`complete` for several jobs, each of the kinds with a batch handler run together
    (their faces embedded in one call); the others one by one.

    Returns:
        Per job, in order: its terminal document, or the transient error to requeue it with
        (a job that is not at its last attempt).
    """
    max_attempts = resources.settings.max_attempts
    finals: list[JobDocument | StorageUnavailableError | None] = [None] * len(docs)
    by_kind: dict[str, list[int]] = {}
    for n, doc in enumerate(docs):
        by_kind.setdefault(doc.kind, []).append(n)
    for kind, members in by_kind.items():
        batch = REGISTRY.batch(kind) if len(members) > 1 else None
        if batch is None:
            for n in members:
                finals[n] = _complete_or_requeue(docs[n], resources)
            continue
        spec = REGISTRY.get(kind)
        timings = [dict(docs[n].timings) for n in members]
        parsed: list[Any] = []
        for n in members:
            try:
                parsed.append(spec.parse(docs[n].run_inputs()))
            except Exception as exc:
                parsed.append(exc)
        ok = [i for i, p in enumerate(parsed) if not isinstance(p, Exception)]
        try:
            answers = iter(
                batch(
                    [parsed[i] for i in ok],
                    [JobContext(resources, timings[i], Tenant(docs[members[i]].tenant)) for i in ok],
                )
                if ok
                else []
            )
        except (Exception, *resources.interrupts) as exc:  # type: ignore[misc]  # the whole batch's: a time limit, a bug
            answers = iter([exc] * len(ok))
        for i, n in enumerate(members):
            answer = parsed[i] if isinstance(parsed[i], Exception) else next(answers)
            doc, final_attempt = docs[n], docs[n].attempts >= max_attempts
            if isinstance(answer, Exception):
                try:
                    finals[n] = _failed(doc, answer, timings[i], resources, final_attempt)
                except StorageUnavailableError as exc:
                    finals[n] = exc
            else:
                finals[n] = doc.succeeded(to_dict(answer), timings[i])
    return [f for f in finals if f is not None]


def _complete_or_requeue(doc: JobDocument, resources: Resources) -> JobDocument | StorageUnavailableError:
    try:
        return complete(doc, resources, final_attempt=doc.attempts >= resources.settings.max_attempts)
    except StorageUnavailableError as exc:
        return exc


def _failed(
    doc: JobDocument, exc: BaseException, timings: dict[str, float], resources: Resources, final_attempt: bool
) -> JobDocument:
    """The failed document for ``exc``; a transient error is raised again unless ``final_attempt``."""
    if isinstance(exc, StorageUnavailableError):
        if not final_attempt:
            raise exc
        message = f"{exc.message} (gave up after {doc.attempts} attempt{'' if doc.attempts == 1 else 's'})"
        return doc.failed(JobFailure.from_exception(exc).model_copy(update={"message": message}), timings)
    if isinstance(exc, KYCFaceError):
        log.info("job %s failed: %s", doc.address, exc.message)
        return doc.failed(JobFailure.from_exception(exc), timings)
    if isinstance(exc, resources.interrupts):
        limit = resources.settings.task_soft_time_limit_s
        return doc.failed(JobFailure.from_exception(TimeLimitExceeded(f"job exceeded the {limit}s time limit")))
    log.error("job %s failed unexpectedly", doc.address, exc_info=exc)
    return doc.failed(JobFailure.from_exception(exc), timings)


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery of a job's message.

    Attributes:
        status: the job's status after it (``succeeded``, ``failed``, ``queued``...), or
            ``missing`` when there is no such job, ``unreadable`` when its document does not parse.
        retry: the message must be delivered again: after ``retry_in_s`` seconds when set (a
            busy job), else after the worker's backoff for ``attempt`` (a transient error).
        retry_in_s: see ``retry``.
        attempt: the attempt that ended.
        lost: the job's last execution ran in a group (a chunk, a batch) that lost its process;
            it was put back ``queued``, uncharged, and the caller must re-send it split from
            the others (docs/OPERATIONS.md, "Poison jobs").
    """

    status: str
    retry: bool = False
    retry_in_s: float | None = None
    attempt: int = 0
    lost: bool = False


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
    try:
        claim = jobs.claim(job_id, token, lock_ttl_s, settings.max_attempts)
    except UnreadableJobError:
        log.error("job %s: its stored document does not parse; dropped", job_id)
        return Outcome("unreadable")
    if claim.outcome is not ClaimOutcome.CLAIMED or claim.doc is None:
        return _unclaimed(job_id, claim, resources)
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
    return finished(resources, [(stored, doc.attempts)])[0]


def finished(resources: Resources, done: Sequence[tuple[JobDocument, int]]) -> list[Outcome]:
    """Hand stored terminal documents (each with its attempt) to the process's ``on_terminal``
    hook, in one call: a chunk's completions go together.

    The one place every finished job passes, first run or redelivery. The hook is idempotent, so
    when it fails (Redis or the broker down) the messages are retried, and each redelivery (a
    ``DONE`` claim) calls it again.
    """
    hook = resources.on_terminal
    if hook is not None and done:
        try:
            hook([doc for doc, _ in done])
        except Exception as exc:
            addresses = ", ".join(doc.address for doc, _ in done)
            log.warning("jobs %s: finish hook failed (%s); retry", addresses, type(exc).__name__)
            return [Outcome(doc.status.value, retry=True, attempt=max(attempt, 1)) for doc, attempt in done]
    return [Outcome(doc.status.value, attempt=attempt) for doc, attempt in done]


def execute_many(job_ids: list[str], resources: Resources, lock_ttl_s: float) -> list[Outcome]:
    """:func:`execute` for a batch of messages: one pipelined claim, the claimed jobs run
    together (:func:`complete_many`), one pipelined finish. Each job still ends with exactly one
    terminal document; a job that cannot be claimed (busy, done, missing) is answered as
    :func:`execute` answers it, and one whose last group lost its process is not run but
    answered :attr:`Outcome.lost`, for the caller to re-send split.

    Returns:
        One :class:`Outcome` per id, in order.

    Raises:
        StorageUnavailableError: the job store itself is down; nothing could be recorded.
    """
    jobs, settings = resources.jobs, resources.settings
    token = execution_token()
    try:
        claims = jobs.claim_many(job_ids, token, lock_ttl_s, settings.max_attempts)
    except UnreadableJobError:
        # A document that no longer parses: each message answered on its own, that one dropped.
        return [execute(job_id, resources, lock_ttl_s) for job_id in job_ids]
    outcomes: list[Outcome | None] = [None] * len(job_ids)
    claimed: list[tuple[int, JobDocument]] = []
    for n, (job_id, claim) in enumerate(zip(job_ids, claims, strict=True)):
        if claim.outcome is ClaimOutcome.CLAIMED and claim.doc is not None:
            claimed.append((n, _with_queue_time(claim.doc)))
        else:
            outcomes[n] = _unclaimed(job_id, claim, resources)
    finals = complete_many([doc for _, doc in claimed], resources)
    done: list[tuple[int, JobDocument]] = []
    for (n, doc), final in zip(claimed, finals, strict=True):
        if isinstance(final, StorageUnavailableError):
            jobs.requeue(doc, token, JobFailure.from_exception(final))
            log.warning("job %s: %s; retry %d", doc.job_id, final.message, doc.attempts)
            outcomes[n] = Outcome("queued", retry=True, attempt=doc.attempts)
        else:
            done.append((n, final))
    start = time.perf_counter()
    stored_all = store_results(resources, [f for _, f in done], token)
    write_s = (time.perf_counter() - start) / max(len(done), 1)  # each job's share of the one write
    stored_done: list[tuple[int, JobDocument, int]] = []
    for (n, final), stored in zip(done, stored_all, strict=True):
        # Stage timings for operators and bench/pipeline.py; never inputs or results.
        log.info(
            "job %s %s attempt=%d batch=%d %s write_s=%.6f",
            final.job_id,
            stored.status.value,
            final.attempts,
            len(job_ids),
            " ".join(f"{k}={v:.6f}" for k, v in sorted(final.timings.items())),
            write_s,
        )
        observe_job(stored.kind, stored.status.value, result_code(stored), final.timings, write_s)
        stored_done.append((n, stored, final.attempts))
    completions = finished(resources, [(stored, attempt) for _, stored, attempt in stored_done])
    for (n, _, _), outcome in zip(stored_done, completions, strict=True):
        outcomes[n] = outcome
    for kind in {doc.kind for _, doc in claimed}:
        observe_batch(kind, sum(doc.kind == kind for _, doc in claimed))
    return [o for o in outcomes if o is not None]


def _unclaimed(job_id: str, claim: Claim, resources: Resources) -> Outcome:
    """The outcome of a message whose job this execution did not claim."""
    if claim.outcome is ClaimOutcome.LOST and claim.doc is not None:
        log.warning(
            "job %s: %s; re-sent apart from its group", job_id, claim.doc.error.message if claim.doc.error else ""
        )
        return Outcome(claim.doc.status.value, attempt=claim.doc.attempts, lost=True)
    if claim.outcome is ClaimOutcome.MISSING:
        log.warning("job %s: no document (expired or never submitted); dropped", job_id)
        return Outcome("missing")
    if claim.outcome is ClaimOutcome.BUSY:
        # Another execution holds the run lock (a redelivery while it runs, or its worker died
        # on another host): look again when the lock expires; by then it is done or free.
        return Outcome("busy", retry=True, retry_in_s=claim.retry_in_s)
    # DONE: a redelivery of a finished job. EXHAUSTED: the claim wrote the dead letter.
    # Either way the finish hook runs (again): a hook that failed last time is retried here.
    if claim.doc is not None and claim.doc.status.terminal:
        return finished(resources, [(claim.doc, claim.doc.attempts)])[0]
    return Outcome(claim.doc.status.value if claim.doc is not None else "missing")


def store_results(resources: Resources, finals: list[JobDocument], token: str) -> list[JobDocument]:
    """:func:`store_result` for a batch, in one pipelined write when nothing refuses it.

    Raises:
        StorageUnavailableError: the job store is down (the messages are retried).
    """
    if not finals:
        return []
    try:
        return resources.jobs.finish_many(finals, token)
    except StorageUnavailableError:
        raise
    except Exception:
        # One document the archive refused: each gets its own answer (a finished one stays).
        return [store_result(resources, f, token) for f in finals]


def time_out(job_id: str, resources: Resources, limit_s: float) -> JobDocument | None:
    """Fail a job whose process was killed at the hard time limit: final, never retried.

    The soft limit cannot interrupt a C call (a decoder, a network), so a job that reached the
    hard limit would reach it again on every attempt, each one costing a pool process.

    Returns:
        The job's final document (None when there is no such job).
    """
    doc = resources.jobs.get(job_id)
    if doc is None or doc.status.terminal:
        return doc
    log.error("job %s: killed at the %gs hard time limit; failed, not retried", job_id, limit_s)
    why = TimeLimitExceeded(f"job exceeded the {limit_s:g}s hard time limit; its process was killed")
    stored = store_result(resources, doc.failed(JobFailure.from_exception(why), doc.timings), token=None)
    finished(resources, [(stored, stored.attempts)])  # its completion event, like any terminal job's
    return stored


def store_result(resources: Resources, final: JobDocument, token: str | None) -> JobDocument:
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
