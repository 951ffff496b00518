"""Quality by role: a strict gate for the verify selfie, a lenient one for documents and probes,
and the ``quality`` option of get_faces (none / low / medium / high)."""

from __future__ import annotations

import pytest

from shared.engine import KYCDeepFace
from shared.jobs.resources import Resources
from shared.jobs.runner import run_job
from shared.schemas import ErrorResult, FacesResult
from shared.storage import LocalStore
from tests.conftest import FACES_DIR, LFW_DIR, load_photos, need

# A real press photo with the head turned hard (|yaw| ~0.8), and a frontal one of the same man.
TURNED = LFW_DIR / "images" / "Johnny_Carson" / "Johnny_Carson_0002.jpg"
FRONTAL = LFW_DIR / "images" / "Johnny_Carson" / "Johnny_Carson_0001.jpg"
LEVELS = ("none", "low", "medium", "high")


@pytest.fixture(scope="module", autouse=True)
def _lfw() -> None:
    need(TURNED.is_file() and FRONTAL.is_file(), f"LFW folds not found at {LFW_DIR}")


def verify(engine: KYCDeepFace, selfie: str, document: str) -> dict:  # type: ignore[type-arg]
    resources = Resources(engine.settings, engine=engine, images=LocalStore(max_bytes=1 << 25))
    return run_job("verify", {"selfie": selfie, "document": document}, resources)


def centre_faces(result: FacesResult) -> tuple[list[str], list[str]]:
    """(quality levels of usable faces, reasons of partial faces) near the centre of an LFW image."""
    near = lambda b: abs((b.x1 + b.x2) / 2 - 125) < 40  # noqa: E731
    return [f.quality.level for f in result.faces if near(f.box) and f.quality], [
        p.reason.value for p in result.partial_faces if near(p.box)
    ]


def test_turned_selfie_is_refused_but_the_same_face_matches_as_a_document(engine: KYCDeepFace) -> None:
    refused = verify(engine, str(TURNED), str(FRONTAL))
    assert refused["code"] == "NO_FACE" and refused["image"] == "selfie"
    assert "NOT_FRONT_FACING" in refused["message"]
    assert refused["confidence"] is None  # refused, never a silent non-match
    matched = verify(engine, str(FRONTAL), str(TURNED))
    assert matched["code"] == "SUCCESS" and matched["verified"] is True


def test_quality_option_decides_which_faces_are_usable(engine: KYCDeepFace) -> None:
    data = TURNED.read_bytes()
    seen = {}
    for level in LEVELS:
        result = engine.get_faces(data, level)
        assert isinstance(result, FacesResult)
        seen[level] = centre_faces(result)
    # Usable up to low, and it says what keeps it from high; refused from medium on.
    assert seen["none"] == seen["low"] == (["low"], [])
    assert seen["medium"] == seen["high"] == ([], ["NOT_FRONT_FACING"])
    usable = engine.get_faces(data, "low")
    assert isinstance(usable, FacesResult)
    assert "NOT_FRONT_FACING" in [r.value for f in usable.faces for r in (f.quality.reasons if f.quality else [])]


def test_stricter_levels_never_keep_more_faces(engine: KYCDeepFace) -> None:
    for photo in load_photos():
        counts, totals = [], set()
        for level in LEVELS:
            result = engine.get_faces(photo.path.read_bytes(), level)
            assert isinstance(result, FacesResult)
            counts.append(len(result.faces))
            totals.add(len(result.faces) + len(result.partial_faces))  # every detected face is reported
        assert counts == sorted(counts, reverse=True) and len(totals) == 1, (photo.file, counts, totals)


def test_none_keeps_even_a_cut_face(engine: KYCDeepFace) -> None:
    data = (FACES_DIR / "fr_obama_partial_face.jpg").read_bytes()
    kept, default = engine.get_faces(data, "none"), engine.get_faces(data)
    assert isinstance(kept, FacesResult) and isinstance(default, FacesResult)
    assert len(kept.faces) == 1 and kept.faces[0].quality is not None and kept.faces[0].quality.level == "none"
    assert "CROPPED" in [r.value for r in kept.faces[0].quality.reasons]
    assert default.faces == [] and [p.reason.value for p in default.partial_faces] == ["CROPPED"]


def test_default_level_is_the_setting_and_unknown_levels_are_refused(engine: KYCDeepFace) -> None:
    data = FRONTAL.read_bytes()
    assert engine.settings.quality_default.value == "low"
    assert engine.get_faces(data) == engine.get_faces(data, "low")
    bad = engine.get_faces(data, "ultra")
    assert isinstance(bad, ErrorResult) and "quality" in bad.message
