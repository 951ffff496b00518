"""The verify decision on hand-made face documents: which faces are used, and every refusal."""

from __future__ import annotations

import pytest

from shared.errors import FeaturesError, ImageReason
from shared.schemas import (
    Box,
    Face,
    FacesResult,
    InvalidImageResult,
    Landmarks,
    MatchResult,
    PartialFace,
    PartialReason,
)
from shared.verification import VerifyCode, decide

MARKS = Landmarks(right_eye=(0, 0), left_eye=(1, 0), nose=(0.5, 0.5), mouth_right=(0, 1), mouth_left=(1, 1))


def face(size: int, features: str) -> Face:
    return Face(box=Box(x1=0, y1=0, x2=size, y2=size), score=0.9, landmarks=MARKS, features=features)


def faces(*found: Face, partial: int = 0) -> FacesResult:
    box = Box(x1=0, y1=0, x2=10, y2=10)
    parts = [PartialFace(reason=PartialReason.CROPPED, box=box, score=0.9, landmarks=MARKS)] * partial
    return FacesResult(faces=list(found), partial_faces=parts)


class Matcher:
    """Records which pairs were compared; verifies a pair of equal features strings."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, a: str, b: str) -> MatchResult:
        self.calls.append((a, b))
        return MatchResult(confidence=0.9 if a == b else 0.1, verified=a == b)


def test_document_portrait_is_its_largest_face_and_the_ghost_is_reported() -> None:
    match = Matcher()
    # The ghost image (small) is the same person as the selfie; the portrait is not.
    result = decide(faces(face(100, "me")), faces(face(30, "me"), face(200, "other"), face(20, "x")), match)
    assert match.calls == [("me", "other")]
    assert result.code is VerifyCode.SUCCESS and not result.verified
    assert (result.selfie_face, result.document_face, result.document_other_faces) == (0, 1, [0, 2])


def test_selfie_with_two_faces_is_refused_never_best_pair() -> None:
    match = Matcher()
    result = decide(faces(face(100, "someone"), face(80, "me")), faces(face(200, "me")), match)
    assert result.code is VerifyCode.MULTIPLE_FACES and result.image == "selfie"
    assert not result.verified and match.calls == []
    assert "2 usable faces" in (result.message or "")


def test_no_usable_face_says_which_image_and_why() -> None:
    result = decide(faces(partial=1), faces(face(200, "me")), Matcher())
    assert (result.code, result.image) == (VerifyCode.NO_FACE, "selfie")
    assert "CROPPED" in (result.message or "")
    result = decide(faces(face(100, "me")), faces(), Matcher())
    assert (result.code, result.image) == (VerifyCode.NO_FACE, "document")


def test_invalid_image_is_an_answer() -> None:
    bad = InvalidImageResult(reason=ImageReason.INVALID_FORMAT, message="not an image")
    result = decide(faces(face(100, "me")), bad, Matcher())
    assert (result.code, result.image, result.verified) == (VerifyCode.INVALID_IMAGE, "document", False)
    assert result.document == bad


def test_a_match_error_keeps_its_type() -> None:
    def broken(a: str, b: str) -> MatchResult:
        raise FeaturesError("features come from different models")

    with pytest.raises(FeaturesError):
        decide(faces(face(100, "me")), faces(face(200, "me")), broken)


def test_match_of_the_same_face_is_verified() -> None:
    result = decide(faces(face(100, "me")), faces(face(200, "me")), Matcher())
    assert result.code is VerifyCode.SUCCESS and result.verified and result.confidence == 0.9
