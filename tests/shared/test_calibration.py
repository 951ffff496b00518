"""The shipped confidence map: monotonic, anchored at the stated operating point, refittable."""

from __future__ import annotations

import numpy as np
import pytest

from shared import calibration
from shared.engine import KYCDeepFace


def test_shipped_map_is_for_the_shipped_model(engine: KYCDeepFace) -> None:
    cmap = engine.confidence_map
    assert cmap.model_id == engine.model_id
    assert cmap.far == 1e-3 and cmap.anchor == 0.76
    # What bench/calibrate.py measured when it wrote the file: the stated operating point holds.
    assert cmap.metrics["far_at_default"] <= 1.05e-3
    assert cmap.metrics["out_of_fold_far"] <= 2e-3
    assert cmap.metrics["tar_at_far"] > 0.9


def test_map_is_monotonic_bounded_and_anchored(engine: KYCDeepFace) -> None:
    cmap = engine.confidence_map
    cos = np.linspace(-1, 1, 2001)
    conf = cmap.confidence(cos)
    assert np.all(np.diff(conf) >= 0) and conf[0] >= 0 and conf[-1] <= 1
    assert abs(float(cmap.confidence(cmap.threshold)) - 0.76) < 1e-9
    assert abs(cmap.cosine_for(0.9) - cmap.threshold) > 0
    assert abs(float(cmap.confidence(cmap.cosine_for(0.9))) - 0.9) < 1e-9


def test_far_table_is_decreasing_in_far(engine: KYCDeepFace) -> None:
    cmap = engine.confidence_map
    fars = [f for f, _ in cmap.far_table]
    cosines = [c for _, c in cmap.far_table]
    assert fars == sorted(fars, reverse=True) and cosines == sorted(cosines)
    assert cmap.cosine_at_far(1e-3) == cmap.threshold
    assert cmap.cosine_at_far(1e-8) >= cmap.cosine_at_far(1e-6)


def test_fit_recovers_the_operating_point_on_synthetic_scores() -> None:
    rng = np.random.default_rng(0)
    impostor = rng.normal(0.0, 0.1, 200_000)
    genuine = rng.normal(0.6, 0.1, 5_000)
    cmap = calibration.fit("m@x", genuine, impostor, far=1e-3, anchor=0.76, fitted_on="synthetic")
    far = float((impostor >= cmap.threshold).mean())
    assert far <= 1e-3 and far > 0.8e-3
    assert cmap.slope > 0


def test_calibration_reports_failure_to_acquire_per_quality_level(engine: KYCDeepFace) -> None:
    """bench/calibrate.py on real LFW faces: a turned face counts as FTA under the strict gate and its
    pairs become FTA, never a non-match; the generalised rates follow ISO/IEC 19795-1."""
    from bench.calibrate import acquired, all_pairs, embed_all, iso_rates
    from shared.schemas import QualityLevel
    from tests.conftest import LFW_DIR, need

    carson = LFW_DIR / "images" / "Johnny_Carson"
    others = sorted((LFW_DIR / "images" / "Hugo_Chavez").glob("*.jpg"))[:3]
    need(carson.is_dir() and len(others) == 3, f"LFW folds not found at {LFW_DIR}")
    paths = [carson / "Johnny_Carson_0001.jpg", carson / "Johnny_Carson_0002.jpg", *others]
    vectors, measures = embed_all(engine, paths)
    names = np.array(["carson", "carson", "chavez", "chavez", "chavez"])
    pairs = all_pairs(vectors, names, np.zeros(len(paths), int))
    threshold = engine.confidence_map.threshold
    low = iso_rates(pairs, acquired(measures, engine.settings.quality_gate(QualityLevel.LOW)), threshold)
    high = iso_rates(pairs, acquired(measures, engine.settings.quality_gate(QualityLevel.HIGH)), threshold)
    assert low["fta_images"] == 0.0 and low["fnmr"] == 0.0 and low["gfrr"] == 0.0
    assert high["fta_images"] >= 0.2 and high["fta_genuine_pairs"] >= 0.25  # the turned Carson, at least
    assert high["gfrr"] == pytest.approx(high["fta_genuine_pairs"] + (1 - high["fta_genuine_pairs"]) * high["fnmr"])
    assert high["gfar"] <= high["fmr"]
