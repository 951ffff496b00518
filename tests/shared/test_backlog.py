"""Backlog building blocks without models: manifests, job ids, summary lines, the sample pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.backlog.manifest import backlog_job_id, read_manifest
from shared.backlog.output import BacklogOutput, summary_row
from shared.backlog.sample import sample_pairs
from shared.errors import JobError
from shared.jobs import JobDocument, JobFailure
from tests.conftest import FACES_DIR, load_photos, need


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_job_ids_are_derived_from_the_work(tmp_path: Path) -> None:
    inputs = {"selfie": "/a.jpg", "document": "/b.jpg"}
    assert backlog_job_id("verify", inputs) == backlog_job_id("verify", dict(reversed(inputs.items())))
    assert backlog_job_id("verify", inputs) != backlog_job_id("verify", {"selfie": "/b.jpg", "document": "/a.jpg"})
    rows = read_manifest(write(tmp_path / "m.csv", "selfie,document\n/a.jpg,/b.jpg\n"))
    assert rows[0].job.job_id == backlog_job_id("verify", inputs)


def test_relative_paths_are_read_from_the_manifest_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    manifest = write(tmp_path / "sub" / "m.csv", "document,selfie,job_id\nids/p.jpg,s3://kyc-images/s.jpg,case-1\n")
    job = read_manifest(manifest)[0].job
    document = str(tmp_path / "sub" / "ids" / "p.jpg")
    assert job.inputs == {"selfie": "s3://kyc-images/s.jpg", "document": document, "include_features": "false"}
    assert job.job_id == "case-1"


def test_identical_rows_share_one_job(tmp_path: Path) -> None:
    rows = read_manifest(write(tmp_path / "m.csv", "selfie,document\n/a.jpg,/b.jpg\n/a.jpg,/b.jpg\n"))
    assert [r.line for r in rows] == [2, 3]
    assert rows[0].job == rows[1].job


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("selfie\n/a.jpg\n", "must name the columns document"),
        ("selfie,document\n/a.jpg,\n", "m.csv:2: empty image reference"),
        ("selfie,document\n/a.jpg,s3://kyc-images//abs\n", "m.csv:2: "),
        ("selfie,document,job_id\n/a.jpg,/b.jpg,../x\n", "m.csv:2: job id"),
        ("selfie,document,job_id\n/a.jpg,/b.jpg,x\n/c.jpg,/d.jpg,x\n", "m.csv:3: job id 'x' is already used on line 2"),
    ],
)
def test_bad_manifests_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(JobError, match=message.replace("(", r"\(")):
        read_manifest(write(tmp_path / "m.csv", text))


def test_summary_rows_per_outcome() -> None:
    job = JobDocument.new("verify", {"selfie": "/a.jpg", "document": "/b.jpg"}, "j1")
    assert summary_row(job) == {"job_id": "j1", "status": "queued", "code": "", "confidence": "", "verified": ""}
    matched = job.succeeded({"code": "SUCCESS", "confidence": 1e-6, "verified": False})
    assert summary_row(matched)["confidence"] == "0.000001"
    assert summary_row(matched)["verified"] == "false"
    refused = job.succeeded({"code": "NO_FACE", "confidence": None, "verified": False})
    assert (summary_row(refused)["code"], summary_row(refused)["verified"]) == ("NO_FACE", "false")
    failed = job.failed(JobFailure(type="ObjectNotFoundError", message="gone"))
    assert (summary_row(failed)["status"], summary_row(failed)["code"]) == ("failed", "ERROR")


def test_previous_answers_are_reused_only_for_the_same_work(tmp_path: Path) -> None:
    output = BacklogOutput(tmp_path / "out")
    job = JobDocument.new("verify", {"selfie": "/a.jpg", "document": "/b.jpg"}, "j1")
    assert output.finished(job) is None
    output.write_document(job)
    assert output.finished(job) is None  # not terminal: run it again
    done = job.succeeded({"code": "SUCCESS", "confidence": 1.0, "verified": True})
    output.write_document(done)
    assert output.finished(job) == done
    other = JobDocument.new("verify", {"selfie": "/c.jpg", "document": "/b.jpg"}, "j1")
    assert output.finished(other) is None
    output.document_path("j1").write_text("{not json")
    assert output.finished(job) is None


def test_sample_pairs_cover_same_different_and_refusals() -> None:
    need((FACES_DIR / "labels.csv").is_file(), f"face photos not found at {FACES_DIR}")
    identity = {p.file: p.identity for p in load_photos()}
    pairs = sample_pairs(FACES_DIR)
    kinds = [(identity[s.name], identity[d.name]) for s, d in pairs]
    assert any(a == b for a, b in kinds), "no same-identity pair"
    assert any(a != b and "multi" not in (a, b) and "noface" not in (a, b) for a, b in kinds), "no impostor pair"
    assert {"multi", "noface"} <= {a for a, _ in kinds}, "no refusal case"
    assert all(p.is_absolute() for pair in pairs for p in pair)
    assert sample_pairs(FACES_DIR) == pairs  # stable order
