"""The one way the project connects to Redis (job documents, galleries, the broker's queues):
a plain ``redis://`` URL, or the primary a set of Sentinels names, followed across failovers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.exceptions import NoScriptError
from redis.retry import Retry
from redis.sentinel import Sentinel

from shared.errors import SettingsError

if TYPE_CHECKING:
    from shared.config import Settings

# A Redis restart (or failover) costs each pooled connection one failed command: retry those a
# few times with backoff (about 3 s in all) so callers never see it, without hanging on an outage.
REDIS_RETRIES = 5


# A Sentinel that does not answer within this long is skipped for the next one.
SENTINEL_TIMEOUT_S = 2.0


def _options() -> dict[str, Any]:
    return {
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.1), REDIS_RETRIES),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    }


def redis_client(url: str, settings: Settings | None = None) -> redis.Redis:
    """A Redis client with timeouts and bounded reconnects: a stalled Redis must not hang a worker
    or an API call, and a restarted one must not need a manual action.

    Args:
        url: ``redis://``/``rediss://``, or kombu's ``sentinel://host:port;sentinel://...[/db]``.
        settings: with ``KYC_REDIS_SENTINELS`` (or a ``sentinel://`` url) and
            ``KYC_REDIS_MASTER_NAME``, the client talks to the primary the Sentinels name, asks
            them again after each lost connection, and so follows a failover without a restart;
            ``url`` then gives only the database and the password.

    Raises:
        SettingsError: a ``sentinel://`` URL without ``KYC_REDIS_MASTER_NAME``.
    """
    sentinels = settings.redis_sentinels if settings is not None else []
    if not url.startswith("sentinel://") and not sentinels:
        return redis.Redis.from_url(url, **_options())
    master_name = settings.redis_master_name if settings is not None else None
    if not master_name:
        raise SettingsError("a sentinel:// Redis URL needs KYC_REDIS_MASTER_NAME")
    parts = url.split(";")
    last = urlsplit(parts[-1])
    password = next((unquote(p.password) for p in map(urlsplit, parts) if p.password), None)
    db = int(last.path.strip("/") or 0)
    addresses = [_address(entry) for entry in sentinels] or [
        (p.hostname or "127.0.0.1", p.port or 26379) for p in map(urlsplit, parts)
    ]
    watchers = Sentinel(addresses, socket_timeout=SENTINEL_TIMEOUT_S, socket_connect_timeout=SENTINEL_TIMEOUT_S)
    return watchers.master_for(master_name, redis_class=redis.Redis, db=db, password=password, **_options())


def _address(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    return host, int(port)


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's Sentinel options for a ``sentinel://`` broker URL (none for plain Redis)."""
    url = settings.resolved_broker_url() or ""
    if not url.startswith("sentinel://"):
        return {}
    return {
        "master_name": settings.redis_master_name,
        "sentinel_kwargs": {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S},
    }


def execute_scripted(pipe: Pipeline) -> list[Any]:
    """Execute a non-transactional pipeline of registered scripts (and any other commands) in
    one round trip, raising the first error as ``pipe.execute()`` does.

    redis-py asks ``SCRIPT EXISTS`` before every pipeline holding scripts, a round trip of its
    own each time. Here the scripts go as ``EVALSHA`` alone; when Redis does not know one (after
    a restart or a ``SCRIPT FLUSH``) its calls answer ``NOSCRIPT`` without having run, so the
    scripts are loaded and only those calls are sent again, in their order.
    """
    scripts, pipe.scripts = list(pipe.scripts), set()
    stack = list(pipe.command_stack)
    replies = pipe.execute(raise_on_error=False)
    missing = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        for script in scripts:
            pipe.script_load(script.script)
        for n in missing:
            args, options = stack[n]
            pipe.pipeline_execute_command(*args, **options)
        again = pipe.execute(raise_on_error=False)[len(scripts) :]
        for n, reply in zip(missing, again, strict=True):
            replies[n] = reply
    error = next((reply for reply in replies if isinstance(reply, Exception)), None)
    if error is not None:
        raise error
    return replies
