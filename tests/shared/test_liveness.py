"""Passive liveness on the three real captures: the live one passes at the shipped threshold, the
printed photo and the phone screen do not, and only ``enforce`` lets the score change a verify."""

from __future__ import annotations

import numpy as np
import pytest

from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.jobs.resources import Resources
from shared.jobs.runner import run_job
from shared.models.liveness import context_crop
from shared.schemas import FacesResult
from shared.storage import LocalStore
from tests.conftest import FACES_DIR, LIVENESS_DIR, need

LIVE, PRINT, SCREEN = "silentface_real_T1.jpg", "silentface_print_F1.jpg", "silentface_screen_F2.jpg"


@pytest.fixture(scope="module", autouse=True)
def _captures() -> None:
    need((LIVENESS_DIR / LIVE).is_file(), f"liveness captures not found at {LIVENESS_DIR}")


@pytest.fixture(scope="module")
def enforcing(settings: Settings) -> KYCDeepFace:
    return KYCDeepFace(settings=settings.model_copy(update={"liveness": "enforce"}))


def selfie_score(engine: KYCDeepFace, name: str) -> tuple[float, bool]:
    result = engine.selfie_faces((LIVENESS_DIR / name).read_bytes())
    assert isinstance(result, FacesResult) and len(result.faces) == 1, result
    live = result.faces[0].liveness
    assert live is not None and live.model == engine.liveness.model_id  # type: ignore[union-attr]
    return live.score, live.live


def test_live_capture_passes_and_both_attacks_fail_at_the_shipped_threshold(engine: KYCDeepFace) -> None:
    threshold = engine.settings.liveness_threshold
    score, live = selfie_score(engine, LIVE)
    assert live and score >= threshold
    for attack in (PRINT, SCREEN):
        score, live = selfie_score(engine, attack)
        assert not live and score < threshold, attack


def test_liveness_is_scored_only_when_asked(engine: KYCDeepFace) -> None:
    result = engine.get_faces((LIVENESS_DIR / LIVE).read_bytes())
    assert isinstance(result, FacesResult) and result.faces[0].liveness is None


def verify(engine: KYCDeepFace, selfie: str, document: str) -> dict:  # type: ignore[type-arg]
    local = LocalStore(max_bytes=25 * 1024 * 1024)
    inputs = {"selfie": str(LIVENESS_DIR / selfie), "document": str(document)}
    return run_job("verify", inputs, Resources(engine.settings, engine=engine, images=local))


def test_report_mode_adds_the_score_and_never_changes_the_decision(engine: KYCDeepFace) -> None:
    """The default: a printed photo against a stranger's portrait is a plain non-match, scored."""
    result = verify(engine, PRINT, FACES_DIR / "fr_obama.jpg")
    assert engine.settings.liveness == "report"
    assert result["code"] == "SUCCESS" and result["verified"] is False
    assert result["liveness"]["live"] is False and result["liveness"]["score"] < 0.5


def test_enforce_answers_spoof_suspected_with_the_score(enforcing: KYCDeepFace) -> None:
    for attack in (PRINT, SCREEN):
        # The capture against itself as the document: without liveness it would verify.
        result = verify(enforcing, attack, LIVENESS_DIR / attack)
        assert result["code"] == "SPOOF_SUSPECTED" and result["image"] == "selfie", attack
        assert result["verified"] is False and result["confidence"] is None
        assert result["liveness"]["score"] < enforcing.settings.liveness_threshold
        assert f"{result['liveness']['score']:.3f}" in result["message"]
    live = verify(enforcing, LIVE, LIVENESS_DIR / LIVE)
    assert live["code"] == "SUCCESS" and live["verified"] is True and live["liveness"]["live"] is True


def test_off_loads_no_liveness_model(settings: Settings) -> None:
    engine = KYCDeepFace(settings=settings.model_copy(update={"liveness": "off"}))
    assert engine.liveness is None
    result = engine.selfie_faces((LIVENESS_DIR / LIVE).read_bytes())
    assert isinstance(result, FacesResult) and result.faces[0].liveness is None


def test_context_crop_is_scaled_limited_and_shifted_inside_the_image() -> None:
    image = np.zeros((400, 300, 3), np.uint8)
    centre = context_crop(image, np.array([100.0, 150.0, 200.0, 250.0]))
    assert centre.shape[:2] == (271, 271)  # 2.7 x 100 px, fits
    corner = context_crop(image, np.array([0.0, 0.0, 100.0, 100.0]))
    assert corner.shape[:2] == (271, 271)  # shifted inside, not cut
    big = context_crop(image, np.array([50.0, 50.0, 250.0, 250.0]))
    assert big.shape[0] <= 400 and big.shape[1] <= 300  # the scale limited to what fits
