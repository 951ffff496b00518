"""``kycface features reseal``, as an operator runs it for the migration to tenant-bound features."""

from __future__ import annotations

import os
import subprocess
import sys

from harness import TEST_FEATURES_KEY
from shared import features
from shared.engine import KYCDeepFace
from shared.exits import EX_CONFIG
from tests.conftest import features_of


def reseal(stdin: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")}
    return subprocess.run(
        [sys.executable, "-m", "shared.cli.main", "features", "reseal", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )


def test_reseal_turns_untenanted_strings_into_a_tenants_line_by_line(engine: KYCDeepFace) -> None:
    own = features_of(engine, "fr_obama.jpg")  # sealed by this session's key, before tenants had keys
    other = features.seal_for(features_of(engine, "fr_biden.jpg"), "beta")
    done = reseal(f"{own}\nnot-a-features-string\n{other}\n", "--tenant", "acme", KYC_FEATURES_KEY=TEST_FEATURES_KEY)
    assert done.returncode == 1  # one line refused
    first, refused, third = done.stdout.splitlines()
    assert refused == "" and "line 2:" in done.stderr and "not-a-features" not in done.stderr
    for line, of in ((first, own), (third, other)):
        decoded = features.decode(line)
        assert decoded.tenant == "acme" and features.digest(decoded) == features.digest(features.decode(of))
    assert reseal(f"{own}\n", "--tenant", "acme", KYC_FEATURES_KEY=TEST_FEATURES_KEY).returncode == 0


def test_reseal_needs_the_deployments_key(engine: KYCDeepFace) -> None:
    done = reseal(features_of(engine, "fr_obama.jpg") + "\n", "--tenant", "acme")
    assert done.returncode == EX_CONFIG and "KYC_FEATURES_KEY is not set" in done.stderr
    assert done.stdout == ""  # nothing written without the key
