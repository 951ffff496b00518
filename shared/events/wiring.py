"""The binding of the consumers' seams to the job system: the HTTP API's request models and
checks validate, the producer submits.

Validation is the HTTP API's (``api_stub.schemas`` serves the same models of
:mod:`shared.events.bodies`): the kind's request model parses every field once, an image must be
an ``s3://`` reference in an allowed bucket, never a local path from the network, and a callback
must pass the tenant's allow-list. A reject's reason is the 422's, word for word.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shared.config import Settings
from shared.events.bodies import check_request, parse_body
from shared.events.model import JobRequest, Submit, Validate, ValidRequest
from shared.producer import Producer
from shared.tenants import Tenant


def validator(settings: Settings, check_image: Callable[[str], object]) -> Validate:
    """A ``Validate`` seam: the request models, then ``check_image`` (an image store's
    ``validate``: the bucket allow-list) on each image and the callback's checks."""

    def validate(request: Mapping[str, Any], tenant: str) -> ValidRequest:
        body = parse_body(request)
        check_request(body, tenant, settings, check_image)
        return ValidRequest(
            kind=body.kind,
            inputs=body.inputs(),
            job_id=body.job_id,
            callback_url=body.callback_url,
            reference=body.reference,
        )

    return validate


def producer_submit(producer: Producer) -> Submit:
    """A ``Submit`` seam on ``producer``: idempotent on the request's job id."""

    def submit(request: JobRequest) -> str:
        doc = producer.submit(
            request.kind,
            request.inputs,
            request.job_id,
            Tenant(request.tenant),
            reference=request.reference,
            origin=request.origin,
        )
        return doc.job_id

    return submit
