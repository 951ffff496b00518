"""The face engine on the real models and the labelled photos in ../shared/faces."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from PIL import Image

from shared import features
from shared.engine import KYCDeepFace
from shared.errors import ModelError
from shared.schemas import FacesResult
from tests.conftest import FACES_DIR, LFW_DIR, Photo, features_of, load_photos
from tests.images import OBAMA, jpeg, pil_bytes, png, read_bgr, with_exif_orientation

PHOTOS = load_photos()
SINGLE = [p for p in PHOTOS if p.identity not in ("multi", "noface")]


def faces_of(engine: KYCDeepFace, data: bytes) -> FacesResult:
    result = engine.get_faces(data)
    assert isinstance(result, FacesResult), result
    return result


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda p: p.file)
def test_face_count_matches_labels(engine: KYCDeepFace, photo: Photo) -> None:
    result = faces_of(engine, photo.path.read_bytes())
    found = len(result.faces) + len(result.partial_faces)
    if photo.exact:
        assert found == photo.min_faces
    else:
        assert found >= photo.min_faces
    if photo.identity == "noface":
        assert result.faces == [] and result.partial_faces == []


def test_document_shape_is_the_seed_format(engine: KYCDeepFace) -> None:
    doc = faces_of(engine, OBAMA.read_bytes()).model_dump(mode="json")
    assert set(doc) == {"code", "faces", "partial_faces"}
    assert doc["code"] == "SUCCESS"
    face = doc["faces"][0]
    # The seed's four fields, and since the quality policy, liveness and documents three optional ones.
    assert set(face) == {"box", "score", "landmarks", "features", "quality", "liveness", "orientation"}
    assert face["quality"]["level"] == "high" and face["liveness"] is None and face["orientation"] == 0
    assert set(face["box"]) == {"x1", "y1", "x2", "y2"}
    assert 0.8 <= face["score"] <= 1.0
    assert features.decode(face["features"]).vector.shape == (engine.embedder.spec.dim,)
    # dict-style access, as in the seed API
    assert engine.get_faces(OBAMA.read_bytes())["code"] == "SUCCESS"


@pytest.fixture(scope="module")
def embeddings(engine: KYCDeepFace) -> dict[str, tuple[str, str]]:
    out = {}
    for photo in SINGLE:
        result = faces_of(engine, photo.path.read_bytes())
        if result.faces:
            assert len(result.faces) == 1, photo.file
            out[photo.file] = (photo.identity, result.faces[0].features)
    return out


def test_every_single_face_photo_but_the_cut_crops_is_usable(embeddings: dict[str, tuple[str, str]]) -> None:
    cut = {"fr_obama_partial_face.jpg", "fr_obama_partial_face2.jpg"}
    assert set(embeddings) == {p.file for p in SINGLE} - cut


def test_same_identity_verified_different_not(engine: KYCDeepFace, embeddings: dict[str, tuple[str, str]]) -> None:
    wrong = []
    genuine = impostor = 0
    for (a, (ia, fa)), (b, (ib, fb)) in itertools.combinations(embeddings.items(), 2):
        result = engine.match_faces(fa, fb)
        assert result.code == "SUCCESS"
        genuine += ia == ib
        impostor += ia != ib
        if result.verified != (ia == ib):
            wrong.append((a, b, result.confidence))
    assert genuine >= 15 and impostor >= 300
    assert wrong == []


def test_match_is_symmetric_and_self_match_is_certain(engine: KYCDeepFace) -> None:
    f = faces_of(engine, OBAMA.read_bytes()).faces[0].features
    g = faces_of(engine, (OBAMA.parent / "fr_obama2.jpg").read_bytes()).faces[0].features
    assert engine.match_faces(f, f).confidence > 0.999
    assert engine.match_faces(f, g).model_dump() == engine.match_faces(g, f).model_dump()


def test_verify_confidence_moves_the_decision(settings, engine, embeddings) -> None:  # type: ignore[no-untyped-def]
    """The least confident genuine pair: verified at its own confidence, not just above it."""
    genuine = [(fa, fb) for (ia, fa), (ib, fb) in itertools.combinations(embeddings.values(), 2) if ia == ib]
    fa, fb = min(genuine, key=lambda p: engine.match_faces(*p).confidence)
    confidence = engine.match_faces(fa, fb).confidence
    assert confidence < 1.0
    lenient = KYCDeepFace(verify_confidence=confidence, settings=settings).match_faces(fa, fb)
    strict = KYCDeepFace(verify_confidence=min(1.0, confidence + 1e-6), settings=settings).match_faces(fa, fb)
    assert lenient.verified and not strict.verified
    assert lenient.confidence == strict.confidence


def test_multi_face_images_give_every_face(engine: KYCDeepFace) -> None:
    two = faces_of(engine, (OBAMA.parent / "fr_two_people.jpg").read_bytes())
    assert len(two.faces) == 2
    boxes = sorted(f.box.x1 for f in two.faces)
    assert boxes[1] - boxes[0] > 300  # two distinct people, not one face twice
    many = faces_of(engine, (OBAMA.parent / "df_selfie-many-people.jpg").read_bytes())
    assert len(many.faces) + len(many.partial_faces) >= 5
    assert any(p.reason == "CROPPED" for p in many.partial_faces)


def test_multi_face_image_matches_each_person(engine: KYCDeepFace, embeddings) -> None:  # type: ignore[no-untyped-def]
    two = faces_of(engine, (OBAMA.parent / "fr_two_people.jpg").read_bytes())
    obama, biden = embeddings["fr_obama.jpg"][1], embeddings["fr_biden.jpg"][1]
    verdicts = sorted(
        (engine.match_faces(f.features, obama).verified, engine.match_faces(f.features, biden).verified)
        for f in two.faces
    )
    assert verdicts == [(False, True), (True, False)]


def test_boxes_are_in_original_pixels_for_downscaled_photos(engine: KYCDeepFace) -> None:
    image = read_bgr()  # 910x1137, detected on a 400x500 working copy
    big = faces_of(engine, jpeg(image)).faces[0].box
    half = faces_of(engine, jpeg(cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))).faces[0].box
    assert abs(big.x1 - 2 * half.x1) <= 6 and abs(big.x2 - 2 * half.x2) <= 6
    assert abs(big.y1 - 2 * half.y1) <= 6 and abs(big.y2 - 2 * half.y2) <= 6


def test_full_resolution_alignment_keeps_identity_across_sizes(engine: KYCDeepFace) -> None:
    image = read_bgr()
    up = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)  # a 2730x3411 "phone photo"
    a = faces_of(engine, jpeg(image)).faces[0].features
    b = faces_of(engine, jpeg(up)).faces[0].features
    assert engine.similarity(a, b) > 0.9


@pytest.mark.parametrize("upscale", [1.0, 3.5], ids=["as-is", "phone-size"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_honoured(engine: KYCDeepFace, orientation: int, upscale: float) -> None:
    """Also at phone size, where the JPEG is decoded at a reduced DCT scale."""
    image = read_bgr()
    if upscale != 1.0:
        image = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    upright = faces_of(engine, jpeg(image, 92)).faces[0]
    rotated = faces_of(engine, with_exif_orientation(image, orientation))
    assert len(rotated.faces) == 1
    box = rotated.faces[0].box
    tolerance = 8 * upscale
    assert abs(box.x1 - upright.box.x1) <= tolerance and abs(box.y1 - upright.box.y1) <= tolerance
    assert engine.similarity(rotated.faces[0].features, upright.features) > 0.9


@functools.cache
def _rgb() -> Image.Image:
    return Image.open(OBAMA).convert("RGB")


# One encoding of the photo per test, built when the test runs (not at collection).
VARIANTS: dict[str, Callable[[], bytes]] = {
    "grayscale": lambda: pil_bytes(_rgb().convert("L"), "JPEG"),
    "alpha_png": lambda: pil_bytes(_rgb().convert("RGBA"), "PNG"),
    "la_png": lambda: pil_bytes(_rgb().convert("LA"), "PNG"),
    "palette_png": lambda: pil_bytes(_rgb().convert("P"), "PNG"),
    "gray16_png": lambda: png(np.asarray(_rgb().convert("L"), dtype=np.uint16) * 257),
    "rgb16_png": lambda: png(read_bgr().astype(np.uint16) * 257),
    "cmyk_jpeg": lambda: pil_bytes(_rgb().convert("CMYK"), "JPEG"),
    "webp": lambda: pil_bytes(_rgb(), "WEBP"),
    "bmp": lambda: pil_bytes(_rgb(), "BMP"),
    "tiff": lambda: pil_bytes(_rgb(), "TIFF"),
    "gif": lambda: pil_bytes(_rgb(), "GIF"),
}


@pytest.fixture(scope="module")
def obama_features(engine: KYCDeepFace) -> str:
    return faces_of(engine, OBAMA.read_bytes()).faces[0].features


@pytest.mark.parametrize("kind", list(VARIANTS))
def test_colour_modes_and_formats_work(engine: KYCDeepFace, obama_features: str, kind: str) -> None:
    result = faces_of(engine, VARIANTS[kind]())
    assert len(result.faces) == 1, kind
    assert engine.similarity(result.faces[0].features, obama_features) > 0.75, kind


def test_lfw_sample_embeds_consistently(engine: KYCDeepFace) -> None:
    """Two photos of one LFW person match; a different person does not (sanity on the calib set)."""
    if not LFW_DIR.is_dir():
        pytest.skip("no LFW folds")

    def feat(name: str, i: int) -> str:
        data = (LFW_DIR / "images" / name / f"{name}_{i:04d}.jpg").read_bytes()
        return faces_of(engine, data).faces[0].features

    same = engine.match_faces(feat("Abel_Pacheco", 1), feat("Abel_Pacheco", 4))
    other = engine.match_faces(feat("Abel_Pacheco", 1), feat("Amber_Tamblyn", 1))
    assert same.verified and not other.verified


def test_describe_raises_typed_errors_and_get_faces_documents_them(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    engine = KYCDeepFace(settings=settings)

    def broken(*_: object) -> None:
        raise ModelError("detector session lost")

    monkeypatch.setattr(engine.detector, "detect", broken)
    with pytest.raises(ModelError):
        engine.describe(OBAMA.read_bytes())
    assert engine.get_faces(OBAMA.read_bytes()).model_dump() == {"code": "ERROR", "message": "detector session lost"}

    def bug(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(engine.detector, "detect", bug)
    doc = engine.get_faces(OBAMA.read_bytes()).model_dump()
    assert doc == {"code": "ERROR", "message": "internal error: RuntimeError"}


def test_image_size_limits_come_from_the_settings(settings) -> None:  # type: ignore[no-untyped-def]
    engine = KYCDeepFace(settings=settings.model_copy(update={"min_image_size_px": (300, 300)}))
    small = engine.get_faces(jpeg(np.full((200, 200, 3), 128, np.uint8)))
    assert small.code == "INVALID_IMAGE" and small.reason == "TOO_SMALL"
    assert KYCDeepFace(settings=settings).get_faces(jpeg(np.full((200, 200, 3), 128, np.uint8))).code == "SUCCESS"


def test_single_face_refuses_none_and_several_and_never_guesses(engine: KYCDeepFace) -> None:
    from shared.errors import FaceCountError

    face = engine.single_face((FACES_DIR / "fr_obama.jpg").read_bytes())
    assert engine.match_faces(face.features, features_of(engine, "fr_obama2.jpg")).verified
    for name, shows in (("fr_two_people.jpg", "2"), ("sk_rocket.jpg", "0")):
        with pytest.raises(FaceCountError, match=f"shows {shows}$"):
            engine.single_face((FACES_DIR / name).read_bytes())
