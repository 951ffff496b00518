"""Today's binding of the consumers' seams: the HTTP API's request models and the producer.

This is the one module of the package that reaches up (to ``api_stub`` and ``shared.producer``);
the job-kind registry replaces it with its own ``validate`` and ``submit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from api_stub.schemas import JobRequest as ApiJobRequest
from shared.events.model import MAX_REASON_CHARS, JobRequest, RequestRejectedError, Submit
from shared.producer import Producer
from shared.tenants import Tenant

_REQUESTS: TypeAdapter[Any] = TypeAdapter(ApiJobRequest)


def validate(kind: str, fields: Mapping[str, Any]) -> dict[str, str]:
    """Validate ``fields`` as the body of ``POST /v1/jobs`` for ``kind`` (without ``job_id``).

    Raises:
        RequestRejectedError: naming each bad field and what is wrong with it.
    """
    try:
        request = _REQUESTS.validate_python({**fields, "kind": kind})
    except ValidationError as exc:
        # loc and msg only: pydantic's "input" would echo the value.
        reasons = ["{}: {}".format(".".join(str(p) for p in e["loc"]) or "request", e["msg"]) for e in exc.errors()]
        raise RequestRejectedError("; ".join(reasons)[:MAX_REASON_CHARS]) from None
    inputs: dict[str, str] = request.inputs()
    return inputs


def producer_submit(producer: Producer) -> Submit:
    """A ``Submit`` seam on ``producer``: idempotent on the request's job id."""

    def submit(request: JobRequest) -> str:
        return producer.submit(request.kind, request.inputs, request.job_id, Tenant(request.tenant)).job_id

    return submit
