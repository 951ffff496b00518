"""run_job / complete on the real engine with local files: answers, failures, transient errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.engine import KYCDeepFace
from shared.errors import FeaturesError, ObjectNotFoundError, StorageUnavailableError
from shared.jobs import JobDocument, JobStatus
from shared.jobs.resources import Resources
from shared.jobs.runner import complete, run_job
from shared.schemas import FacesResult, to_dict
from shared.storage import LocalStore
from tests.conftest import FACES_DIR, features_of


@pytest.fixture(scope="module")
def local() -> LocalStore:
    return LocalStore(max_bytes=25 * 1024 * 1024)


def path(name: str) -> str:
    return str(FACES_DIR / name)


def test_faces_equals_get_faces(engine: KYCDeepFace, local: LocalStore) -> None:
    timings: dict[str, float] = {}
    result = run_job(
        "faces", {"image": path("df_couple.jpg")}, Resources(engine.settings, engine=engine, images=local), timings
    )
    assert result == to_dict(engine.get_faces((FACES_DIR / "df_couple.jpg").read_bytes()))
    assert timings["fetch_s"] > 0 and timings["compute_s"] > 0


@pytest.mark.parametrize(
    ("selfie", "document", "code", "verified"),
    [
        ("fr_obama.jpg", "fr_obama2.jpg", "SUCCESS", True),
        ("fr_obama.jpg", "fr_biden.jpg", "SUCCESS", False),
        ("fr_biden.jpg", "fr_biden2.jpg", "SUCCESS", True),
        ("fr_two_people.jpg", "fr_obama2.jpg", "MULTIPLE_FACES", False),
        ("sk_rocket.jpg", "fr_obama.jpg", "NO_FACE", False),
        ("fr_obama.jpg", "sk_coffee.png", "NO_FACE", False),
    ],
)
def test_verify(engine: KYCDeepFace, local: LocalStore, selfie: str, document: str, code: str, verified: bool) -> None:
    result = run_job(
        "verify",
        {"selfie": path(selfie), "document": path(document)},
        Resources(engine.settings, engine=engine, images=local),
    )
    assert (result["code"], result["verified"]) == (code, verified)
    described = engine.selfie_faces((FACES_DIR / selfie).read_bytes())
    # A verify result keeps the faces but not their templates, unless asked for.
    assert result["selfie"] == to_dict(
        described.without_features() if isinstance(described, FacesResult) else described
    )
    assert all(
        face["features"] is None for face in result["selfie"].get("faces", []) + result["document"].get("faces", [])
    )


def test_verify_keeps_templates_only_when_asked(engine: KYCDeepFace, local: LocalStore) -> None:
    inputs = {"selfie": path("fr_obama.jpg"), "document": path("fr_obama2.jpg")}
    resources = Resources(engine.settings, engine=engine, images=local)
    kept = run_job("verify", {**inputs, "include_features": "true"}, resources)
    assert kept["selfie"] == to_dict(engine.selfie_faces((FACES_DIR / "fr_obama.jpg").read_bytes()))
    assert kept["selfie"]["faces"][0]["features"] and kept["document"]["faces"][0]["features"]
    assert (
        run_job("verify", {**inputs, "include_features": "false"}, resources)["selfie"]["faces"][0]["features"] is None
    )


def test_verify_uses_the_largest_document_face(engine: KYCDeepFace, local: LocalStore) -> None:
    result = run_job(
        "verify",
        {"selfie": path("fr_obama.jpg"), "document": path("df_couple.jpg")},
        Resources(engine.settings, engine=engine, images=local),
    )
    boxes = [f["box"] for f in result["document"]["faces"]]
    areas = [(b["x2"] - b["x1"]) * (b["y2"] - b["y1"]) for b in boxes]
    assert result["document_face"] == areas.index(max(areas))
    assert sorted([result["document_face"], *result["document_other_faces"]]) == list(range(len(boxes)))


def test_match(engine: KYCDeepFace, local: LocalStore) -> None:
    a = features_of(engine, "fr_obama.jpg")
    assert (
        run_job("match", {"features1": a, "features2": a}, Resources(engine.settings, engine=engine, images=local))[
            "verified"
        ]
        is True
    )


def test_complete_turns_errors_into_documents(engine: KYCDeepFace, local: LocalStore, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    answer = complete(
        JobDocument.new("faces", {"image": str(corrupt)}).running(1),
        Resources(engine.settings, engine=engine, images=local),
        final_attempt=False,
    )
    assert answer.status is JobStatus.SUCCEEDED and answer.result is not None
    assert answer.result["code"] == "INVALID_IMAGE"

    missing = complete(
        JobDocument.new("faces", {"image": str(tmp_path / "none.jpg")}).running(1),
        Resources(engine.settings, engine=engine, images=local),
        final_attempt=False,
    )
    assert missing.status is JobStatus.FAILED and missing.error is not None
    assert missing.error.type == ObjectNotFoundError.__name__ and "no such file" in missing.error.message

    assert missing.error.code == "ERROR"


def test_a_match_with_malformed_features_fails_as_features_error(engine: KYCDeepFace, local: LocalStore) -> None:
    # The producer refuses it at the edge; a document stored by another producer is parsed again
    # when it starts, and fails keeping the error's own type.
    with pytest.raises(FeaturesError):
        JobDocument.new("match", {"features1": "x", "features2": "y"})
    stored = JobDocument(
        job_id="old-producer", kind="match", status=JobStatus.QUEUED, created_at=datetime.now(UTC),
        inputs={"features1": "x", "features2": "y"},
    )  # fmt: skip
    bad = complete(stored.running(1), Resources(engine.settings, engine=engine, images=local))
    assert bad.status is JobStatus.FAILED and bad.error is not None
    assert (bad.error.code, bad.error.type) == ("ERROR", "FeaturesError")


def test_transient_storage_errors_propagate_for_a_retry(engine: KYCDeepFace) -> None:
    class Down:
        def get(self, ref: str) -> bytes:
            raise StorageUnavailableError("S3 unreachable")

        def put(self, ref: str, data: bytes) -> None:
            raise StorageUnavailableError("S3 unreachable")

    with pytest.raises(StorageUnavailableError):
        complete(
            JobDocument.new("faces", {"image": "s3://kyc-images/a.jpg"}).running(1),
            Resources(engine.settings, engine=engine, images=Down()),
            final_attempt=False,
        )
