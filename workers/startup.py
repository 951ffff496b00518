"""Checks a worker runs once, in its parent process, before forking the pool.

A misconfigured worker must refuse to start rather than consume messages it cannot process: a
task that fails before claiming its job leaves the job ``queued`` forever.
"""

from __future__ import annotations

import logging

from shared import features
from shared.config import Settings
from shared.errors import KYCFaceError
from shared.jobs import JobStore

log = logging.getLogger(__name__)


def check(settings: Settings) -> None:
    """Refuse to start on a missing broker, inconsistent time limits or missing models.

    Raises:
        SystemExit: with the reason. Celery logs and ignores any other exception raised by a
            signal handler, so this is the one way to stop the worker from starting.
    """
    if not settings.broker_url:
        raise SystemExit("kycdeepface worker: KYC_BROKER_URL is not set (a worker needs a Redis broker)")
    if settings.task_soft_time_limit_s >= settings.task_time_limit_s:
        raise SystemExit("kycdeepface worker: KYC_TASK_SOFT_TIME_LIMIT_S must be below KYC_TASK_TIME_LIMIT_S")
    try:
        features.require_key(settings, "worker")
    except KYCFaceError as exc:
        raise SystemExit(exc.message) from None
    # Files and checksums only: onnxruntime sessions are built after the fork, in each child.
    from shared.models import get_spec, resolve_model_file

    try:
        for name, kind in ((settings.detector_model, "detector"), (settings.embedding_model, "embedding")):
            resolve_model_file(get_spec(name, kind, settings.model_registry_file), settings.model_dir)
    except KYCFaceError as exc:
        raise SystemExit(f"kycdeepface worker: {exc.message}") from None
    warn_if_evicting(settings)


def warn_if_evicting(settings: Settings) -> None:
    """Log an error when Redis may evict keys: it would drop queued messages and job documents."""
    store = JobStore(settings)
    try:
        policy = store.eviction_policy()
    except KYCFaceError as exc:
        log.warning("cannot read Redis maxmemory-policy: %s", exc.message)
        return
    finally:
        store.redis.close()  # the pool is about to fork: leave no connection to inherit
    if policy not in (None, "noeviction"):
        log.error("Redis maxmemory-policy is %r; the pipeline needs 'noeviction'", policy)
