"""Request limits: the body size cap, enforced before anything parses the body; the quotas per
tenant and per key (token buckets in Redis); and the cap on a tenant's live job documents."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import keys
from shared.errors import StorageUnavailableError


async def _send_error(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length header as an int; None when absent; -1 when malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


class BodySizeLimitMiddleware:
    """Answer 413 for bodies over ``max_bytes``, declared or streamed.

    The body is buffered here (it is small by construction) and replayed to the app, so a chunked
    upload without Content-Length is cut off at ``max_bytes + 1`` bytes rather than read whole.

    Args:
        app: the wrapped ASGI application.
        max_bytes: the largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared == -1:
            await _send_error(send, 400, "malformed Content-Length header")
            return
        too_large = f"request body exceeds {self.max_bytes} bytes"
        if declared is not None and declared > self.max_bytes:
            await _send_error(send, 413, too_large)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await _send_error(send, 413, too_large)
                return
            more = message.get("more_body", False)
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable that yields the buffered body once, then defers to the real one."""
    pending: list[Any] = [body]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay


# Every bucket of one request in one script, with Redis's clock (the same for every API process):
# refill each bucket by the time passed, then take one token from all of them, or from none when
# any is short (a refused request costs nothing). Answers the longest wait in seconds, 0 if taken.
# KEYS: the buckets; ARGV: per bucket, its capacity then its rate (tokens per second).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local wait, tokens = 0, {}
for i, key in ipairs(KEYS) do
  local capacity, rate = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local have = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  have = math.min(capacity, have + math.max(0, now - at) * rate)
  tokens[i] = have
  if have < 1 then wait = math.max(wait, (1 - have) / rate) end
end
for i, key in ipairs(KEYS) do
  local capacity, rate = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local left = tokens[i]
  if wait == 0 then left = left - 1 end
  redis.call('HSET', key, 'tokens', tostring(left), 'at', tostring(now))
  redis.call('EXPIRE', key, math.ceil((capacity - left) / rate) + 1)
end
return tostring(wait)
"""


@dataclass(frozen=True)
class Bucket:
    """One token bucket: ``capacity`` tokens (the burst), refilled at ``per_s`` tokens a second."""

    key: str
    capacity: float
    per_s: float

    @classmethod
    def per_minute(cls, key: str, rate: int) -> Bucket:
        """A bucket of ``rate`` tokens a minute that holds one minute's worth."""
        return cls(key, float(rate), rate / 60.0)


class TokenBuckets:
    """Token buckets in Redis, shared by every API process.

    Args:
        client: the job store's Redis.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._take = client.register_script(_TAKE)

    def retry_after_s(self, buckets: list[Bucket]) -> int | None:
        """Take one token from every bucket; None if they all had one, else whole seconds until
        they will (nothing is taken then).

        Raises:
            StorageUnavailableError: Redis is unreachable (the caller answers 503, never lets it through).
        """
        if not buckets:
            return None
        args: list[float] = []
        for bucket in buckets:
            args += [bucket.capacity, bucket.per_s]
        try:
            wait = float(self._take(keys=[b.key for b in buckets], args=args))
        except redis.exceptions.RedisError as exc:
            raise StorageUnavailableError(f"rate limiter unavailable ({type(exc).__name__})") from None
        return None if wait <= 0 else max(1, math.ceil(wait))


class LiveJobs:
    """How many job documents a tenant has live (submitted within the job TTL), and a cap on it.

    Job documents live ``ttl_s``; a tenant submitting without end would fill a ``noeviction``
    Redis for every tenant. Each submission's address is kept in a sorted set scored by its
    expiry, so the count is exact without scanning. Concurrent submissions may pass the cap by
    the number of API processes at most.

    Args:
        client: the job store's Redis.
        cap: live documents a tenant may hold.
        ttl_s: the job documents' TTL (``KYC_JOB_TTL_S``).
    """

    def __init__(self, client: redis.Redis, cap: int, ttl_s: int) -> None:
        self.client = client
        self.cap = cap
        self.ttl_s = ttl_s

    def retry_after_s(self, tenant: str, address: str | None = None) -> int | None:
        """None while ``tenant`` is under its cap (or ``address`` is one of its live jobs), else
        whole seconds until its oldest job expires.

        Raises:
            StorageUnavailableError: Redis is unreachable.
        """
        key = keys.tenant_live_jobs_key(tenant)
        now = time.time()
        try:
            with self.client.pipeline() as pipe:
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
                pipe.zscore(key, address or "")
                _, live, oldest, known = pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise StorageUnavailableError(f"job cap unavailable ({type(exc).__name__})") from None
        if int(live) < self.cap or known is not None:
            return None
        return max(1, math.ceil(float(oldest[0][1]) - now)) if oldest else 1

    def add(self, tenant: str, address: str) -> None:
        """Count the job ``address`` (a resubmission of the same id counts once).

        Raises:
            StorageUnavailableError: Redis is unreachable.
        """
        key = keys.tenant_live_jobs_key(tenant)
        try:
            with self.client.pipeline() as pipe:
                pipe.zadd(key, {address: time.time() + self.ttl_s})
                # Gone a second before the last document it counts: never outlives the jobs.
                pipe.expire(key, max(1, self.ttl_s - 1))
                pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise StorageUnavailableError(f"job cap unavailable ({type(exc).__name__})") from None
