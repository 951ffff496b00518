"""Erasure outside job documents: the requests on the intake stream and list that carry a template.

A job request may carry a features string (an ``enroll`` or ``search`` probe) in a field, or in
the JSON of one field; it stays on the stream after its job was made (the stream is trimmed to
``KYC_EVENTS_STREAM_MAX_LEN``). A ``forget`` or ``delete`` removes each entry of its tenant
holding one of the erased templates, found by digest, so a copy under any seal is found too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any, cast

import redis

from shared import features
from shared.config import Settings
from shared.errors import KYCFaceError
from shared.tenants import DEFAULT_TENANT, Tenant

log = logging.getLogger(__name__)
PAGE = 1000
_MIN_FEATURES_CHARS = 64  # shorter strings are ids, kinds and references, never a template


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _strings(value: Any) -> Iterator[str]:
    """Every string in a field value, and in its JSON if it is an object or a list."""
    if isinstance(value, str):
        yield value
        if value[:1] in "{[":
            try:
                yield from _strings(json.loads(value))
            except ValueError:
                return
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _tenant_of(fields: Mapping[str, str]) -> str:
    if "tenant" in fields:
        return fields["tenant"]
    for value in fields.values():
        if value[:1] == "{":
            try:
                found = json.loads(value)
            except ValueError:
                continue
            if isinstance(found, dict) and isinstance(found.get("tenant"), str):
                return str(found["tenant"])
    return DEFAULT_TENANT


def holds(fields: Mapping[str, str], digests: set[str], tenant: Tenant) -> bool:
    """Whether a request of ``tenant`` carries one of the templates of ``digests``."""
    if _tenant_of(fields) != tenant:
        return False
    for text in (s for value in fields.values() for s in _strings(value)):
        if len(text) < _MIN_FEATURES_CHARS:
            continue
        try:
            if features.digest_of_string(text) in digests:
                return True
        except KYCFaceError:
            continue
    return False


def purge_intake(client: redis.Redis, settings: Settings, digests: set[str], tenant: Tenant) -> int:
    """Delete the intake stream's and list's requests of ``tenant`` that carry those templates.

    Returns:
        How many entries were removed.
    """
    if not digests:
        return 0
    removed = 0
    stream, start = settings.events_intake_stream, "-"
    while True:
        entries = cast(list[tuple[Any, dict[Any, Any]]], client.xrange(stream, min=start, count=PAGE) or [])
        doomed = [
            _text(entry_id)
            for entry_id, raw in entries
            if holds({_text(k): _text(v) for k, v in raw.items()}, digests, tenant)
        ]
        if doomed:
            removed += int(client.xdel(stream, *doomed))
        if len(entries) < PAGE:
            break
        start = "(" + _text(entries[-1][0])
    listed: list[Any] = client.lrange(settings.events_intake_list, 0, -1) or []
    for raw in listed:
        text = _text(raw)
        try:
            body = json.loads(text)
        except ValueError:
            continue
        if isinstance(body, dict) and holds({k: json.dumps(v) if not isinstance(v, str) else v
                                             for k, v in body.items()}, digests, tenant):  # fmt: skip
            removed += int(client.lrem(settings.events_intake_list, 0, text))
    if removed:
        log.info("erased %d intake request(s) holding a template", removed)
    return removed
