"""Replaying dead-lettered webhooks (``kycface webhooks replay``).

Each dead letter on ``KYC_WEBHOOK_DEAD_STREAM`` holds the delivery itself; a replay makes one
more attempt of it, with the same ``webhook-id`` (a receiver that drops repeats by it sees one
delivery however often it was tried), and takes the letter off the stream. An attempt that fails
again is dead-lettered again, as a new entry with its reason, for a later replay.

Idempotent: a marker per dead letter (``keys.webhook_replay_key``) is set before its attempt, so
two replays running at once, or one run again after a crash, never send a letter twice; only
the letters on the stream when the replay started are read, never the ones it wrote itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from shared import keys
from shared.config import Settings
from shared.events.webhooks import Status, WebhookDelivery, attempt

log = logging.getLogger(__name__)
_PAGE = 100


@dataclass(frozen=True)
class Replayed:
    """One dead letter's replay: its entry id, the webhook's id, and what became of it
    (``delivered``, ``dead`` again, or ``skipped``: replayed before, or not a delivery we can read)."""

    entry_id: str
    msg_id: str
    tenant: str
    outcome: str


def since_id(since: str | None) -> str:
    """The first stream id to replay from ``--since``: a stream id (``1733630000000-0``), an ISO
    8601 time (``2026-12-08T03:00:00Z``; naive times are UTC), or everything when None.

    Raises:
        ValueError: neither a stream id nor a time.
    """
    if not since:
        return "-"
    head, _, tail = since.partition("-")
    if head.isdigit() and (tail == "" or tail.isdigit()):
        return since
    moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return str(int(moment.timestamp() * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _letters(client: redis.Redis, stream: str, start: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The stream's entries from ``start`` up to its last entry now, page by page."""
    last: Any = client.xrevrange(stream, count=1)
    if not last:
        return
    end = _text(last[0][0])
    while True:
        page: Any = client.xrange(stream, min=start, max=end, count=_PAGE)
        for entry_id, fields in page:
            yield _text(entry_id), {_text(k): _text(v) for k, v in fields.items()}
        if len(page) < _PAGE:
            return
        start = "(" + _text(page[-1][0])  # exclusive: after the last one read


def replay(
    settings: Settings, client: redis.Redis, since: str | None = None, tenant: str | None = None
) -> list[Replayed]:
    """Replay the dead letters from ``since`` (see :func:`since_id`), of ``tenant`` only when given.

    Returns:
        One :class:`Replayed` per letter considered, in stream order.
    """
    stream = settings.webhook_dead_stream
    done: list[Replayed] = []
    for entry_id, fields in _letters(client, stream, since_id(since)):
        if tenant is not None and fields.get("tenant") != tenant:
            continue
        try:
            delivery = WebhookDelivery.model_validate_json(fields.get("delivery", ""))
        except ValueError:
            log.warning("dead letter %s holds no delivery we can read; left on %s", entry_id, stream)
            done.append(Replayed(entry_id, fields.get("msg_id", ""), fields.get("tenant", ""), "skipped"))
            continue
        if not client.set(keys.webhook_replay_key(entry_id), "1", nx=True, ex=settings.job_ttl_s):
            # Attempted by an earlier replay that stopped before taking it off: never twice.
            client.xdel(stream, entry_id)
            done.append(Replayed(entry_id, delivery.msg_id, delivery.tenant, "skipped"))
            continue
        # The last attempt's number: a failure goes straight back to the dead-letter stream.
        result = attempt(settings, client, delivery, settings.webhook_max_attempts)
        client.xdel(stream, entry_id)
        outcome = "delivered" if result.status is Status.DELIVERED else "dead"
        log.info("replayed dead letter %s (%s): %s", entry_id, delivery.msg_id, outcome)
        done.append(Replayed(entry_id, delivery.msg_id, delivery.tenant, outcome))
    return done
