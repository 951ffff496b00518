"""``kycface gallery`` as a user runs it: subprocesses on real photos, file store and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import Settings
from tests.conftest import FACES_DIR, need

pytestmark = [pytest.mark.services, pytest.mark.slow]


def kycface(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "shared.cli.main", "gallery", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture(params=["file", "redis"])
def env(request: pytest.FixtureRequest, tmp_path: Path, settings: Settings) -> dict[str, str]:
    need(FACES_DIR.is_dir(), f"face photos not found at {FACES_DIR}")
    out = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")}
    out["KYC_MODEL_DIR"] = str(settings.model_dir)
    out["KYC_GALLERY_FILE_DIR"] = str(tmp_path / "galleries")
    if request.param == "redis":
        out["KYC_REDIS_URL"] = request.getfixturevalue("redis_url")
    return out


def test_enroll_search_delete_count(env: dict[str, str]) -> None:
    assert (
        kycface(env, "enroll", "obama", str(FACES_DIR / "fr_obama.jpg"), "--gallery", "watchlist")["code"] == "SUCCESS"
    )
    assert (
        kycface(env, "enroll", "biden", str(FACES_DIR / "fr_biden.jpg"), "--gallery", "watchlist")["code"] == "SUCCESS"
    )
    assert kycface(env, "count", "--gallery", "watchlist")["count"] == 2
    assert kycface(env, "count")["count"] == 0  # another gallery
    hit = kycface(env, "search", str(FACES_DIR / "fr_obama2.jpg"), "--gallery", "watchlist")
    assert hit["found"] == "obama" and hit["verified"] is True
    top = kycface(env, "search", str(FACES_DIR / "fr_biden2.jpg"), "--gallery", "watchlist", "--top-k", "2")
    assert [(c["face_id"], c["verified"]) for c in top["candidates"]] == [("biden", True)]  # type: ignore[index, union-attr]
    near = kycface(env, "search", str(FACES_DIR / "fr_biden2.jpg"), "--gallery", "watchlist", "--top-k", "2",
                   "--near-misses")  # fmt: skip
    assert [c["face_id"] for c in near["candidates"]] == ["biden", "obama"]  # type: ignore[index, union-attr]
    assert kycface(env, "delete", "obama", "--gallery", "watchlist")["deleted"] is True
    assert kycface(env, "search", str(FACES_DIR / "fr_obama2.jpg"), "--gallery", "watchlist")["found"] is None
    no_face = kycface(env, "search", str(FACES_DIR / "sk_coffee.png"), "--gallery", "watchlist")
    assert no_face["code"] == "ERROR"


def test_a_tenants_gallery_is_its_own(env: dict[str, str]) -> None:
    """Both stores (file and Redis) keep acme's "watchlist" apart from the default tenant's."""
    enrolled = kycface(
        env, "enroll", "obama", str(FACES_DIR / "fr_obama.jpg"), "--gallery", "watchlist", "--tenant", "acme"
    )
    assert enrolled["code"] == "SUCCESS"
    assert kycface(env, "count", "--gallery", "watchlist", "--tenant", "acme")["count"] == 1
    assert kycface(env, "count", "--gallery", "watchlist")["count"] == 0
    assert kycface(env, "delete", "obama", "--gallery", "watchlist", "--tenant", "beta")["deleted"] is False
    assert kycface(env, "count", "--gallery", "watchlist", "--tenant", "acme")["count"] == 1
