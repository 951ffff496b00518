"""The binding of the consumers' seams to the job system: the job-kind registry validates, the
producer submits.

Validation is the HTTP API's (``api_stub.schemas`` derives its models from the same registry):
the kind's input model parses every field once, and an image must be an ``s3://`` reference,
never a local path from the network. The bucket allow-list is the producer's, checked on submit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.errors import KYCFaceError
from shared.events.model import MAX_REASON_CHARS, JobRequest, RequestRejectedError, Submit
from shared.jobs.inputs import InputType
from shared.jobs.registry import REGISTRY
from shared.producer import Producer
from shared.storage.refs import Ref
from shared.tenants import Tenant


def validate(kind: str, fields: Mapping[str, Any]) -> dict[str, str]:
    """Validate ``fields`` as the inputs of a ``kind`` job (the body of ``POST /v1/jobs``
    without ``kind`` and ``job_id``).

    Raises:
        RequestRejectedError: an unknown kind, missing or unexpected fields, or a bad value
            (the reason names the field, never its value).
    """
    try:
        spec = REGISTRY.get(kind)
        if any(not isinstance(value, str) for value in fields.values()):
            bad = sorted(name for name, value in fields.items() if not isinstance(value, str))
            raise RequestRejectedError(f"{', '.join(bad)}: must be strings")
        parsed = spec.parse(fields)
    except KYCFaceError as exc:
        raise RequestRejectedError(exc.message[:MAX_REASON_CHARS]) from None
    for name, input_type in spec.fields().items():
        value = getattr(parsed, name)
        if input_type is InputType.REF and isinstance(value, Ref) and value.scheme != "s3":
            raise RequestRejectedError(f"{name}: must be an s3://bucket/key reference")
    return parsed.to_wire(fields)


def producer_submit(producer: Producer) -> Submit:
    """A ``Submit`` seam on ``producer``: idempotent on the request's job id."""

    def submit(request: JobRequest) -> str:
        return producer.submit(request.kind, request.inputs, request.job_id, Tenant(request.tenant)).job_id

    return submit
