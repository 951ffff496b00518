"""Features strings: portable, versioned, and refused loudly when malformed or mixed."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from shared import features
from shared.engine import KYCDeepFace
from shared.errors import FeaturesError
from tests.conftest import FACES_DIR
from tests.images import OBAMA

RNG = np.random.default_rng(7)


def test_round_trip_normalises() -> None:
    v = RNG.normal(size=128).astype(np.float32) * 5
    decoded = features.decode(features.encode("m@1", v))
    assert decoded.model_id == "m@1"
    assert np.allclose(decoded.vector, v / np.linalg.norm(v), atol=1e-6)


def _blob_with(model: str, vector: np.ndarray) -> str:
    return features.encode(model, vector)


GOOD = _blob_with("m@1", RNG.normal(size=128))
RAW = base64.b64decode(GOOD)
GARBAGE = {
    "empty": "",
    "not_base64": "!!!not base64!!!",
    "base64_of_text": base64.b64encode(b"hello world").decode(),
    "bad_magic": base64.b64encode(b"XX" + RAW[2:]).decode(),
    "bad_version": base64.b64encode(RAW[:2] + b"\x09" + RAW[3:]).decode(),
    "truncated": base64.b64encode(RAW[:-4]).decode(),
    "extra_bytes": base64.b64encode(RAW + b"\x00\x00\x00\x00").decode(),
    "not_unit": base64.b64encode(RAW[:-512] + np.full(128, 3.0, "<f4").tobytes()).decode(),
    "nan": base64.b64encode(RAW[:-512] + np.full(128, np.nan, "<f4").tobytes()).decode(),
    "number": 12345,
    "none": None,
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_is_refused_with_a_reason(name: str) -> None:
    with pytest.raises(FeaturesError) as err:
        features.decode(GARBAGE[name])  # type: ignore[arg-type]
    assert err.value.message


@pytest.mark.parametrize("name", list(GARBAGE))
def test_match_faces_turns_garbage_into_an_error_document(engine: KYCDeepFace, name: str) -> None:
    good = engine.get_faces(OBAMA.read_bytes()).faces[0].features  # type: ignore[union-attr]
    doc = engine.match_faces(good, GARBAGE[name]).model_dump()
    assert doc["code"] == "ERROR" and doc["message"]
    assert set(doc) == {"code", "message"}


def test_features_of_another_model_are_never_scored(engine: KYCDeepFace) -> None:
    ours = engine.get_faces(OBAMA.read_bytes()).faces[0].features  # type: ignore[union-attr]
    vector = features.decode(ours).vector
    theirs = features.encode("sface-2021dec@0123456789ab", vector)  # same numbers, other model
    doc = engine.match_faces(ours, theirs).model_dump()
    assert doc["code"] == "ERROR"
    assert "sface-2021dec" in doc["message"]
    other_dim = features.encode(engine.model_id, np.ones(engine.embedder.spec.dim // 2, np.float32))
    assert engine.match_faces(ours, other_dim).model_dump()["code"] == "ERROR"


def test_mobilefacenet_is_one_setting_away_and_models_never_mix(settings, engine: KYCDeepFace) -> None:  # type: ignore[no-untyped-def]
    """Features stored under MobileFaceNet keep matching where it is configured; never across models."""
    fast = KYCDeepFace(settings=settings.model_copy(update={"embedding_model": "mobilefacenet"}))
    a, b = (FACES_DIR / "fr_obama.jpg").read_bytes(), (FACES_DIR / "fr_obama2.jpg").read_bytes()
    old = [fast.get_faces(x).faces[0].features for x in (a, b)]  # type: ignore[union-attr]
    new = [engine.get_faces(x).faces[0].features for x in (a, b)]  # type: ignore[union-attr]
    assert features.decode(old[0]).vector.shape == (128,) and features.decode(new[0]).vector.shape == (512,)
    assert fast.match_faces(*old).verified and engine.match_faces(*new).verified
    for mixed in (engine.match_faces(old[0], new[1]), fast.match_faces(new[0], old[1]), engine.match_faces(*old)):
        assert mixed.code == "ERROR" and "mobilefacenet" in mixed.message
