"""1:1 KYC verification: the selfie's one face against the document's portrait.

Deliberately not "the best-scoring pair among all faces": someone holding up another person's
photo beside their own face would then pass. The selfie must show exactly one usable face; on
the document the largest usable face is the portrait, and smaller ones (the ghost image, a
hologram copy) are reported but never matched.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import SpoofSuspectedError
from shared.schemas import Face, FacesResult, InvalidImageResult, Liveness, MatchResult, PartialReason

Image = Literal["selfie", "document"]
# The engine's ``compare``: raises a typed error (e.g. FeaturesError) rather than answering one.
Matcher = Callable[[str, str], MatchResult]


class VerifyCode(str, Enum):
    SUCCESS = "SUCCESS"  # both faces found and compared; see ``verified``
    NO_FACE = "NO_FACE"  # no usable face on ``image``
    MULTIPLE_FACES = "MULTIPLE_FACES"  # more than one usable face on the selfie
    INVALID_IMAGE = "INVALID_IMAGE"  # ``image`` is not a usable picture
    SPOOF_SUSPECTED = "SPOOF_SUSPECTED"  # KYC_LIVENESS=enforce and the selfie scored under the threshold


class VerificationResult(BaseModel):
    """The answer of a ``verify`` job.

    ``selfie_face`` and ``document_face`` index the ``faces`` lists of ``selfie`` and
    ``document`` (the engine's ``get_faces`` documents); ``document_other_faces`` are the
    smaller usable faces of the document, reported and not matched. ``liveness`` is the selfie
    face's score when liveness is on; it changes the answer only under ``KYC_LIVENESS=enforce``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: VerifyCode
    message: str | None = None
    image: Image | None = None
    verified: bool = False
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    selfie_face: int | None = None
    document_face: int | None = None
    document_other_faces: list[int] = Field(default_factory=list)
    liveness: Liveness | None = None
    selfie: FacesResult | InvalidImageResult
    document: FacesResult | InvalidImageResult

    @classmethod
    def refused(
        cls,
        code: VerifyCode,
        image: Image,
        message: str,
        selfie: FacesResult | InvalidImageResult,
        document: FacesResult | InvalidImageResult,
        liveness: Liveness | None = None,
    ) -> VerificationResult:
        """An answer that compares nothing, saying which image is at fault and why."""
        return cls(code=code, image=image, message=message, liveness=liveness, selfie=selfie, document=document)


def _area(face: Face) -> int:
    return face.box.width * face.box.height


# What a person can do about each reason, said of the selfie or of the document's portrait.
_ADVICE: dict[Image, dict[PartialReason, str]] = {
    "selfie": {
        PartialReason.CROPPED: "the face is cut by the frame: centre it",
        PartialReason.TOO_SMALL: "the face is too small in pixels: come closer",
        PartialReason.NOT_FRONT_FACING: "the face is turned away: look into the camera",
        PartialReason.TOO_DARK: "the face is too dark: find more light",
        PartialReason.BLURRY: "the face is blurred: hold the camera still",
        PartialReason.TURNED: "the photo is on its side or upside down: take it upright",
    },
    "document": {
        PartialReason.CROPPED: "the portrait is cut by the frame: photograph the whole card",
        PartialReason.TOO_SMALL: "the portrait is too small in pixels: photograph the card closer, filling the frame",
        PartialReason.NOT_FRONT_FACING: "the portrait is seen too far from the front: photograph the card flat",
        PartialReason.TOO_DARK: "the portrait is too dark or washed out (glare or shadow): photograph it in even light",
        PartialReason.BLURRY: "the portrait is blurred: hold the camera still and let it focus",
        PartialReason.TURNED: "the portrait is turned",
    },
}
_NOTHING_FOUND: dict[Image, str] = {
    "selfie": "no face was found: take the selfie facing the camera",
    "document": (
        "no face was found, upright or turned: photograph the card flat and close, filling the frame, "
        "without glare on the portrait"
    ),
}


def _why_none(image: Image, result: FacesResult) -> str:
    reasons = sorted({p.reason for p in result.partial_faces}, key=lambda r: r.value)
    if not reasons:
        return f"no usable face on the {image}: {_NOTHING_FOUND[image]}"
    codes = ", ".join(r.value for r in reasons)
    advice = "; ".join(_ADVICE[image][r] for r in reasons)
    return f"no usable face on the {image} ({len(result.partial_faces)} unusable: {codes}): {advice}"


def check_liveness(face: Face, threshold: float) -> None:
    """Raise SpoofSuspectedError when the face was scored and is under the threshold."""
    if face.liveness is not None and face.liveness.score < threshold:
        raise SpoofSuspectedError(face.liveness.score, threshold)


def decide(
    selfie: FacesResult | InvalidImageResult,
    document: FacesResult | InvalidImageResult,
    match: Matcher,
    enforce_liveness: float | None = None,
) -> VerificationResult:
    """Verify a selfie against an identity document.

    Args:
        selfie: the engine's ``describe`` of the selfie (quality ``KYC_QUALITY_SELFIE``, liveness scored).
        document: the engine's ``describe`` of the document (quality ``KYC_QUALITY_DOCUMENT``).
        match: the engine's ``compare``.
        enforce_liveness: the liveness threshold under ``KYC_LIVENESS=enforce``; None reports the
            score without letting it change the answer.

    Returns:
        The verification answer (a refusal such as ``MULTIPLE_FACES`` is an answer too).

    Raises:
        KYCFaceError: whatever ``match`` raises; there is nothing to answer.
    """
    if isinstance(selfie, InvalidImageResult):
        return VerificationResult.refused(
            VerifyCode.INVALID_IMAGE, "selfie", f"selfie: {selfie.message}", selfie, document
        )
    if isinstance(document, InvalidImageResult):
        return VerificationResult.refused(
            VerifyCode.INVALID_IMAGE, "document", f"document: {document.message}", selfie, document
        )
    if not selfie.faces:
        return VerificationResult.refused(VerifyCode.NO_FACE, "selfie", _why_none("selfie", selfie), selfie, document)
    if len(selfie.faces) > 1:
        message = f"the selfie shows {len(selfie.faces)} usable faces; exactly one is required"
        return VerificationResult.refused(VerifyCode.MULTIPLE_FACES, "selfie", message, selfie, document)
    liveness = selfie.faces[0].liveness
    if enforce_liveness is not None:
        try:
            check_liveness(selfie.faces[0], enforce_liveness)
        except SpoofSuspectedError as exc:
            code = VerifyCode(exc.code.value)
            return VerificationResult.refused(code, "selfie", exc.message, selfie, document, liveness)
    if not document.faces:
        message = _why_none("document", document)
        return VerificationResult.refused(VerifyCode.NO_FACE, "document", message, selfie, document, liveness)
    portrait = max(range(len(document.faces)), key=lambda i: _area(document.faces[i]))
    matched = match(selfie.faces[0].template(), document.faces[portrait].template())
    return VerificationResult(
        code=VerifyCode.SUCCESS,
        verified=matched.verified,
        confidence=matched.confidence,
        selfie_face=0,
        document_face=portrait,
        document_other_faces=[i for i in range(len(document.faces)) if i != portrait],
        liveness=liveness,
        selfie=selfie,
        document=document,
    )
