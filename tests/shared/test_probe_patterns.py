"""Probe sketches on real faces, and the worker's count of near-duplicate probes per tenant."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from shared import features
from shared.engine import KYCDeepFace
from shared.gallery.probe_patterns import ProbePatterns, sketch
from shared.jobs.resources import Resources
from shared.metrics import metrics
from shared.tenants import Tenant
from tests.conftest import S3Endpoint, features_of
from tests.shared.test_erasure import SELFIE, ref, run, stack  # noqa: F401  (stack: the erasure tests' fixture)

pytestmark = pytest.mark.services


def _bits(a: str, b: str) -> int:
    return (sketch(features.decode(a).vector) ^ sketch(features.decode(b).vector)).bit_count()


def test_sketches_tell_a_repeated_probe_from_another_photo_or_person(engine: KYCDeepFace) -> None:
    obama, obama2, biden = (features_of(engine, n) for n in ("fr_obama.jpg", "fr_obama2.jpg", "fr_biden.jpg"))
    assert _bits(obama, obama) == 0
    # Another photo of the same person and a stranger are far past the near-duplicate bound (8).
    assert _bits(obama, obama2) > 8 and _bits(obama, biden) > 16
    patterns = ProbePatterns(ring=4, near_bits=8)
    assert [patterns.observe("key:a", features.decode(p)) for p in (obama, obama2, biden)] == [False] * 3
    assert patterns.observe("key:b", features.decode(obama)) is False  # rings are per holder
    assert patterns.observe("key:a", features.decode(obama)) is True
    assert (patterns.near_duplicates("key:a"), patterns.near_duplicates("key:b")) == (1, 0)


def test_a_worker_counts_a_tenants_repeated_image_probes(
    stack: Resources,  # noqa: F811  (the fixture imported above)
    s3: S3Endpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = Tenant("probe-pattern-t")
    run(stack, "enroll", {"gallery": "g", "face_id": "p", "probe": ref(s3, SELFIE)}, "e", tenant)
    metrics()  # registered in this process

    def counted() -> float:
        return REGISTRY.get_sample_value("kyc_probe_near_duplicates_total", {"kind": "search"}) or 0.0

    before = counted()
    with caplog.at_level(logging.WARNING, logger="shared.gallery.probe_patterns"):
        for i in range(3):  # the same image searched three times: two near-duplicates
            run(stack, "search", {"gallery": "g", "probe": ref(s3, SELFIE)}, f"s-{i}", tenant)
    assert counted() - before == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "shared.gallery.probe_patterns"]
    assert len(lines) == 2 and all("tenant:probe-pattern-t" in line for line in lines)
    assert SELFIE not in caplog.text
