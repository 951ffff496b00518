"""Plain JSON job requests from any producer, turned into jobs.

A request is the HTTP API's body plus an optional ``tenant``::

    {"kind": "verify", "selfie": "s3://...", "document": "s3://...", "job_id": "case-1:verify",
     "tenant": "acme", "callback_url": "https://hooks.acme.example/kyc", "reference": "case-1"}

On a stream it is either those fields flat (``XADD kyc:intake * kind verify selfie s3://...``)
or one field ``request`` holding the JSON, optionally with flat envelope fields beside it
(``XADD kyc:intake * request '{...}' tenant acme``); on a list it is the JSON. It is checked
by the HTTP API's models and checks (:mod:`shared.events.bodies`), so a reject's reason is the
422's. Without a ``job_id`` the job id is derived from the tenant and the request
(:func:`derived_job_id`), so a redelivered entry finds the job it already made.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import redis

from shared.config import Settings
from shared.events.model import (
    DEFAULT_TENANT,
    Handled,
    JobRequest,
    Outcome,
    RequestRejectedError,
    Submit,
    Validate,
    handled_error,
)
from shared.events.outbox import JobMeta, forget_unless_submitted, remember
from shared.events.reasons import PATTERN_WORDS, Problem
from shared.events.sources import Entry
from shared.jobs.model import JobOrigin
from shared.tenants import TENANT_PATTERN

# Envelope fields that, sent empty, count as not sent (a producer's template with a blank slot).
_OPTIONAL = ("job_id", "callback_url", "reference")


def _rejected(field: str, what: str, type_: str) -> RequestRejectedError:
    return RequestRejectedError.of([Problem(field, what, type_)])


def _payload(entry: Entry) -> dict[str, Any]:
    """The request of an entry: its flat fields, or the JSON of its ``request`` field (or list
    item) with any flat fields beside it added, a field given twice being refused."""
    if entry.fields is not None and "request" not in entry.fields:
        return dict(entry.fields)
    raw = entry.fields["request"] if entry.fields is not None else entry.body
    try:
        data = json.loads(raw or "")
    except ValueError:
        raise _rejected("request", "is not JSON", "type") from None
    if not isinstance(data, dict):
        raise _rejected("request", "must be a JSON object", "type")
    for name, value in (entry.fields or {}).items():
        if name == "request":
            continue
        if name in data:
            raise _rejected(name, "given both inside request and beside it", "duplicate")
        data[name] = value
    return data


def _tenant(data: dict[str, Any]) -> str:
    value = data.pop("tenant", None)
    if value is None or value == "":
        return DEFAULT_TENANT
    if not isinstance(value, str):
        raise _rejected("tenant", "must be a string", "type")
    if not re.match(TENANT_PATTERN, value):
        raise _rejected("tenant", PATTERN_WORDS["tenant"], "form")
    return value


def derived_job_id(tenant: str, request: Mapping[str, str]) -> str:
    """The job id of a request sent without ``job_id``: ``in-`` and the first 32 hex digits of
    the SHA-256 of ``tenant``, then each field as ``name=value`` in code-point order of the
    names, joined by the unit separator U+001F (``tenant`` and ``job_id`` are not among the
    fields; empty envelope fields count as absent).

    A function of what was sent, never of where or when: a redelivered entry, a producer's
    retry and the same request on the list all find the one job, and a producer can compute
    the id before it sends (docs/EVENTS.md has the recipe).
    """
    parts = [tenant, *(f"{name}={request[name]}" for name in sorted(request) if name != "job_id")]
    return "in-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class JobRequests:
    """Validates one intake entry and submits its job.

    Args:
        client: Redis for the job's tenant and callback (see :func:`shared.events.outbox.remember`).
        validate, submit: the job system's seams (see :mod:`shared.events.model`).
    """

    def __init__(self, client: redis.Redis, settings: Settings, validate: Validate, submit: Submit) -> None:
        self.client = client
        self.settings = settings
        self.validate = validate
        self.submit = submit

    def parse(self, entry: Entry) -> JobRequest:
        """The validated request of ``entry``.

        Raises:
            RequestRejectedError: malformed, invalid inputs, or a refused callback.
        """
        data = _payload(entry)
        tenant = _tenant(data)
        for name in _OPTIONAL:
            if data.get(name) is None or data.get(name) == "":
                data.pop(name, None)
        valid = self.validate(data, tenant)
        return JobRequest(
            kind=valid.kind,
            inputs=valid.inputs,
            job_id=valid.job_id or derived_job_id(tenant, data),
            tenant=tenant,
            callback_url=valid.callback_url,
            reference=valid.reference,
            origin=JobOrigin(source=entry.source, entry_id=entry.entry_id),
        )

    def __call__(self, entry: Entry) -> list[Handled]:
        request = None
        try:
            request = self.parse(entry)
            # Before the submit: a fast worker may finish the job before this line would run after it.
            remember(self.client, self.settings, request.address, JobMeta(request.tenant, request.callback_url))
            return [Handled(Outcome.CREATED, job_id=self.submit(request))]
        except Exception as exc:
            handled = handled_error(exc)
            if request is not None and handled.outcome is Outcome.REJECTED:
                forget_unless_submitted(self.client, request.address)
            return [handled]
