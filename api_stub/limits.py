"""Request limits: the body size cap, enforced before anything parses the body, and the
per-key rate of search jobs."""

from __future__ import annotations

import json
import math
import time
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


class FixedWindow:
    """At most ``limit`` events per key per ``window_s`` seconds, counted in Redis (shared by
    every API process); a fixed window, so a key can burst ``2 * limit`` across a boundary.

    Args:
        client: the job store's Redis.
        limit: events allowed per window.
        window_s: the window's length.
    """

    def __init__(self, client: redis.Redis, limit: int, window_s: int) -> None:
        self.client = client
        self.limit = limit
        self.window_s = window_s

    def retry_after_s(self, key_id: str) -> int | None:
        """Count one event for ``key_id``; None if allowed, else whole seconds until the next window.

        Raises:
            StorageUnavailableError: Redis is unreachable (the caller answers 503, never lets it through).
        """
        now = time.time()
        window = int(now // self.window_s)
        key = keys.search_rate_key(key_id, window)
        try:
            with self.client.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, self.window_s + 1)
                count = int(pipe.execute()[0])
        except redis.exceptions.RedisError as exc:
            raise StorageUnavailableError(f"rate limiter unavailable ({type(exc).__name__})") from None
        if count <= self.limit:
            return None
        return max(1, math.ceil((window + 1) * self.window_s - now))
