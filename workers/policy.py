"""The one worker policy, the base class of every task: retries, backoff, attempts, time limits.

- Transient errors (``KYCFaceError.transient``: storage or Redis unavailable) are retried with
  exponential backoff and jitter; anything else fails at once.
- Attempts are counted once: a job's by its document's claim in Redis (a redelivery after a
  worker crash is invisible to Celery's retry count), any other task's by Celery's retries, up
  to ``KYC_MAX_ATTEMPTS``.
- Time limits (``KYC_TASK_SOFT_TIME_LIMIT_S`` / ``KYC_TASK_TIME_LIMIT_S``) are the app's, the
  same for every task; a job records either as ``TimeLimitExceeded``, final. The hard limit kills
  the pool process, so the worker's main process records it (:class:`KYCRequest`): retrying
  would only hit the same wall again. A solo worker (``--pool solo``) has no pool to enforce
  either: there the soft limit is a signal timer in the process itself (:func:`soft_limit`), and
  the hard limit a watchdog thread that records it the same way and ends the process
  (:func:`hard_limit`), for its supervisor to start a new one.
- A retry that cannot be published is requeued rather than dropped.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from celery.worker.request import Request

from shared.config import Settings
from shared.errors import KYCFaceError
from shared.jobs.owner import process_is_running

log = logging.getLogger(__name__)


class KYCRequest(Request):
    """A task's request in the worker's main process, where Celery handles the hard time limit."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:
            self._hard_time_limit(timeout)
        super().on_timeout(soft, timeout)  # acknowledges, unless rejected here first

    def _hard_time_limit(self, timeout: float) -> None:
        pid = self.worker_pid
        if pid is not None and not process_is_running(pid):
            # The process died before its limit came round (SIGKILL, OOM) and the pool has not
            # noticed yet: a lost worker, whose message comes back, not a job that ran too long.
            log.warning("task %s: its process was lost before the hard time limit; requeued", self.id)
            self.reject(requeue=True)
            return
        task: KYCTask = self.task
        try:
            task.on_hard_time_limit(self.args, timeout)
        except Exception:
            # Nothing recorded (the job store is down): give the message back, so the job is not
            # left running with no message, rather than have Celery acknowledge it.
            log.exception("task %s: the hard time limit could not be recorded; requeued", self.id)
            self.reject(requeue=True)


class KYCTask(Task):
    """Base of every task of the app (``Celery(task_cls=...)``)."""

    Request = KYCRequest

    # Job tasks set this: their attempts are counted by the job store, so a job store that is
    # down is retried without limit (nothing could be recorded, and no attempt was spent).
    attempts_in_job_store = False

    def on_hard_time_limit(self, args: Any, limit_s: float) -> None:
        """Called in the worker's main process when this task's pool process was killed at the
        hard time limit, before Celery acknowledges the message. Nothing to record by default."""

    def settings(self) -> Settings:
        from workers import process

        return process.resources().settings

    def backoff_s(self, attempt: int) -> float:
        """Exponential backoff, jittered over its upper half so retries of a burst spread out."""
        settings = self.settings()
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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from workers import process

        try:
            if process.is_solo():
                settings = self.settings()
                limit_s = settings.task_time_limit_s
                with (
                    hard_limit(limit_s, lambda: self.on_hard_time_limit(args, limit_s)),
                    soft_limit(settings.task_soft_time_limit_s),
                ):
                    return super().__call__(*args, **kwargs)
            return super().__call__(*args, **kwargs)
        except KYCFaceError as exc:
            attempt = self.request.retries + 1
            if not exc.transient or (not self.attempts_in_job_store and attempt >= self.settings().max_attempts):
                raise
            log.warning("task %s: %s; retry %d", self.name, exc.message, attempt)
            raise self.retry_later(self.backoff_s(attempt)) from None


@contextmanager
def soft_limit(seconds: float) -> Iterator[None]:
    """Raise ``SoftTimeLimitExceeded`` in this thread after ``seconds``, as a prefork pool does.

    Python runs the handler between bytecodes: a long native call (a decoder, a model) is
    interrupted once it returns, like the pool's own soft limit.
    """

    def expired(_signum: int, _frame: Any) -> None:
        raise SoftTimeLimitExceeded(f"soft time limit ({seconds:g} s) exceeded")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# The exit status of a solo worker ended at the hard time limit (EX_SOFTWARE).
HARD_LIMIT_EXIT = 70


@contextmanager
def hard_limit(seconds: float, record: Callable[[], None]) -> Iterator[None]:
    """End this process after ``seconds``, as a prefork pool kills its child at the hard limit:
    ``record`` first (the task's :meth:`KYCTask.on_hard_time_limit`: its jobs fail, final), then
    ``os._exit``. The process's supervisor (compose's restart policy, systemd) starts a new
    worker; the message, never acknowledged, comes back after the visibility timeout and finds
    its jobs done.

    A thread, not a signal: it fires while the task's thread is stuck in a native call, as long
    as that call released the GIL (onnxruntime, OpenCV's decoders and socket reads do).
    """

    def expired() -> None:
        log.error("hard time limit (%g s) exceeded: recording it and ending this solo worker", seconds)
        try:
            record()
        except Exception:
            # Nothing recorded (the job store is down): the redelivery runs the jobs again, and
            # their attempt count dead-letters them after KYC_MAX_ATTEMPTS.
            log.exception("the hard time limit could not be recorded")
        os._exit(HARD_LIMIT_EXIT)

    watchdog = threading.Timer(seconds, expired)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
