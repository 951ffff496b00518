"""Tenant-bound features: the same face in two tenants gives unrelated strings, each refused by
the other tenant, and the service's own strings, digests, rotation and galleries keep working."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from shared import features
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.errors import FeaturesError, ForeignFeaturesError
from shared.features import key_ring_from
from shared.gallery import KYCDeepFaceDB
from shared.gallery.stub import StubGalleryStore
from shared.jobs.model import JobDocument
from shared.jobs.resources import Resources
from shared.tenants import DEFAULT_TENANT, Tenant
from tests.conftest import S3Endpoint, features_of
from tests.shared.test_erasure import run, stack  # noqa: F401  (stack: the erasure tests' fixture)

pytestmark = pytest.mark.services

OLD_KEY = "k-old:" + "o" * 40
NEW_KEY = "k-new:" + "n" * 40


@pytest.fixture(scope="module")
def own(engine: KYCDeepFace) -> str:
    """The service's own string of one face (what a default-tenant faces job returns)."""
    return features_of(engine, "fr_obama.jpg")


def _raw(text: str) -> bytes:
    return base64.b64decode(text)


def test_the_same_face_in_two_tenants_gives_unlinkable_strings_refused_by_each_other(own: str) -> None:
    acme, beta = features.seal_for(own, "acme"), features.seal_for(own, "beta")
    plain = features.decode(own)
    a, b = features.decode(acme), features.decode(beta)
    # The same face to the service ...
    assert (a.tenant, b.tenant) == ("acme", "beta")
    assert np.array_equal(a.vector, plain.vector) and np.array_equal(b.vector, plain.vector)
    assert features.digest(a) == features.digest(b) == features.digest(plain)
    assert features.digest_of_string(acme) == features.digest_of_string(beta) == features.digest_of_string(own)
    # ... and nothing in common to anyone else: no window of the vector's bytes in either string,
    # and the two enciphered vectors share no 8 bytes.
    vector = plain.vector.astype("<f4").tobytes()
    for sealed in (acme, beta):
        blob = _raw(sealed)
        assert not any(vector[i : i + 8] in blob for i in range(0, len(vector) - 8, 4))
    tail_a, tail_b = _raw(acme)[-(len(vector) + 32) :], _raw(beta)[-(len(vector) + 32) :]
    assert not any(tail_a[i : i + 8] in tail_b for i in range(len(tail_a) - 8))
    # Each tenant takes its own string and refuses the other's, and the service's untenanted one.
    features.check_tenant(a, "acme")
    with pytest.raises(ForeignFeaturesError, match="not sealed for this tenant"):
        features.check_tenant(b, "acme")
    with pytest.raises(ForeignFeaturesError):
        features.check_tenant(a, "beta")
    with pytest.raises(ForeignFeaturesError):
        features.check_tenant(plain, "acme", Settings(features_untenanted_accepted=False))
    features.check_tenant(plain, "acme", Settings(features_untenanted_accepted=True))  # the migration window
    features.check_tenant(plain, DEFAULT_TENANT)
    # Where jobs are made: a match of beta's string in acme is refused, typed.
    with pytest.raises(ForeignFeaturesError):
        JobDocument.new("match", {"features1": acme, "features2": beta}, tenant=Tenant("acme"))
    made = JobDocument.new("match", {"features1": acme, "features2": acme}, tenant=Tenant("acme"))
    assert made.inputs["features1"] == features.digest(plain)
    # One face, one string per tenant (resealing is stable), and back to the service's own.
    assert features.seal_for(own, "acme") == acme and features.seal_for(beta, "acme") == acme
    assert features.decode(features.seal_for(acme, DEFAULT_TENANT)).tenant == DEFAULT_TENANT


def test_a_tenants_string_altered_anywhere_is_refused(own: str) -> None:
    acme = _raw(features.seal_for(own, "acme"))
    tenant_at = acme.index(b"acme")
    for at in (tenant_at, len(acme) - 40, len(acme) - 1):  # the tenant name, the vector, the tag
        bad = bytearray(acme)
        bad[at] ^= 0x01
        with pytest.raises(FeaturesError):
            features.decode(base64.b64encode(bytes(bad)).decode())
    # Renamed to another tenant (same length): the tag is the other tenant's key's, so it fails.
    renamed = acme.replace(b"acme", b"acmf")
    with pytest.raises(FeaturesError, match="not sealed by this service"):
        features.decode(base64.b64encode(renamed).decode())


def test_rotation_keeps_a_tenants_strings_while_their_key_is_accepted() -> None:
    vector = np.random.default_rng(1).standard_normal(512).astype(np.float32)
    old = key_ring_from(Settings(features_key=OLD_KEY))
    rotated = key_ring_from(Settings(features_key=NEW_KEY, features_keys_accepted=[OLD_KEY]))
    dropped = key_ring_from(Settings(features_key=NEW_KEY))
    sealed = features.encode("m@1", vector, old, "acme")
    assert features.decode(sealed, rotated).tenant == "acme"
    with pytest.raises(FeaturesError, match="not sealed by this service"):
        features.decode(sealed, dropped)
    # Resealed under the new key: another string, the same template.
    fresh = features.seal_for(sealed, "acme", rotated)
    assert fresh != sealed and b"k-new" in _raw(fresh)
    assert np.allclose(features.decode(fresh, dropped).vector, features.decode(sealed, rotated).vector)


def test_a_gallery_stores_the_services_own_string_and_matches_every_tenants(own: str, settings: Settings) -> None:
    acme = features.seal_for(own, "acme")
    with KYCDeepFaceDB("sealed", settings=settings, stores=[StubGalleryStore()]) as db:
        db.put("p-1", acme)
        stored = db.templates(["p-1"])["p-1"]
        assert features.decode(stored, sealed=False).tenant == DEFAULT_TENANT  # loads without a tenant key
        found = db.find_face(acme)
        assert found.model_dump() == {"code": "SUCCESS", "found": "p-1", "confidence": 0.99, "verified": True}


def test_forget_in_a_tenant_redacts_the_templates_it_sealed_for_that_tenant(
    stack: Resources,  # noqa: F811  (the fixture imported above)
    s3: S3Endpoint,
    own: str,
) -> None:
    """A tenant's results hold strings sealed for it; their digest is the service string's, so a
    forget finds them (the gallery holds the service's own string)."""
    acme = Tenant("acme")
    sealed = features.seal_for(own, acme)
    enrol = {"gallery": "watch", "face_id": "subject-1", "probe": sealed, "include_features": "true"}
    enrolled = run(stack, "enroll", enrol, "t:enroll", acme)
    assert enrolled.result is not None and enrolled.result["features"] == sealed
    forgot = run(stack, "forget", {"face_id": "subject-1"}, "t:forget", acme)
    assert forgot.result is not None and forgot.result["galleries"] == ["watch"]
    assert forgot.result["documents_redacted"] == 1
    redacted = stack.jobs.get(enrolled.address)
    assert redacted is not None and redacted.result is not None and redacted.result["features"] is None
