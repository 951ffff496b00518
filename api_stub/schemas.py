"""Request bodies of ``POST /v1/jobs``: one model per job kind, told apart by ``kind``.

Validation here is syntax only (no settings, no I/O): references must be ``s3://bucket/key``
with a safe key, features must decode. Whether a bucket may be read is checked by the route
against the settings' allow-list.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared import features
from shared.errors import FeaturesError, JobError, ReferenceRejectedError
from shared.gallery import inputs as gallery_inputs
from shared.jobs.model import JOB_ID_PATTERN, JOB_INPUTS, MAX_FEATURES_CHARS, InputType, JobKind
from shared.storage.refs import MAX_REF_CHARS, parse_ref


def _s3_ref(value: str) -> str:
    try:
        ref = parse_ref(value)
    except ReferenceRejectedError as exc:
        raise ValueError(exc.message) from None
    # Never a local path from the network: it would let a caller read the worker's files.
    if ref.scheme != "s3":
        raise ValueError("must be an s3://bucket/key reference")
    return value


def _features(value: str) -> str:
    try:
        features.decode(value)
    except FeaturesError as exc:
        raise ValueError(exc.message) from None
    return value


ImageRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_REF_CHARS,
        description="s3://bucket/key of an image, in an allowed bucket",
        examples=["s3://kyc-images/onboarding/case-123/selfie.jpg"],
    ),
    AfterValidator(_s3_ref),
]
FeaturesString = Annotated[
    str,
    Field(min_length=1, max_length=MAX_FEATURES_CHARS, description="a features string from a faces result"),
    AfterValidator(_features),
]


def _gallery_input(input_type: str) -> AfterValidator:
    def check(value: str) -> str:
        try:
            gallery_inputs.check(input_type, value)
        except JobError as exc:
            raise ValueError(exc.message) from None
        return value

    return AfterValidator(check)


def _probe(value: str) -> str:
    # A features string, else (like every image here) an s3:// reference, never a local path.
    try:
        features.decode(value)
    except FeaturesError:
        return _s3_ref(value)
    return value


GalleryName = Annotated[str, Field(description="gallery name, e.g. customers"), _gallery_input("gallery")]
FaceId = Annotated[str, Field(description="the caller's id of the face, e.g. a customer id"), _gallery_input("face_id")]
Probe = Annotated[
    str,
    Field(min_length=1, max_length=gallery_inputs.MAX_PROBE_CHARS, description="features string or s3://bucket/key"),
    AfterValidator(_probe),
]
TopK = Annotated[str, Field(description='candidates to return, "1" to "1000"'), _gallery_input("top_k")]
JobId = Annotated[
    str,
    Field(
        pattern=JOB_ID_PATTERN,
        description="Idempotency key: resubmitting the same id returns the existing job.",
    ),
]


class _JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: JobId | None = None

    def inputs(self) -> dict[str, str]:
        """The job's inputs as the producer takes them (every field but ``kind`` and ``job_id``)."""
        return self.model_dump(exclude={"kind", "job_id"})


class FacesJobRequest(_JobRequest):
    """Detect and describe every face of one image."""

    kind: Literal["faces"]
    image: ImageRef


class VerifyJobRequest(_JobRequest):
    """Match a selfie's single face against the portrait on an identity document."""

    kind: Literal["verify"]
    selfie: ImageRef
    document: ImageRef


class MatchJobRequest(_JobRequest):
    """Compare two features strings."""

    kind: Literal["match"]
    features1: FeaturesString
    features2: FeaturesString


class EnrollJobRequest(_JobRequest):
    """Enrol (or replace) a face in a gallery, from an image with one usable face or features."""

    kind: Literal["enroll"]
    gallery: GalleryName
    face_id: FaceId
    probe: Probe


class SearchJobRequest(_JobRequest):
    """The top-k enrolled faces most like the probe, each verified at the gallery's 1:N threshold."""

    kind: Literal["search"]
    gallery: GalleryName
    probe: Probe
    top_k: TopK = "10"


class DeleteJobRequest(_JobRequest):
    """Erase a face's template from a gallery."""

    kind: Literal["delete"]
    gallery: GalleryName
    face_id: FaceId


JobRequest = Annotated[
    FacesJobRequest | VerifyJobRequest | MatchJobRequest | EnrollJobRequest | SearchJobRequest | DeleteJobRequest,
    Field(discriminator="kind"),
]


def image_fields(kind: JobKind) -> list[str]:
    """The request fields of ``kind`` that name an image (for the bucket allow-list check)."""
    return [name for name, type_ in JOB_INPUTS[kind].items() if type_ is InputType.REF]
