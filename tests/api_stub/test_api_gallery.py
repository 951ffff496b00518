"""Gallery job kinds through ``POST /v1/jobs``: accepted, queued with their inputs, or 422."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from shared import features as features_module
from shared.engine import KYCDeepFace
from tests.conftest import FACES_DIR, features_of


def features_digest(text: str) -> str:
    return features_module.digest(features_module.decode(text))


PROBE_REF = "s3://kyc-images/onboarding/case-1/selfie.jpg"


def test_gallery_kinds_are_accepted(client: TestClient, engine: KYCDeepFace) -> None:
    features = features_of(engine, "fr_obama.jpg")
    bodies = [
        {"kind": "enroll", "gallery": "customers", "face_id": "cust-1", "probe": PROBE_REF},
        {"kind": "enroll", "gallery": "customers", "face_id": "cust-2", "probe": features},
        {"kind": "search", "gallery": "watchlist", "probe": features, "top_k": "5"},
        {"kind": "delete", "gallery": "customers", "face_id": "cust-1"},
    ]
    for body in bodies:
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 202, (body, response.text)
        doc = response.json()
        # A features probe is stored as its digest, never the template; flags with their default.
        expected = {k: features_digest(v) if v == features else v for k, v in body.items() if k != "kind"}
        expected |= {"include_features": "false"} if body["kind"] in ("enroll", "search") else {}
        expected |= {"near_misses": "false"} if body["kind"] == "search" else {}
        assert doc["kind"] == body["kind"] and doc["inputs"] == expected
        assert features not in response.text
    search = client.post("/v1/jobs", json={"kind": "search", "gallery": "watchlist", "probe": features})
    assert search.status_code == 202 and search.json()["inputs"]["top_k"] == "10"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "enroll", "gallery": "bad name", "face_id": "x", "probe": PROBE_REF}, "gallery"),
        ({"kind": "enroll", "gallery": "customers\n", "face_id": "x", "probe": PROBE_REF}, "gallery"),
        ({"kind": "enroll", "gallery": "g", "face_id": "a\nb", "probe": PROBE_REF}, "face_id"),
        ({"kind": "enroll", "gallery": "g", "face_id": "x", "probe": str(FACES_DIR / "fr_obama.jpg")}, "probe"),
        ({"kind": "search", "gallery": "g", "probe": PROBE_REF, "top_k": "0"}, "top_k"),
        ({"kind": "delete", "gallery": "g"}, "face_id"),
    ],
)
def test_bad_gallery_requests_are_422(client: TestClient, body: dict[str, str], field: str) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert any(field in map(str, error["loc"]) for error in response.json()["detail"]), response.text
