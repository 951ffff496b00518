"""Bucket notifications -> jobs, by the rule table of the settings (``KYC_EVENT_RULES``).

One job per object version: the job id is derived from bucket, key, version id (or ETag) and
sequencer, and a marker remembers it, so a redelivered or duplicated event never makes a second
job. A key no rule matches is counted and dropped.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from shared import keys
from shared.config import EventRule, Settings
from shared.events.model import (
    DEFAULT_TENANT,
    Handled,
    JobRequest,
    MalformedEventError,
    Outcome,
    RequestRejectedError,
    Submit,
    Validate,
    handled_error,
)
from shared.events.outbox import JobMeta, remember
from shared.events.reasons import PATTERN_WORDS, Problem
from shared.events.records import ObjectEvent, parse_notification
from shared.events.sources import Entry
from shared.jobs.model import JobOrigin
from shared.storage.refs import Ref
from shared.storage.s3 import s3_client, translate_error
from shared.tenants import TENANT_PATTERN

# The newest object under a prefix of a bucket, as s3://bucket/key pinned to the version found
# (see shared.storage.refs); None when there is none.
Lookup = Callable[[str, str], str | None]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_LISTED = 10_000  # keys examined per lookup: a case folder holds a handful


@dataclass(frozen=True)
class Rule:
    """A compiled :class:`~shared.config.EventRule`."""

    spec: EventRule
    regex: re.Pattern[str]

    @classmethod
    def compile(cls, spec: EventRule) -> Rule:
        """Raises ValueError for a pattern or template that names an unknown segment."""
        pattern = spec.pattern
        rest = pattern.endswith("...")
        if rest:
            pattern = pattern[: -len("...")]
        names: list[str] = []
        regex, last = "", 0
        for m in _PLACEHOLDER.finditer(pattern):
            regex += re.escape(pattern[last : m.start()]) + f"(?P<{m.group(1)}>[^/]+)"
            names.append(m.group(1))
            last = m.end()
        regex += re.escape(pattern[last:]) + (".+" if rest else "")
        known = {*names, "ref"}
        for template in (*spec.inputs.values(), *spec.lookup.values(), spec.tenant or ""):
            used = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
            if used - known:
                raise ValueError(f"event rule {spec.pattern!r}: unknown placeholder(s) {sorted(used - known)}")
        return cls(spec, re.compile(regex))

    def match(self, event: ObjectEvent) -> dict[str, str] | None:
        if event.bucket != self.spec.bucket:
            return None
        m = self.regex.fullmatch(event.key)
        return None if m is None else {**m.groupdict(), "ref": event.ref}


def s3_lookup(settings: Settings) -> Lookup:
    """A :data:`Lookup` listing the prefix on the configured S3 endpoint, and pinning the newest
    object to the version it has now (``HEAD``: its version id, or its ETag when the bucket keeps
    no versions), so a document re-uploaded after the job was made is not read in its place."""

    def newest(bucket: str, prefix: str) -> str | None:
        best: tuple[Any, str] | None = None
        pages = (
            s3_client(settings)
            .get_paginator("list_objects_v2")
            .paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"MaxItems": _MAX_LISTED})
        )
        for page in pages:
            for obj in page.get("Contents", []):
                # LastModified has 1 s resolution: the greater key breaks a tie, the same every time.
                candidate = (obj["LastModified"], obj["Key"])
                if best is None or candidate > best:
                    best = candidate
        if best is None:
            return None
        found = Ref("s3", best[1], bucket)
        try:
            head = s3_client(settings).head_object(Bucket=bucket, Key=found.key)
        except Exception as exc:  # gone since the listing, or S3 down: the project's storage error
            raise translate_error(exc, found) from None
        return str(found.pinned(head.get("VersionId"), head.get("ETag")))

    return newest


class BucketEvents:
    """Turns one notification entry into jobs.

    Args:
        client: Redis for the idempotency markers.
        rules: the settings' rule table, compiled once here (a bad rule fails at start).
        validate, submit: the job system's seams (see :mod:`shared.events.model`).
        lookup: where ``lookup`` inputs are resolved (default: S3).
    """

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        validate: Validate,
        submit: Submit,
        lookup: Lookup | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.rules = [Rule.compile(spec) for spec in settings.event_rules]
        self.validate = validate
        self.submit = submit
        self.lookup = lookup or s3_lookup(settings)

    def __call__(self, entry: Entry) -> list[Handled]:
        body = entry.body
        if body is None:  # a stream entry: one field holding the notification JSON
            values = list((entry.fields or {}).values())
            body = values[0] if len(values) == 1 else json.dumps(entry.fields)
        try:
            events = parse_notification(body)
        except MalformedEventError as exc:
            return [Handled(Outcome.MALFORMED, reason=exc.message)]
        if not events:
            return [Handled(Outcome.IGNORED)]
        origin = JobOrigin(source=entry.source, entry_id=entry.entry_id)
        return [self._one(event, origin) for event in events]

    def _one(self, event: ObjectEvent, origin: JobOrigin) -> Handled:
        for rule in self.rules:
            values = rule.match(event)
            if values is not None:
                try:
                    return self._job(rule.spec, event, values, origin)
                except Exception as exc:
                    return handled_error(exc)
        return Handled(Outcome.UNMATCHED)

    def _job(self, spec: EventRule, event: ObjectEvent, values: dict[str, str], origin: JobOrigin) -> Handled:
        seen_key = keys.event_seen_key(event.idempotency_key())
        seen = self.client.get(seen_key)
        if seen is not None:
            return Handled(Outcome.DUPLICATE, job_id=seen.decode() if isinstance(seen, bytes) else str(seen))
        fields = {name: template.format_map(values) for name, template in spec.inputs.items()}
        for name, prefix_template in spec.lookup.items():
            prefix = prefix_template.format_map(values)
            found = self.lookup(event.bucket, prefix)
            if found is None:
                raise RequestRejectedError.of(
                    [Problem(name, "no object under the rule's prefix in the event's bucket", "missing")]
                )
            fields[name] = found
        tenant = spec.tenant.format_map(values) if spec.tenant else DEFAULT_TENANT
        if not re.match(TENANT_PATTERN, tenant):
            raise RequestRejectedError.of([Problem("tenant", PATTERN_WORDS["tenant"], "form")])
        valid = self.validate({"kind": spec.kind, **fields}, tenant)
        request = JobRequest(
            kind=spec.kind,
            inputs=valid.inputs,
            job_id=f"s3e-{event.idempotency_key()}",
            tenant=tenant,
            origin=origin,
        )
        remember(self.client, self.settings, request.address, JobMeta(tenant=tenant))
        job_id = self.submit(request)
        self.client.set(seen_key, job_id, ex=self.settings.job_ttl_s)
        return Handled(Outcome.CREATED, job_id=job_id)
