"""``kycface faces`` / ``kycface match`` as a user runs them: a subprocess, JSON lines out."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import FACES_DIR


def kycface(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.cli.main", *args], capture_output=True, text=True, timeout=120)


def test_faces_prints_one_document_per_image_in_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    images = [FACES_DIR / "fr_two_people.jpg", bad, FACES_DIR / "sk_coffee.png", tmp_path / "missing.jpg"]
    run = kycface("faces", *map(str, images))
    assert run.returncode == 0, run.stderr
    docs = [json.loads(line) for line in run.stdout.splitlines()]
    assert [d["code"] for d in docs] == ["SUCCESS", "INVALID_IMAGE", "SUCCESS", "INVALID_IMAGE"]
    assert len(docs[0]["faces"]) == 2 and docs[2]["faces"] == []
    assert docs[3]["reason"] == "READ_ERROR"


def test_match_images_and_features_strings() -> None:
    same = kycface("match", str(FACES_DIR / "fr_obama.jpg"), str(FACES_DIR / "fr_obama2.jpg"))
    assert same.returncode == 0
    assert json.loads(same.stdout)["verified"] is True
    features = json.loads(kycface("faces", str(FACES_DIR / "fr_biden.jpg")).stdout)["faces"][0]["features"]
    other = json.loads(kycface("match", str(FACES_DIR / "fr_obama.jpg"), features).stdout)
    assert other["code"] == "SUCCESS" and other["verified"] is False


def test_match_with_a_group_photo_says_why() -> None:
    run = kycface("match", str(FACES_DIR / "fr_two_people.jpg"), str(FACES_DIR / "fr_obama.jpg"))
    doc = json.loads(run.stdout)
    assert run.returncode == 0 and doc["code"] == "ERROR" and "exactly one" in doc["message"]


def test_usage_error_exits_non_zero() -> None:
    assert kycface("faces").returncode == 2
    assert kycface("bogus-command").returncode == 2


def test_faces_quality_and_liveness_options() -> None:
    cut = str(FACES_DIR / "fr_obama_partial_face.jpg")
    strict, kept = kycface("faces", cut), kycface("faces", "--quality", "none", "--liveness", cut)
    assert strict.returncode == 0 and kept.returncode == 0, strict.stderr + kept.stderr
    assert json.loads(strict.stdout)["faces"] == []
    face = json.loads(kept.stdout)["faces"][0]
    assert face["quality"]["level"] == "none" and 0 <= face["liveness"]["score"] <= 1
    assert kycface("faces", "--quality", "ultra", cut).returncode != 0
