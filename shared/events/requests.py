"""Plain JSON job requests from any producer, turned into jobs.

A request is the HTTP API's body plus an optional ``tenant`` and ``callback_url``::

    {"kind": "verify", "selfie": "s3://...", "document": "s3://...", "job_id": "case-1:verify",
     "tenant": "acme", "callback_url": "https://hooks.acme.example/kyc"}

On a stream it is either those fields flat (``XADD kyc:intake * kind verify selfie s3://...``)
or one field ``request`` holding the JSON; on a list it is the JSON. Without a ``job_id`` the
job id is derived from the entry, so a redelivered entry finds the job it already made.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import redis

from shared.config import Settings
from shared.events.callbacks import check_callback
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
from shared.events.sources import Entry
from shared.jobs.model import JOB_ID_PATTERN
from shared.tenants import TENANT_PATTERN

_ENVELOPE = ("kind", "job_id", "tenant", "callback_url")


def _payload(entry: Entry) -> dict[str, Any]:
    if entry.fields is not None and set(entry.fields) != {"request"}:
        return dict(entry.fields)
    raw = entry.fields["request"] if entry.fields is not None else entry.body
    try:
        data = json.loads(raw or "")
    except ValueError:
        raise RequestRejectedError("request is not JSON") from None
    if not isinstance(data, dict):
        raise RequestRejectedError("request is not a JSON object")
    return data


def _optional_str(data: dict[str, Any], name: str, pattern: str | None = None) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or (pattern is not None and not re.match(pattern, value)):
        raise RequestRejectedError(f"{name}: must match {pattern}" if pattern else f"{name}: must be a string")
    return value


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
        kind = data.get("kind")
        if not isinstance(kind, str) or not kind:
            raise RequestRejectedError("kind: required")
        job_id = _optional_str(data, "job_id", JOB_ID_PATTERN)
        tenant = _optional_str(data, "tenant", TENANT_PATTERN) or DEFAULT_TENANT
        callback_url = _optional_str(data, "callback_url")
        inputs = self.validate(kind, {k: v for k, v in data.items() if k not in _ENVELOPE})
        if callback_url is not None:
            check_callback(self.settings, tenant, callback_url)
        if job_id is None:
            digest = hashlib.sha256(f"{entry.source}\x1f{entry.entry_id}".encode()).hexdigest()[:32]
            job_id = f"in-{digest}"
        return JobRequest(kind=kind, inputs=inputs, job_id=job_id, tenant=tenant, callback_url=callback_url)

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
