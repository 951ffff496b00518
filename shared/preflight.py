"""What a service checks before it starts, each check raising :class:`StartRefused` on one line.

A service that starts misconfigured takes messages it cannot process, or seals features nobody
else can open; one that exits 0 is read as a clean stop. So the worker, the events service, the
API, beat and the backlog client run the checks that apply to them first, and ``kycface`` turns
a refusal into its reason on stderr and its exit status (:mod:`shared.exits`).
"""

from __future__ import annotations

import redis

from shared import features
from shared.config import Settings
from shared.errors import KYCFaceError
from shared.exits import EX_UNAVAILABLE, StartRefused
from shared.storage.redis_client import redis_client


def require_broker(settings: Settings, who: str) -> str:
    """The broker URL, or a refusal naming ``KYC_BROKER_URL``."""
    if not settings.broker_url:
        raise StartRefused(f"kycdeepface {who}: KYC_BROKER_URL is not set (a {who} needs a Redis broker)")
    return settings.broker_url


def require_time_limits(settings: Settings, who: str) -> None:
    """Refuse a soft time limit at or past the hard one: the job would be killed unrecorded."""
    if settings.task_soft_time_limit_s >= settings.task_time_limit_s:
        raise StartRefused(f"kycdeepface {who}: KYC_TASK_SOFT_TIME_LIMIT_S must be below KYC_TASK_TIME_LIMIT_S")


def require_sealing_key(settings: Settings, who: str) -> None:
    """Refuse to seal features with a key nobody else shares (see :func:`features.require_key`)."""
    try:
        features.require_key(settings, who)
    except KYCFaceError as exc:
        raise StartRefused.of(exc, who) from None


def require_models(settings: Settings, who: str) -> None:
    """Refuse a missing or altered detector or embedding model file (files and checksums only:
    no onnxruntime session is built here)."""
    from shared.models import get_spec, resolve_model_file

    try:
        for name, kind in ((settings.detector_model, "detector"), (settings.embedding_model, "embedding")):
            resolve_model_file(get_spec(name, kind, settings.model_registry_file), settings.model_dir)
    except KYCFaceError as exc:
        raise StartRefused.of(exc, who) from None


def require_redis(url: str, who: str, what: str = "Redis") -> None:
    """Refuse when the Redis at ``url`` does not answer a ``PING`` (after the client's own retries)."""
    client = redis_client(url)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        raise StartRefused(
            f"kycdeepface {who}: {what} does not answer ({type(exc).__name__})", EX_UNAVAILABLE
        ) from None
    finally:
        client.close()
