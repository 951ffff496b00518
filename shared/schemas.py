"""Result documents of the face engine and the gallery: the wire format callers poll for.

Every document has a ``code``. ``model_dump()`` of a result is the JSON a caller gets, whether it
came from the Python API, the CLI, a Celery task or the HTTP stub.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import FeaturesError, ImageReason, KYCFaceError


class PartialReason(str, Enum):
    """Why a detected face is unfit for matching. The first that applies is reported."""

    CROPPED = "CROPPED"
    TOO_SMALL = "TOO_SMALL"
    NOT_FRONT_FACING = "NOT_FRONT_FACING"
    TOO_DARK = "TOO_DARK"
    BLURRY = "BLURRY"
    # Found only on the image turned (see ``orientation``): a verify selfie must be upright.
    TURNED = "TURNED"


class QualityLevel(str, Enum):
    """The ``quality`` option of get_faces: which faces count as usable (see shared/quality.py)."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class QualityGate(BaseModel):
    """Thresholds of one level. Pose in landmark units (see :func:`pose`), pixels in the original."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_face_px: float  # face box width
    max_yaw: float  # |nose offset| / eye distance; 0.45 is roughly 40 degrees
    min_pitch: float  # nose height between eye line (0) and mouth line (1)
    max_pitch: float
    min_sharpness: float  # Laplacian variance of the aligned inner face
    min_luma: float  # mean brightness of the aligned inner face, 0-255


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __getitem__(self, key: str) -> Any:
        """``doc["code"]`` reads like the plain-dict API of the seed, values as in JSON."""
        return self.model_dump(mode="json")[key]


class Box(_Doc):
    """Pixel box in the original image (after EXIF orientation). May poke past the border."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1


class Landmarks(_Doc):
    """Five points as seen in the image, left to right: eye, eye, nose, mouth corner, mouth corner."""

    right_eye: tuple[float, float]
    left_eye: tuple[float, float]
    nose: tuple[float, float]
    mouth_right: tuple[float, float]
    mouth_left: tuple[float, float]


class FaceQuality(_Doc):
    """How good a usable face is: the strictest ``quality`` level it passes, and what fails above it."""

    level: Literal["none", "low", "medium", "high"]
    reasons: list[PartialReason]  # what keeps it from ``high`` (empty when it passes ``high``)


class Liveness(_Doc):
    """Passive liveness of a face: P(real) from one image. A signal, not a certified PAD."""

    score: float = Field(ge=0.0, le=1.0)
    live: bool  # score >= KYC_LIVENESS_THRESHOLD
    model: str


class Face(_Doc):
    box: Box
    score: float
    landmarks: Landmarks
    # None where the caller did not ask for templates (a verify job without include_features).
    features: str | None
    quality: FaceQuality | None = None
    liveness: Liveness | None = None  # only when asked for (the verify selfie)
    # Degrees clockwise the face lies in the image as given (0, 90, 180, 270, or 45-degree steps):
    # the engine found it on the image turned back by as much. Box and landmarks stay in the
    # image's own pixels. Only a verify document (or a selfie, to say so) is searched for turns.
    orientation: int = 0

    def template(self) -> str:
        """The features string (raises ``FeaturesError`` when the result was built without it)."""
        if self.features is None:
            raise FeaturesError("this face was reported without its features")
        return self.features


class PartialFace(_Doc):
    reason: PartialReason
    box: Box
    score: float
    landmarks: Landmarks
    orientation: int = 0  # as ``Face.orientation``


class FacesResult(_Doc):
    code: Literal["SUCCESS"] = "SUCCESS"
    faces: list[Face]
    partial_faces: list[PartialFace]

    def without_features(self) -> FacesResult:
        """The same faces, their templates left out (what a stored verify result keeps)."""
        return self.model_copy(update={"faces": [f.model_copy(update={"features": None}) for f in self.faces]})


class InvalidImageResult(_Doc):
    code: Literal["INVALID_IMAGE"] = "INVALID_IMAGE"
    reason: ImageReason
    message: str


class ErrorResult(_Doc):
    code: Literal["ERROR"] = "ERROR"
    message: str

    @classmethod
    def from_error(cls, error: BaseException) -> ErrorResult:
        if isinstance(error, KYCFaceError):
            return cls(message=error.message)
        # Unexpected: say what broke without echoing the input (it may be biometric data).
        return cls(message=f"internal error: {type(error).__name__}")


class MatchResult(_Doc):
    code: Literal["SUCCESS"] = "SUCCESS"
    confidence: float = Field(ge=0.0, le=1.0)
    verified: bool


class FindResult(_Doc):
    """Best gallery hit: ``found`` is its face id only when ``verified``; ``confidence`` is the
    best candidate's either way (0 for an empty gallery)."""

    code: Literal["SUCCESS"] = "SUCCESS"
    found: str | None
    confidence: float = Field(ge=0.0, le=1.0)
    verified: bool


class Candidate(_Doc):
    """One 1:N candidate: never its cosine (exact scores let chosen probes solve for a template)."""

    face_id: str
    rank: int = Field(ge=1)  # 1 = the most similar
    # A match's band (0.99, 0.9 or 0.5: at least that); a near miss's, rounded to two decimals.
    confidence: float = Field(ge=0.0, le=1.0)
    verified: bool  # its cosine reaches the gallery's 1:N threshold (always, outside near misses)


class FindManyResult(_Doc):
    """The matches among the top-k (near misses too, when asked for), best first, and the
    operating point that decided ``verified``. No candidate: no match."""

    code: Literal["SUCCESS"] = "SUCCESS"
    candidates: list[Candidate]
    gallery_size: int = 0
    threshold: float = 0.0  # cosine a candidate must reach to be verified at this gallery size
    probe_features: str | None = None  # the probe's template, only when the job asked for it


class EnrolResult(_Doc):
    code: Literal["SUCCESS"] = "SUCCESS"
    gallery: str
    face_id: str
    features: str | None = None  # the enrolled template, only when the job asked for it


class DeleteResult(_Doc):
    code: Literal["SUCCESS"] = "SUCCESS"
    gallery: str
    face_id: str
    deleted: bool  # False: there was no such face (deleting twice is not an error)
    documents_redacted: int = 0  # stored job results the template was erased from


class ForgetResult(_Doc):
    """A subject erased everywhere: the galleries that held ``face_id``, and the job results
    its templates were redacted from."""

    code: Literal["SUCCESS"] = "SUCCESS"
    face_id: str
    galleries: list[str]
    documents_redacted: int = 0


class TemplateResult(_Doc):
    code: Literal["SUCCESS"] = "SUCCESS"
    gallery: str
    face_id: str
    features: str | None  # None: no such face


GetFacesResult = Annotated[FacesResult | InvalidImageResult | ErrorResult, Field(discriminator="code")]
MatchFacesResult = Annotated[MatchResult | ErrorResult, Field(discriminator="code")]


def to_dict(doc: BaseModel) -> dict[str, Any]:
    """JSON-ready dict (enums as their values)."""
    return doc.model_dump(mode="json")
