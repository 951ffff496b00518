"""The one way the project connects to Redis (job documents, galleries, the broker's queues)."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
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
