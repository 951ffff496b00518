"""Identity-card photos at any orientation, on the real models: the card generator of
``harness/cards.py``, the orientation search of the engine and the verify decision on it."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from harness.cards import CardSpec, card_photo
from shared import orientation
from shared.engine import KYCDeepFace
from shared.models import Detection
from shared.schemas import Box, FacesResult, MatchResult, PartialFace, PartialReason
from shared.verification import VerificationResult, VerifyCode, decide
from tests.conftest import LFW_DIR, need

PERSON = "Abel_Pacheco"  # a same-person pair of lfw-calib's first fold: photos 1 and 4
# An upright, untilted colour card at phone resolution; the tests turn, fade and grey it.
UPRIGHT = CardSpec(
    seed=26,
    index=0,
    style="colour",
    rotation=0,
    tilt=0.0,
    resolution=(1920, 1440),
    card_fraction=0.8,
    glare_on_portrait=False,
)


def lfw_photo(number: int) -> np.ndarray:
    path = LFW_DIR / "images" / PERSON / f"{PERSON}_{number:04d}.jpg"
    need(path.is_file(), f"lfw-calib not found at {LFW_DIR}")
    image = cv2.imread(str(path))
    assert image is not None
    return image


def jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return bytes(data.tobytes())


class CountingDetector:
    """The engine's real detector, counting its passes."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0

    def detect(self, bgr: np.ndarray) -> Detection:
        self.calls += 1
        return self.inner.detect(bgr)  # type: ignore[attr-defined]


@pytest.fixture
def counted(engine: KYCDeepFace, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingDetector]:
    counter = CountingDetector(engine.detector)
    monkeypatch.setattr(engine, "detector", counter)
    yield counter


@pytest.fixture(scope="module")
def selfie(engine: KYCDeepFace) -> FacesResult:
    result = engine.selfie_faces(jpeg(lfw_photo(1)))
    assert isinstance(result, FacesResult) and len(result.faces) == 1
    return result


def verify(engine: KYCDeepFace, selfie: FacesResult, spec: CardSpec) -> VerificationResult:
    document = engine.document_faces(card_photo(lfw_photo(4), spec))
    return decide(selfie, document, engine.compare)


def portrait_of(answer: VerificationResult) -> tuple[int, int]:
    """The matched face's orientation and box area."""
    assert isinstance(answer.document, FacesResult) and answer.document_face is not None
    face = answer.document.faces[answer.document_face]
    return face.orientation, face.box.width * face.box.height


# --- the generator ----------------------------------------------------------------------------


def test_cards_are_reproducible_from_their_seed() -> None:
    portrait = lfw_photo(4)
    spec = CardSpec.draw(26, 7).replace(resolution=(1280, 960))
    first = card_photo(portrait, spec)
    assert card_photo(portrait, spec) == first
    assert card_photo(portrait, spec.replace(index=8)) != first
    assert CardSpec.draw(26, 7) == CardSpec.draw(26, 7) != CardSpec.draw(27, 7)
    photo = cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR)
    assert photo is not None
    turns = spec.rotation in (90, 270)
    assert photo.shape[:2] == ((1280, 960) if turns else (960, 1280))
    assert b"Exif" not in first[:64]


def test_a_card_set_covers_every_orientation_style_and_tilt() -> None:
    specs = [CardSpec.draw(26, i) for i in range(200)]
    assert {s.rotation for s in specs} == {0, 90, 180, 270}
    assert {s.style for s in specs} == {"colour", "grey", "faded"}
    assert max(abs(s.tilt) for s in specs) > 40 and min(abs(s.tilt) for s in specs) < 1
    assert (4032, 3024) in {s.resolution for s in specs}


# --- turning and mapping back -----------------------------------------------------------------


@pytest.mark.parametrize("degrees", [90, 180, 270, 45, 315])
def test_turned_points_map_back_onto_the_original(degrees: int) -> None:
    image = np.zeros((60, 100, 3), np.uint8)
    image[10, 70] = 255  # one bright pixel
    turned, back = orientation.turn(image, degrees)
    y, x = np.unravel_index(int(np.argmax(turned[..., 0])), turned.shape[:2])
    original = back[:, :2] @ np.array([x, y], np.float64) + back[:, 2]
    assert np.allclose(original, [70, 10], atol=1.0)


def test_edge_tilt_reads_a_rectangle_s_lean() -> None:
    canvas = np.full((300, 300), 40, np.uint8)
    box = cv2.boxPoints(((150.0, 150.0), (160.0, 100.0), 20.0))  # OpenCV: clockwise on screen
    cv2.fillPoly(canvas, [box.astype(np.int32)], 220)
    lean = orientation.edge_tilt(canvas)
    assert lean is not None and abs(lean - 20.0) <= 2.0
    assert orientation.edge_tilt(np.full((50, 50), 128, np.uint8)) is None


# --- documents at any orientation -------------------------------------------------------------


def test_an_upright_card_costs_one_detector_pass(
    engine: KYCDeepFace, counted: CountingDetector, selfie: FacesResult
) -> None:
    answer = verify(engine, selfie, UPRIGHT)
    assert answer.code is VerifyCode.SUCCESS and answer.verified
    assert counted.calls == 1
    assert portrait_of(answer)[0] == 0


