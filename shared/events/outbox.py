"""Completion events: one entry per terminal job on a length-trimmed Redis stream.

Consumers read it with consumer groups (``XREADGROUP``), each group once. An event carries the
job's id, kind, tenant, status, code, verified, confidence and time, and what correlates it (the
client's ``reference``, the intake ``source`` and ``entry_id``): never images, templates or
features. The tenant is the job document's; its callback URL lives beside the document
(:func:`remember`), which does not carry it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from shared import keys
from shared.config import Settings
from shared.events.model import DEFAULT_TENANT
from shared.jobs.model import JobDocument

EVENT_FIELDS = (
    "job_id", "kind", "tenant", "status", "code", "verified", "confidence", "time",
    "reference", "source", "entry_id",
)  # fmt: skip

# The marker and the XADD in one script: a finish that runs twice (a retried worker, a sweeper)
# publishes once, and a crash cannot leave a marker without its event. The marker lives as long as
# the job's document (KEYS[3]) still does, at most ARGV[1] s: a reader that cut the document's TTL
# (a backlog) leaves nothing behind, even when it read the document before this ran.
_PUBLISH_ONCE = """
local ttl_ms = tonumber(ARGV[1]) * 1000
local left = redis.call('PTTL', KEYS[3])
if left > 0 and left < ttl_ms then ttl_ms = left end
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ttl_ms) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
end
return false
"""


@dataclass(frozen=True)
class JobMeta:
    tenant: str = DEFAULT_TENANT
    callback_url: str | None = None


def remember(client: redis.Redis, settings: Settings, job_id: str, meta: JobMeta) -> None:
    """Keep the job's tenant and callback for its completion; the first submit's meta wins."""
    value = json.dumps({"tenant": meta.tenant, "callback_url": meta.callback_url})
    client.set(keys.job_meta_key(job_id), value, nx=True, ex=settings.job_ttl_s)


def forget_unless_submitted(client: redis.Redis, job_id: str) -> None:
    """Drop the meta of a request that made no job, so a corrected resubmit sets its own."""
    if not client.exists(keys.job_key(job_id)):
        client.delete(keys.job_meta_key(job_id))


def recall(client: redis.Redis, job_id: str) -> JobMeta:
    return meta_of(client.get(keys.job_meta_key(job_id)))


def meta_of(raw: bytes | str | None) -> JobMeta:
    """The meta :func:`remember` stored (as read from its key); the default when there is none."""
    if raw is None:
        return JobMeta()
    data = json.loads(raw)
    return JobMeta(tenant=str(data.get("tenant") or DEFAULT_TENANT), callback_url=data.get("callback_url"))


def completion_event(doc: JobDocument) -> dict[str, str]:
    """The event of a terminal job, as stream fields (strings; empty when not applicable); its
    tenant is the document's own."""
    result: dict[str, Any] = doc.result or {}
    code = doc.error.code if doc.error is not None else str(result.get("code", ""))
    verified = result.get("verified")
    confidence = result.get("confidence")
    digits = 6
    candidates = result.get("candidates")
    if isinstance(candidates, list):
        # A 1:N answer: its best candidate's verdict, and never more than two decimals of
        # confidence (exact scores let chosen probes solve for an enrolled template).
        best = candidates[0] if candidates else {}
        verified, confidence, digits = bool(best.get("verified", False)), best.get("confidence"), 2
    finished = doc.finished_at or doc.created_at
    return {
        "job_id": doc.job_id,
        "kind": doc.kind,
        "tenant": doc.tenant,
        "status": doc.status.value,
        "code": code,
        "verified": "" if verified is None else str(bool(verified)).lower(),
        "confidence": "" if confidence is None else f"{float(confidence):.{digits}f}",
        "time": finished.isoformat(),
        "reference": doc.reference or "",
        "source": doc.origin.source if doc.origin is not None else "",
        "entry_id": doc.origin.entry_id if doc.origin is not None else "",
    }


@dataclass(frozen=True)
class Published:
    """A published completion: its stream id and the event."""

    event_id: str
    event: dict[str, str]


def publish_completions(pipe: Pipeline, settings: Settings, docs: Sequence[JobDocument]) -> list[dict[str, str]]:
    """Queue on ``pipe`` the once-only publish of each terminal job's completion event.

    Queue after the terminal documents are stored (``shared.events.webhooks.on_terminal`` does,
    with the webhooks' lookups in the same round trip). The pipeline's reply for each is its
    stream id, or None when the job had published already (see :func:`published`).

    Returns:
        The events, in order.

    Raises:
        ValueError: a job is not terminal (nothing was queued).
    """
    bad = next((doc for doc in docs if not doc.status.terminal), None)
    if bad is not None:
        raise ValueError(f"job {bad.job_id} is {bad.status.value}, not terminal")
    # EVALSHA, loading the script only when Redis does not know it: its text is not sent per job.
    publish_once = pipe.register_script(_PUBLISH_ONCE)
    events = []
    for doc in docs:
        event = completion_event(doc)
        flat = [part for name in EVENT_FIELDS for part in (name, event[name])]
        publish_once(
            keys=[keys.job_published_key(doc.address), settings.events_completed_stream, keys.job_key(doc.address)],
            args=[settings.job_ttl_s, settings.events_stream_max_len, *flat],
            client=pipe,
        )
        events.append(event)
    return events


def published(event: dict[str, str], reply: Any) -> Published | None:
    """The :class:`Published` of an event from its pipeline reply; None when published before."""
    if not reply:
        return None
    return Published(event_id=reply.decode() if isinstance(reply, bytes) else str(reply), event=event)
