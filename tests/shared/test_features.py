"""Features strings: portable, versioned, and refused loudly when malformed or mixed."""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest

from shared import features
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.errors import FeaturesError, SettingsError
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
VECTOR_AT = 4 + len("m@1") + 2  # magic, version, model id length, model id, dimension
SEAL_AT = VECTOR_AT + 4 * 128


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _resealed(blob: bytes) -> str:
    """``blob`` with a valid seal of this process's key: what only the server can produce."""
    ring = features.key_ring()
    return _b64(blob[:-32] + ring.tag(ring.current, blob[:-32]))


GARBAGE = {
    "empty": "",
    "not_base64": "!!!not base64!!!",
    "base64_of_text": _b64(b"hello world"),
    "bad_magic": _b64(b"XX" + RAW[2:]),
    "bad_version": _b64(RAW[:2] + b"\x09" + RAW[3:]),
    "truncated": _b64(RAW[:-4]),
    "extra_bytes": _b64(RAW + b"\x00\x00\x00\x00"),
    "not_unit": _resealed(RAW[:VECTOR_AT] + np.full(128, 3.0, "<f4").tobytes() + RAW[SEAL_AT:]),
    "nan": _resealed(RAW[:VECTOR_AT] + np.full(128, np.nan, "<f4").tobytes() + RAW[SEAL_AT:]),
    "number": 12345,
    "none": None,
}


def _unsealed_v1(model: str, vector: np.ndarray) -> str:
    """The format before sealing: anyone could write one, with any vector."""
    mid = model.encode()
    v = (vector / np.linalg.norm(vector)).astype("<f4")
    return _b64(b"KF" + struct.pack("<BB", 1, len(mid)) + mid + struct.pack("<H", v.size) + v.tobytes())


def _altered(text: str, component: int) -> str:
    """A sealed blob with one vector component changed (the seal left as it was)."""
    blob = bytearray(base64.b64decode(text))
    dim = struct.unpack_from("<H", blob, VECTOR_AT - 2)[0]
    vector = np.frombuffer(bytes(blob[VECTOR_AT : VECTOR_AT + 4 * dim]), "<f4").copy()
    vector[component] += 0.05
    vector /= np.linalg.norm(vector)
    blob[VECTOR_AT : VECTOR_AT + 4 * dim] = vector.astype("<f4").tobytes()
    return _b64(bytes(blob))


def test_crafted_and_altered_features_are_refused_as_not_sealed() -> None:
    crafted = _unsealed_v1("m@1", np.eye(128, dtype=np.float32)[3])
    forged = _b64(RAW[:-32] + bytes(32))
    for bad in (crafted, forged, _altered(GOOD, 0)):
        with pytest.raises(FeaturesError, match="sealed"):
            features.decode(bad)
    assert np.allclose(features.decode(GOOD).vector @ features.decode(GOOD).vector, 1.0)


def test_keys_rotate_old_seals_verify_while_listed() -> None:
    old_key, new_key = "k1:" + "a" * 40, "k2:" + "b" * 40
    old = features.key_ring_from(Settings(features_key=old_key))
    sealed_old = features.encode("m@1", RNG.normal(size=128), old)
    rotated = features.key_ring_from(Settings(features_key=new_key, features_keys_accepted=[old_key]))
    assert np.allclose(features.decode(sealed_old, rotated).vector, features.decode(sealed_old, old).vector)
    assert base64.b64decode(features.encode("m@1", RNG.normal(size=128), rotated))[-35:-32] == b"\x02k2"
    retired = features.key_ring_from(Settings(features_key=new_key))
    with pytest.raises(FeaturesError, match="sealed"):
        features.decode(sealed_old, retired)
    # A template read back from our own store was checked when enrolled: a retired key keeps it loadable.
    assert features.decode(sealed_old, retired, sealed=False).model_id == "m@1"


@pytest.mark.parametrize("spec", ["nocolon", ":" + "a" * 40, "k:short", "ephemeral:" + "a" * 40])
def test_malformed_keys_stop_the_settings(spec: str) -> None:
    with pytest.raises(SettingsError):
        features.key_ring_from(Settings(features_key=spec))


def test_services_refuse_to_start_without_a_shared_key() -> None:
    with pytest.raises(SettingsError, match="KYC_FEATURES_KEY"):
        features.require_key(Settings(features_key=None), "worker")
    features.require_key(Settings(features_key=None, features_ephemeral_key=True), "worker")
    features.require_key(Settings(features_key="k:" + "c" * 40), "worker")
    ephemeral = features.key_ring_from(Settings(features_key=None))
    assert ephemeral.ephemeral and ephemeral.secrets != features.key_ring_from(Settings(features_key=None)).secrets


def test_digest_names_the_vector_not_the_seal() -> None:
    vector = RNG.normal(size=128)
    one = features.decode(
        features.encode("m@1", vector, features.key_ring_from(Settings(features_key="k1:" + "a" * 40))), sealed=False
    )
    two = features.decode(
        features.encode("m@1", vector, features.key_ring_from(Settings(features_key="k2:" + "b" * 40))), sealed=False
    )
    assert one.text != two.text and features.digest(one) == features.digest(two)
    assert features.digest(one).startswith("sha256:") and one.text not in features.digest(one)


def test_digest_of_a_string_equals_the_digest_of_its_decoded_vector(engine: KYCDeepFace) -> None:
    ours = engine.get_faces(OBAMA.read_bytes()).faces[0].features  # type: ignore[union-attr]
    other_key = features.key_ring_from(Settings(features_key="k2:" + "b" * 40))
    for text in [ours, GOOD, features.encode("m@2", RNG.normal(size=512), other_key)]:
        assert features.digest_of_string(text) == features.digest(features.decode(text, sealed=False))
    assert features.digest_of_string(GOOD) != features.digest_of_string(ours)


# What passes the layout check: a finish indexes it whatever its seal or norm, as a read-back does.
LAYOUT_ONLY = {"not_unit", "nan"}


@pytest.mark.parametrize("name", sorted(set(GARBAGE) - LAYOUT_ONLY))
def test_digest_of_a_string_refuses_what_is_not_a_features_blob(name: str) -> None:
    with pytest.raises(FeaturesError):
        features.digest_of_string(GARBAGE[name])  # type: ignore[arg-type]


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
