"""Gallery templates at rest: encrypted, bound to their face id, refused when written around us."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest
import redis

from shared import features, keys
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.gallery import KYCDeepFaceDB
from shared.gallery.cipher import PREFIX, TemplateCipher

pytestmark = pytest.mark.services

RNG = np.random.default_rng(11)


def test_templates_are_encrypted_bound_to_their_face_and_forgeries_ignored(
    settings: Settings, redis_url: str, engine: KYCDeepFace
) -> None:
    client = redis.Redis.from_url(redis_url)
    alice, bob = (features.encode(engine.model_id, RNG.standard_normal(512)) for _ in range(2))
    with KYCDeepFaceDB("vault", settings=settings.model_copy(update={"redis_url": redis_url})) as db:
        db.put("alice", alice)
        db.put("bob", bob)
        stored = client.hgetall(keys.gallery_faces_key("vault"))
        raw = features.decode(alice).vector.astype("<f4").tobytes()
        assert all(v.startswith(PREFIX.encode()) and raw not in v and alice.encode() not in v for v in stored.values())
        assert db.templates(["alice", "bob"]) == {"alice": alice, "bob": bob}
        # Written around the service: alice's ciphertext moved under bob's id, a bit flipped, a
        # plain template nobody sealed. None of them is served.
        flipped = bytearray(stored[b"alice"])
        flipped[-3] = ord("A") if flipped[-3] != ord("A") else ord("B")
        forged_plain = base64.b64encode(base64.b64decode(alice)[:-32] + bytes(32)).decode()
        client.hset(
            keys.gallery_faces_key("vault"),
            mapping={"bob": stored[b"alice"], "carol": bytes(flipped), "dave": forged_plain},
        )
        assert db.templates(["alice", "bob", "carol", "dave"]) == {"alice": alice}
        # A plain template this service sealed (written before encryption was on) still loads.
        client.hset(keys.gallery_faces_key("vault"), "erin", bob)
        assert db.templates(["erin"]) == {"erin": bob}


def test_rotated_keys_keep_old_ciphertexts_readable_while_listed() -> None:
    old, new = "k1:" + "a" * 40, "k2:" + "b" * 40
    text = features.encode("m@1", RNG.standard_normal(128))
    sealed = TemplateCipher(features.key_ring_from(Settings(features_key=old)), "g").seal("f", text)
    rotated = TemplateCipher(features.key_ring_from(Settings(features_key=new, features_keys_accepted=[old])), "g")
    assert rotated.open("f", sealed) == text and rotated.seal("f", text).startswith(PREFIX + "k2:")
    assert TemplateCipher(features.key_ring_from(Settings(features_key=new)), "g").open("f", sealed) is None
    assert TemplateCipher(features.key_ring_from(Settings(features_key=old)), "other").open("f", sealed) is None


def test_decrypting_a_gallery_costs_microseconds_per_template() -> None:
    cipher = TemplateCipher(features.key_ring_from(Settings(features_key="k1:" + "a" * 40)), "g")
    text = features.encode("m@1", RNG.standard_normal(512))
    values = [cipher.seal(f"f{i}", text) for i in range(20_000)]
    start = time.perf_counter()
    opened = [cipher.open(f"f{i}", v) for i, v in enumerate(values)]
    per_template_us = (time.perf_counter() - start) / len(values) * 1e6
    print(f"AES-GCM open of a 512-d template: {per_template_us:.1f} us")
    assert opened == [text] * len(values)
    assert per_template_us < 200  # a 1M gallery loads in seconds more, not minutes
