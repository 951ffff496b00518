"""Webhook delivery of completion events, signed the Standard Webhooks way.

Each attempt re-checks the callback (allow-list, addresses), POSTs the event as JSON with the
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers to the address it
checked, and says what to do next: done, try again after an exponential backoff, or dead
(written to the dead-letter stream after ``webhook_max_attempts``). :func:`attempt` is one try,
for a task queue to schedule (see ``workers/webhook_task.py``); :func:`deliver` loops in-process.

An attempt ends by ``webhook_attempt_deadline_s`` whatever the receiver does (a tarpit that
sends a byte a second included) and reads at most ``webhook_max_response_bytes`` of the answer.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from urllib.parse import urlsplit

import redis
from pydantic import BaseModel, ConfigDict
from standardwebhooks.webhooks import Webhook

from shared import keys
from shared.config import Settings
from shared.events.callbacks import Callback, check_callback
from shared.events.model import CallbackRefusedError
from shared.events.outbox import JobMeta, Published, completion_event, meta_of, publish_completions, published
from shared.jobs.model import JobDocument
from shared.storage.redis_client import execute_scripted

log = logging.getLogger(__name__)
EVENT_TYPE = "job.completed"
_READ_BYTES = 64 * 1024


class WebhookDelivery(BaseModel):
    """One webhook to send: plain data, so it crosses a task queue as JSON.

    ``msg_id`` stays the same over every attempt, so a receiver can drop a repeat.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    msg_id: str
    tenant: str
    url: str
    event: dict[str, str]

    @classmethod
    def for_job(cls, doc: JobDocument, meta: JobMeta) -> WebhookDelivery | None:
        """The delivery of a terminal job's completion event, or None when it has no callback."""
        if not meta.callback_url:
            return None
        return cls(msg_id=f"msg_{doc.job_id}", tenant=doc.tenant, url=meta.callback_url, event=completion_event(doc))

    def body(self) -> str:
        return json.dumps({"type": EVENT_TYPE, "data": self.event}, separators=(",", ":"), sort_keys=True)


