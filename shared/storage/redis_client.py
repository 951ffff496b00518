"""The one way the project connects to Redis (job documents, galleries, the broker's queues)."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.exceptions import NoScriptError
from redis.retry import Retry

# A Redis restart (or failover) costs each pooled connection one failed command: retry those a
# few times with backoff (about 3 s in all) so callers never see it, without hanging on an outage.
REDIS_RETRIES = 5


def redis_client(url: str) -> redis.Redis:
    """A Redis client with timeouts and bounded reconnects: a stalled Redis must not hang a worker
    or an API call, and a restarted one must not need a manual action."""
    return redis.Redis.from_url(
        url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.1), REDIS_RETRIES),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


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
