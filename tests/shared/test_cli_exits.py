"""Every refusal to start, through the real ``kycface`` in a subprocess: a status that is not 0
(78 for the configuration, 69 for a broker or Redis that does not answer) and exactly one line
on stderr naming the reason. A supervisor restarting ``on-failure`` reads 0 as a clean stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import free_port
from shared.config import Settings
from shared.exits import EX_CONFIG, EX_UNAVAILABLE

KEY = "ops-1:" + "k" * 40
# Nothing listens here: a broker or Redis that does not answer.
DEAD = f"redis://127.0.0.1:{free_port()}/0"


def bare_env(**values: str) -> dict[str, str]:
    """This environment without any KYC_ setting (this test session's key included), plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYC_")}
    env["KYC_MODEL_DIR"] = str(Settings().model_dir)
    return env | values


def kycface(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli.main", *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )


# fmt: off
CASES = [
    # command, environment, status, the reason's words
    (["worker"], {}, EX_CONFIG, "KYC_BROKER_URL is not set"),
    (["worker"], {"KYC_BROKER_URL": DEAD}, EX_CONFIG, "KYC_FEATURES_KEY is not set"),
    (["worker"], {"KYC_BROKER_URL": DEAD, "KYC_FEATURES_KEY": "k:short"}, EX_CONFIG, "at least 32 characters"),
    (["worker"], {"KYC_BROKER_URL": DEAD, "KYC_FEATURES_KEY": KEY, "KYC_MODEL_DIR": "/nonexistent"},
     EX_CONFIG, "not found; looked in /nonexistent"),
    (["worker"], {"KYC_BROKER_URL": DEAD, "KYC_FEATURES_KEY": KEY, "KYC_TASK_SOFT_TIME_LIMIT_S": "900"},
     EX_CONFIG, "KYC_TASK_SOFT_TIME_LIMIT_S must be below KYC_TASK_TIME_LIMIT_S"),
    (["worker"], {"KYC_BROKER_URL": DEAD, "KYC_FEATURES_KEY": KEY}, EX_UNAVAILABLE, "does not answer"),
    (["worker"], {"KYC_BROKR_URL": DEAD}, EX_CONFIG, "unknown setting KYC_BROKR_URL; did you mean KYC_BROKER_URL?"),
    (["worker"], {"KYC_BATCH_SIZE": "0"}, EX_CONFIG, "invalid settings: KYC_BATCH_SIZE: Input should be greater"),
    (["events"], {"KYC_BROKER_URL": DEAD}, EX_CONFIG, "kycdeepface events: KYC_FEATURES_KEY is not set"),
    (["events"], {"KYC_FEATURES_KEY": KEY}, EX_CONFIG, "no Redis: set KYC_REDIS_URL or KYC_BROKER_URL"),
    (["events"], {"KYC_BROKER_URL": DEAD, "KYC_FEATURES_KEY": KEY}, EX_UNAVAILABLE, "Redis does not answer"),
    (["api", "--port", "0"], {"KYC_BROKER_URL": DEAD}, EX_CONFIG, "kycdeepface api: KYC_FEATURES_KEY is not set"),
    (["api", "--port", "0"], {"KYC_API_KEY": "x"}, EX_CONFIG, "unknown setting KYC_API_KEY"),
    (["beat"], {}, EX_CONFIG, "kycdeepface beat: KYC_BROKER_URL is not set"),
    (["beat"], {"KYC_BROKER_URL": DEAD}, EX_UNAVAILABLE, "kycdeepface beat: the broker does not answer"),
    (["backlog", "m.csv", "--out", "out"], {"KYC_MODEL_DIR": "/nonexistent"}, EX_CONFIG, "kycdeepface backlog: model"),
    (["backlog", "m.csv", "--out", "out"], {"KYC_BROKER_URL": DEAD}, EX_UNAVAILABLE, "the broker does not answer"),
]
# fmt: on


@pytest.mark.parametrize(
    ("args", "values", "status", "reason"), CASES, ids=[f"{c[0][0]}-{n}" for n, c in enumerate(CASES)]
)
def test_refusal_to_start_is_one_line_and_a_status(
    args: list[str], values: dict[str, str], status: int, reason: str, tmp_path: Path
) -> None:
    (tmp_path / "m.csv").write_text("selfie,document\na.jpg,b.jpg\n")
    done = kycface(args, bare_env(**values), tmp_path)
    lines = done.stderr.splitlines()
    assert (done.returncode, len(lines)) == (status, 1), done.stderr[-3000:]
    assert lines[0].startswith("kycface: ") and reason in lines[0], lines[0]
    assert done.stdout == ""
    # A refusal names variables, never their values: a URL or a key may hold a secret.
    assert KEY not in done.stderr and DEAD not in done.stderr
    assert not (tmp_path / "out").exists()  # nothing was started, so nothing was written


def test_a_bad_limit_on_the_command_line_is_a_usage_error(tmp_path: Path) -> None:
    done = kycface(["backlog", "m.csv", "--out", "out", "--window", "0"], bare_env(), tmp_path)
    assert done.returncode == 2 and "--window: must be a positive whole number" in done.stderr


def test_the_events_module_refuses_as_kycface_events_does(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared.events", "--max-batches", "1"],
        capture_output=True, text=True, timeout=120, env=bare_env(KYC_BROKER_URL=DEAD), cwd=tmp_path,
    )  # fmt: skip
    assert (done.returncode, len(done.stderr.splitlines())) == (EX_CONFIG, 1), done.stderr[-3000:]
    assert "kycdeepface events: KYC_FEATURES_KEY is not set" in done.stderr