class Status(str, Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class AttemptResult:
    status: Status
    attempt: int
    retry_in_s: float = 0.0
    reason: str = ""


def sign(settings: Settings, delivery: WebhookDelivery, body: str, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``.

    Raises:
        CallbackRefusedError: no signing secret for the tenant (never send unsigned).
    """
    secret = settings.webhook_secrets.get(delivery.tenant)
    if secret is None:
        raise CallbackRefusedError("no webhook secret for the tenant")
    now = now or datetime.now(UTC)
    signature = Webhook(secret.get_secret_value()).sign(delivery.msg_id, now, body)
    return {
        "webhook-id": delivery.msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


class DeadlineExceededError(OSError):
    """The attempt's total deadline passed (``webhook_attempt_deadline_s``)."""


class _Deadline:
    """One attempt's deadline: it bounds each connect, and once it passes, shuts the attempt's
    socket down, which ends a read blocked in another frame (a receiver that sends a byte a
    second resets every per-read timeout, never this)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.passed = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def expired(self) -> bool:
        """Whether the deadline has passed (the cut may not have run yet: a read's own timeout
        can fire at the same moment)."""
        return self.passed or time.monotonic() >= self.at

    def remaining_s(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceededError(f"deadline of {self.seconds:g} s passed")
        return left

    def hold(self, sock: socket.socket) -> None:
        """Shut ``sock`` at the deadline (or now, if it already passed)."""
        with self._lock:
            self._sock = sock
            passed = self.passed
        if passed:
            self._cut()

    def _cut(self) -> None:
        with self._lock:
            self.passed, sock = True, self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # closed already
                # The plain socket's shutdown, also under TLS: SSLSocket.shutdown would drop the
                # TLS state another thread is reading with.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()


def _connect_any(addresses: tuple[str, ...], port: int, timeout_s: float | None, deadline: _Deadline) -> socket.socket:
    """A connection to the first of ``addresses`` that answers (they were all checked), each
    try within what is left of the deadline (which then stays each read's timeout: no read
    outlives the deadline even before the cut)."""
    error: OSError = OSError("no address")
    for address in addresses:
        try:
            sock = socket.create_connection((address, port), min(timeout_s or math.inf, deadline.remaining_s()))
        except DeadlineExceededError:
            raise
        except OSError as exc:
            error = exc
            continue
        deadline.hold(sock)
        return sock
    raise error


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP to the checked addresses; ``Host`` still names the host."""

    def __init__(self, callback: Callback, timeout_s: float, deadline: _Deadline) -> None:
        super().__init__(callback.host, callback.port, timeout=timeout_s)
        self._addresses = callback.addresses
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = _connect_any(self._addresses, self.port, self.timeout, self._deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the checked addresses, with SNI and the certificate checked for the host."""

    def __init__(self, callback: Callback, timeout_s: float, deadline: _Deadline) -> None:
        super().__init__(callback.host, callback.port, timeout=timeout_s, context=ssl.create_default_context())
        self._addresses = callback.addresses
        self._deadline = deadline

    def connect(self) -> None:
        sock = _connect_any(self._addresses, self.port, self.timeout, self._deadline)
        # wrap_socket detaches the plain socket: the deadline holds the TLS one, before the
        # handshake, so a trickled handshake is cut too.
        tls = self._context.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)  # type: ignore[attr-defined]
        self._deadline.hold(tls)
        self.sock = tls  # before the handshake, so close() closes it when the handshake fails
        tls.do_handshake()


def _post(settings: Settings, callback: Callback, body: str, headers: dict[str, str]) -> int:
    """POST ``body``; the status of the answer, of which at most ``webhook_max_response_bytes``
    are read (http.client caps its header block at 100 lines of 64 KiB).

    Raises:
        DeadlineExceededError: ``webhook_attempt_deadline_s`` passed.
        OSError, http.client.HTTPException: the connection failed.
    """
    parts = urlsplit(callback.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with _Deadline(settings.webhook_attempt_deadline_s) as deadline:
        connection = _PinnedHTTPSConnection if callback.scheme == "https" else _PinnedHTTPConnection
        conn = connection(callback, settings.webhook_timeout_s, deadline)
        try:
            conn.request(
                "POST",
                path,
                body=body.encode(),
                headers={**headers, "Content-Type": "application/json", "User-Agent": "kycdeepface"},
            )
            response = conn.getresponse()
            status = response.status
            # A receiver's body is never used: drain at most the cap, 64 KiB at a time (read(n)
            # allocates n bytes up front). The status came in time: a deadline here ends the drain.
            left = settings.webhook_max_response_bytes
            try:
                while left > 0 and (chunk := response.read(min(left, _READ_BYTES))):
                    left -= len(chunk)
            except (OSError, http.client.HTTPException):
                if not deadline.expired():
                    raise
            return status
        except (OSError, http.client.HTTPException) as exc:
            if deadline.expired() and not isinstance(exc, DeadlineExceededError):
                raise DeadlineExceededError(f"deadline of {deadline.seconds:g} s passed") from None
            raise
        finally:
            conn.close()


def backoff_s(settings: Settings, attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): doubling, capped."""
    return float(min(settings.webhook_backoff_max_s, settings.webhook_backoff_s * 2 ** (attempt - 1)))


def attempt(settings: Settings, client: redis.Redis, delivery: WebhookDelivery, number: int) -> AttemptResult:
    """Make delivery attempt ``number`` (1-based); dead-letter it when it was the last.

    Never raises for the receiver's failures; a refused callback (the host left the allow-list,
    its address turned private) is dead at once.
    """
    body = delivery.body()
    try:
        callback = check_callback(settings, delivery.tenant, delivery.url)
        status = _post(settings, callback, body, sign(settings, delivery, body))
    except CallbackRefusedError as exc:
        return _dead(settings, client, delivery, number, exc.message)
    except DeadlineExceededError as exc:
        reason = f"no answer within the attempt's deadline ({exc})"
    except (OSError, http.client.HTTPException) as exc:
        reason = f"connection failed ({type(exc).__name__})"
    else:
        if 200 <= status < 300:
            log.info("webhook %s delivered on attempt %d", delivery.msg_id, number)
            return AttemptResult(Status.DELIVERED, number)
        reason = f"receiver answered {status}"
    if number >= settings.webhook_max_attempts:
        return _dead(settings, client, delivery, number, reason)
    log.warning("webhook %s attempt %d failed: %s", delivery.msg_id, number, reason)
    return AttemptResult(Status.RETRY, number, retry_in_s=backoff_s(settings, number), reason=reason)


def _dead(
    settings: Settings, client: redis.Redis, delivery: WebhookDelivery, number: int, reason: str
) -> AttemptResult:
    client.xadd(
        settings.webhook_dead_stream,
        {"msg_id": delivery.msg_id, "job_id": delivery.event.get("job_id", ""), "tenant": delivery.tenant,
         "url": delivery.url, "attempts": str(number), "reason": reason, "delivery": delivery.model_dump_json()},
        maxlen=settings.webhook_dead_max_len,
        approximate=True,
    )  # fmt: skip
    log.error("webhook %s dead after %d attempt(s): %s", delivery.msg_id, number, reason)
    return AttemptResult(Status.DEAD, number, reason=reason)


def deliver(
    settings: Settings,
    client: redis.Redis,
    delivery: WebhookDelivery,
    sleep: Callable[[float], None] = time.sleep,
) -> AttemptResult:
    """Attempt until delivered or dead, sleeping the backoff in between (for a process of its
    own; a task queue schedules :func:`attempt` instead)."""
    number = 1
    while True:
        result = attempt(settings, client, delivery, number)
        if result.status is not Status.RETRY:
            return result
        sleep(result.retry_in_s)
        number += 1


def on_terminal(
    client: redis.Redis,
    settings: Settings,
    docs: Sequence[JobDocument],
    schedule: Callable[[WebhookDelivery], None],
) -> list[Published | None]:
    """The hook for jobs' terminal documents (a chunk's, or one): publish each one's event once
    and hand its webhook, if it has a callback, to ``schedule`` (which enqueues the delivery
    task; nothing is sent here). The events and the callbacks' lookups go in one pipelined
    round trip, the webhooks' once-only markers in another.

    Idempotent, and safe to call again after it raised: each event is published once, and each
    webhook scheduled once ``schedule`` succeeded for it.

    Returns:
        Per document, the published event, or None when an earlier call published it.
    """
    pipe = client.pipeline(transaction=False)
    events = publish_completions(pipe, settings, docs)
    for doc in docs:
        pipe.get(keys.job_meta_key(doc.address))
    replies = execute_scripted(pipe)
    metas = [meta_of(raw) for raw in replies[len(docs) :]]
    deliveries = [(doc, d) for doc, m in zip(docs, metas, strict=True) if (d := WebhookDelivery.for_job(doc, m))]
    if deliveries:
        markers = [keys.job_webhook_key(doc.address) for doc, _ in deliveries]
        marks = client.pipeline(transaction=False)
        for marker in markers:
            marks.set(marker, "1", nx=True, ex=settings.job_ttl_s)
        fresh = {marker for marker, new in zip(markers, marks.execute(), strict=True) if new}
        for n, (marker, (_, delivery)) in enumerate(zip(markers, deliveries, strict=True)):
            if marker not in fresh:
                continue
            try:
                schedule(delivery)
            except Exception:
                # Not scheduled, this one nor the rest: the caller's retry schedules them.
                client.delete(*[m for m in markers[n:] if m in fresh])
                raise
    return [published(event, reply) for event, reply in zip(events, replies[: len(docs)], strict=True)]
