"""Request bodies of ``POST /v1/jobs``: one model per registered job kind, told apart by ``kind``.

The models are derived from :data:`shared.jobs.registry.REGISTRY`: each kind's input fields, with
the HTTP rules of their input type. Validation here is syntax only (no settings, no I/O):
references must be ``s3://bucket/key`` with a safe key (never a local path from the network),
features must decode. Whether a bucket may be read is checked by the route against the settings'
allow-list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from shared.errors import KYCFaceError
from shared.events.callbacks import MAX_URL_CHARS
from shared.jobs.inputs import MAX_FEATURES_CHARS, MAX_PROBE_CHARS, PARSERS, InputType
from shared.jobs.model import JOB_ID_PATTERN
from shared.jobs.registry import REGISTRY, JobKindSpec
from shared.storage.refs import MAX_REF_CHARS, Ref


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


_FIELDS: dict[InputType, Any] = {
    InputType.REF: Field(
        min_length=1,
        max_length=MAX_REF_CHARS,
        description="s3://bucket/key of an image, in an allowed bucket",
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


class _JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    job_id: JobId | None = None
    callback_url: CallbackUrl | None = None

    def inputs(self) -> dict[str, str]:
        """The job's inputs as the producer takes them (every field but the envelope)."""
        return self.model_dump(exclude={"kind", "job_id", "callback_url"})


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
if TYPE_CHECKING:
    JobRequest = _JobRequest
else:  # the union of the kinds' models, discriminated by ``kind``, for FastAPI to validate and document
    JobRequest = Annotated[Union[tuple(REQUEST_MODELS.values())], Field(discriminator="kind")]  # noqa: UP007


def image_fields(kind: str) -> list[str]:
    """The request fields of ``kind`` that name an image (for the bucket allow-list check)."""
    return [name for name, type_ in REGISTRY.get(kind).fields().items() if type_ is InputType.REF]
