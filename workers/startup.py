"""Checks a worker runs once, in its parent process, before forking the pool.

A misconfigured worker must refuse to start rather than consume messages it cannot process: a
task that fails before claiming its job leaves the job ``queued`` forever. ``kycface worker``
runs :func:`check` before handing over to Celery, so a refusal is one line on stderr and exit
status 78 (or 69: docs/OPERATIONS.md, "Exit codes"); ``celery -A workers worker`` runs it from
the ``celeryd_after_setup`` signal (:func:`refuse_inside_celery`).
"""

from __future__ import annotations

import logging
from typing import Any

from shared import preflight
from shared.config import Settings
from shared.errors import KYCFaceError
from shared.exits import EX_UNAVAILABLE, StartRefused
from shared.jobs import JobStore

log = logging.getLogger(__name__)

WHO = "worker"


def check(settings: Settings) -> None:
    """Refuse to start on a missing broker, inconsistent time limits, no sealing key, missing
    models or an unreachable job store.

    Raises:
        StartRefused: with the reason and the exit status.
    """
    preflight.require_broker(settings, WHO)
    preflight.require_time_limits(settings, WHO)
    preflight.require_sealing_key(settings, WHO)
    preflight.require_models(settings, WHO)
    warn_if_evicting(settings)


def check_broker(app: Any, who: str = WHO) -> None:
    """Refuse when the broker does not answer, through kombu (any transport Celery is given).

    Raises:
        StartRefused: status 69, as the broker may come back: the supervisor retries.
    """
    with app.connection_for_write() as conn:
        try:
            conn.ensure_connection(max_retries=2, interval_start=0.5, interval_step=0.5, timeout=5)
        except Exception as exc:  # kombu raises the transport's own errors or OperationalError
            raise StartRefused(f"kycdeepface {who}: the broker does not answer ({type(exc).__name__})",
                               EX_UNAVAILABLE) from None  # fmt: skip


def refuse_inside_celery(settings: Settings) -> None:
    """:func:`check`, from a Celery signal handler.

    Raises:
        SystemExit: with the refusal's status, its reason logged first. Celery logs and ignores
            any other exception raised by a signal handler; this one stops the worker, and
            ``celery worker`` exits with its code.
    """
    try:
        check(settings)
    except StartRefused as refusal:
        log.critical("%s", refusal.message)
        raise SystemExit(refusal.status) from None


def warn_if_evicting(settings: Settings) -> None:
    """Log an error when Redis may evict keys: it would drop queued messages and job documents.

    Raises:
        StartRefused: the job store does not answer.
    """
    store = JobStore(settings)
    try:
        policy = store.eviction_policy()
    except KYCFaceError:
        message = f"kycdeepface {WHO}: the job store's Redis (KYC_REDIS_URL, else KYC_BROKER_URL) does not answer"
        raise StartRefused(message, EX_UNAVAILABLE) from None
    finally:
        store.redis.close()  # the pool is about to fork: leave no connection to inherit
    if policy not in (None, "noeviction"):
        log.error("Redis maxmemory-policy is %r; the pipeline needs 'noeviction'", policy)