def test_the_search_can_be_switched_off(engine: KYCDeepFace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "settings", engine.settings.model_copy(update={"orientation_search": False}))
    document = engine.document_faces(card_photo(lfw_photo(4), UPRIGHT.replace(rotation=90)))
    assert isinstance(document, FacesResult) and not document.faces


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_a_turned_card_gives_the_upright_card_s_portrait_and_confidence(
    engine: KYCDeepFace, counted: CountingDetector, selfie: FacesResult, rotation: int
) -> None:
    upright = verify(engine, selfie, UPRIGHT)
    counted.calls = 0
    turned = verify(engine, selfie, UPRIGHT.replace(rotation=rotation))
    assert turned.code is VerifyCode.SUCCESS and turned.verified
    assert counted.calls > 1  # the upright pass did not settle it
    (up_turn, up_area), (turn, area) = portrait_of(upright), portrait_of(turned)
    assert (up_turn, turn) == (0, rotation)
    assert abs(area - up_area) <= 0.1 * up_area
    assert upright.confidence is not None and turned.confidence is not None
    assert abs(turned.confidence - upright.confidence) <= 0.02


@pytest.mark.parametrize("tilt", [-30.0, 40.0])
def test_a_tilted_card_is_straightened(engine: KYCDeepFace, selfie: FacesResult, tilt: float) -> None:
    answer = verify(engine, selfie, UPRIGHT.replace(rotation=90, tilt=tilt))
    assert answer.code is VerifyCode.SUCCESS and answer.verified
    lying = (90 - tilt) % 360  # clockwise: the card is turned 90 and tilted counter-clockwise
    assert abs((portrait_of(answer)[0] - lying + 180) % 360 - 180) <= 10


def test_the_ghost_image_is_reported_and_never_matched(engine: KYCDeepFace, selfie: FacesResult) -> None:
    # The ghost's opacity is drawn per card: on this one it is dark enough to be detected.
    ghosted = UPRIGHT.replace(index=1)
    for rotation in (0, 180):
        answer = verify(engine, selfie, ghosted.replace(rotation=rotation))
        assert isinstance(answer.document, FacesResult)
        faces = answer.document.faces
        assert len(faces) == 2, "the card's ghost image is found"
        assert answer.document_face is not None and answer.document_other_faces == [1 - answer.document_face]
        matched, ghost = faces[answer.document_face], faces[answer.document_other_faces[0]]
        assert matched.box.width > 1.5 * ghost.box.width
        assert matched.orientation == ghost.orientation == rotation


@pytest.mark.parametrize("style", ["grey", "faded"])
def test_a_grey_or_faded_portrait_verifies_against_its_colour_selfie(
    engine: KYCDeepFace, selfie: FacesResult, style: str
) -> None:
    for rotation in (0, 270):
        answer = verify(engine, selfie, UPRIGHT.replace(style=style, rotation=rotation))
        assert answer.code is VerifyCode.SUCCESS and answer.verified, (style, rotation)


def test_someone_else_s_card_does_not_verify_at_any_orientation(engine: KYCDeepFace) -> None:
    stranger = cv2.imread(str(LFW_DIR / "images" / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg"))
    assert stranger is not None
    other = engine.selfie_faces(jpeg(stranger))
    assert isinstance(other, FacesResult) and len(other.faces) == 1
    for rotation in (0, 90, 180, 270):
        answer = verify(engine, other, UPRIGHT.replace(rotation=rotation))
        assert answer.code is VerifyCode.SUCCESS and not answer.verified


# --- selfies ------------------------------------------------------------------------------------


def test_a_turned_selfie_says_it_is_turned(engine: KYCDeepFace) -> None:
    canvas = cv2.copyMakeBorder(lfw_photo(1), 60, 60, 60, 60, cv2.BORDER_REPLICATE)
    result = engine.selfie_faces(jpeg(cv2.rotate(canvas, cv2.ROTATE_90_CLOCKWISE)))
    assert isinstance(result, FacesResult) and not result.faces
    assert [(p.reason, p.orientation) for p in result.partial_faces] == [(PartialReason.TURNED, 90)]
    document = engine.document_faces(card_photo(lfw_photo(4), UPRIGHT))
    answer = decide(result, document, engine.compare)
    assert answer.code is VerifyCode.NO_FACE and answer.image == "selfie" and "TURNED" in (answer.message or "")


# --- reasons a person can act on -------------------------------------------------------------


def test_a_document_without_a_usable_portrait_says_what_to_do(selfie: FacesResult) -> None:
    def no_match(a: str, b: str) -> MatchResult:
        raise AssertionError("nothing should be compared")

    blank = decide(selfie, FacesResult(faces=[], partial_faces=[]), no_match)
    assert blank.code is VerifyCode.NO_FACE and blank.image == "document"
    assert "no face was found, upright or turned" in (blank.message or "")
    marks = selfie.faces[0].landmarks
    small = PartialFace(reason=PartialReason.TOO_SMALL, box=Box(x1=0, y1=0, x2=10, y2=12), score=0.85, landmarks=marks)
    answer = decide(selfie, FacesResult(faces=[], partial_faces=[small]), no_match)
    assert "TOO_SMALL" in (answer.message or "") and "too small in pixels" in (answer.message or "")


def test_a_chunk_of_verify_jobs_searches_its_documents_too(engine: KYCDeepFace) -> None:
    card = card_photo(lfw_photo(4), UPRIGHT.replace(rotation=180))
    level = engine.settings.quality_document
    searched, as_given = engine.describe_many([(card, level, False), (card, level, False)], ["document", "image"])
    alone = engine.document_faces(card)
    assert isinstance(searched, FacesResult) and isinstance(alone, FacesResult) and isinstance(as_given, FacesResult)
    assert [f.model_dump(exclude={"features"}) for f in searched.faces] == [
        f.model_dump(exclude={"features"}) for f in alone.faces
    ]
    assert {f.orientation for f in searched.faces} == {180}
    assert all(f.orientation == 0 for f in as_given.faces + as_given.partial_faces)
