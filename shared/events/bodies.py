"""Job request bodies: one model per registered job kind, told apart by ``kind``, for
``POST /v1/jobs`` and the intake alike.

The models are derived from :data:`shared.jobs.registry.REGISTRY`: each kind's input fields, with
the HTTP rules of their input type. Validation here is syntax only (no settings, no I/O):
references must be ``s3://bucket/key`` with a safe key (never a local path from the network),
features must decode. :func:`check_request` adds the checks that need settings: the bucket
allow-list and the callback's. Every problem is worded by :mod:`shared.events.reasons`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from shared.config import Settings
from shared.errors import KYCFaceError, ReferenceRejectedError
from shared.events.callbacks import MAX_URL_CHARS, check_callback
from shared.events.model import CallbackRefusedError, RequestRejectedError
from shared.events.reasons import Problem, problems_of, refused
from shared.jobs.inputs import MAX_FEATURES_CHARS, MAX_PROBE_CHARS, PARSERS, InputType, parse_probe
from shared.jobs.model import JOB_ID_PATTERN, MAX_REFERENCE_CHARS
from shared.jobs.registry import REGISTRY, JobKindSpec
from shared.storage.prefixes import check_tenant_prefix
from shared.storage.refs import MAX_REF_CHARS, Ref

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _http_rule(input_type: InputType) -> AfterValidator:
    """The input type's parser, with its error as a 422 message, and the HTTP rule on images."""
    parse = PARSERS[input_type]

    def check(value: str) -> str:
        try:
            parsed = parse(value)
        except KYCFaceError as exc:
            raise ValueError(exc.message) from None
        # Never a local path from the network: it would let a caller read the worker's files.
        if isinstance(parsed, Ref) and parsed.scheme != "s3":
            raise ValueError("must be an s3://bucket/key reference")
        return value

    return AfterValidator(check)


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


_FIELDS: dict[InputType, Any] = {
    InputType.REF: Field(
        min_length=1,
        max_length=MAX_REF_CHARS,
        description="s3://bucket/key of an image, in an allowed bucket; ?versionId=<id> or ?etag=<etag> pins a version",
        examples=["s3://kyc-images/onboarding/case-123/selfie.jpg"],
    ),
    InputType.FEATURES: Field(
        min_length=1, max_length=MAX_FEATURES_CHARS, description="a features string from a faces result"
    ),
    InputType.PROBE: Field(min_length=1, max_length=MAX_PROBE_CHARS, description="features string or s3://bucket/key"),
    InputType.GALLERY: Field(description="gallery name, e.g. customers"),
    InputType.FACE_ID: Field(description="the caller's id of the face, e.g. a customer id"),
    InputType.TOP_K: Field(description='candidates to return, "1" to "1000"'),
    InputType.FLAG: Field(description='"true" or "false"'),
}

JobId = Annotated[
    str,
    Field(
        pattern=JOB_ID_PATTERN,
        description="Idempotency key: resubmitting the same id returns the existing job.",
    ),
]

CallbackUrl = Annotated[
    str,
    Field(
        max_length=MAX_URL_CHARS,
        description="Where the signed completion webhook goes; its host must be on the tenant's allow-list.",
        examples=["https://hooks.acme.example/kyc"],
    ),
]

ClientReference = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_REFERENCE_CHARS,
        description="Your own correlation string, opaque to us: kept in the job document, the completion event and the webhook.",
        examples=["onboarding-7f3a/attempt-2"],
    ),
    AfterValidator(_no_control),
]

ENVELOPE = ("kind", "job_id", "callback_url", "reference")


class _JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    job_id: JobId | None = None
    callback_url: CallbackUrl | None = None
    reference: ClientReference | None = None

    def inputs(self) -> dict[str, str]:
        """The job's inputs as the producer takes them (every field but the envelope)."""
        return self.model_dump(exclude=set(ENVELOPE))


def _request_model(spec: JobKindSpec) -> type[_JobRequest]:
    fields: dict[str, Any] = {"kind": (Literal[spec.name], ...)}
    for name, input_type in spec.fields().items():
        info = spec.inputs.model_fields[name]
        default = ... if info.is_required() else str(info.default)
        fields[name] = (Annotated[str, _FIELDS[input_type], _http_rule(input_type)], default)
    title = "".join(part.capitalize() for part in spec.name.split("_")) + "JobRequest"
    doc = spec.help[:1].upper() + spec.help[1:] + "."
    model: type[_JobRequest] = create_model(title, __base__=_JobRequest, __doc__=doc, **fields)
    return model


REQUEST_MODELS = {spec.name: _request_model(spec) for spec in REGISTRY}
KINDS = tuple(REQUEST_MODELS)
if TYPE_CHECKING:
    JobRequestBody = _JobRequest
else:  # the union of the kinds' models, discriminated by ``kind``, for FastAPI to validate and document
    JobRequestBody = Annotated[Union[tuple(REQUEST_MODELS.values())], Field(discriminator="kind")]  # noqa: UP007
_ADAPTER: TypeAdapter[Any] = TypeAdapter(JobRequestBody)


def image_fields(kind: str) -> list[str]:
    """The request fields of ``kind`` that name an image (for the bucket allow-list check)."""
    return [name for name, type_ in REGISTRY.get(kind).fields().items() if type_ is InputType.REF]


def probe_fields(kind: str) -> list[str]:
    """The request fields of ``kind`` that take a probe: features, or an image reference."""
    return [name for name, type_ in REGISTRY.get(kind).fields().items() if type_ is InputType.PROBE]


def parse_body(data: Mapping[str, Any]) -> _JobRequest:
    """``data`` as the request model of its kind, as FastAPI validates a body.

    Raises:
        RequestRejectedError: its problems, as :func:`shared.events.reasons.problems_of` words them.
    """
    try:
        body: _JobRequest = _ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        raise RequestRejectedError.of(problems_of(exc.errors(), KINDS)) from None
    return body


def check_request(body: _JobRequest, tenant: str, settings: Settings, check_image: Callable[[str], object]) -> None:
    """The checks after the body's syntax: each image's bucket (``check_image``, the image
    store's ``validate``) and tenant prefix, then the callback against the tenant's allow-list
    and addresses.

    Raises:
        RequestRejectedError: every problem found, each naming its field.
    """
    problems: list[Problem] = []
    for name in image_fields(body.kind):
        try:
            ref = check_image(getattr(body, name))
            if isinstance(ref, Ref):
                check_tenant_prefix(settings, tenant, ref)
        except ReferenceRejectedError as exc:
            problems.append(refused(name, exc.message))
    for name in probe_fields(body.kind):
        try:
            probe = parse_probe(getattr(body, name))
        except KYCFaceError:
            continue  # not a probe at all: the worker's parse words it, as the producer's does
        if isinstance(probe, Ref):
            try:
                check_tenant_prefix(settings, tenant, probe)
            except ReferenceRejectedError as exc:
                problems.append(refused(name, exc.message))
    if body.callback_url is not None:
        try:
            check_callback(settings, tenant, body.callback_url)
        except CallbackRefusedError as exc:
            problems.append(refused("callback_url", exc.message))
    if problems:
        raise RequestRejectedError.of(problems)
