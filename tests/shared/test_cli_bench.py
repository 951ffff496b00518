"""``kycface bench``: runs ``python -m bench`` from the checkout with the options given."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.cli import bench_cmds
from shared.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_options_are_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], Any]] = []

    def fake_run(args: list[str], cwd: Any, check: bool) -> subprocess.CompletedProcess[bytes]:
        calls.append((args, cwd))
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(bench_cmds.subprocess, "run", fake_run)
    assert main(["bench", "--only", "gallery", "--gallery-sizes", "1000", "--full-gallery"]) == 0
    ((args, cwd),) = calls
    assert args[1:] == ["-m", "bench", "--only", "gallery", "--gallery-sizes", "1000", "--full-gallery"]
    assert Path(cwd) == ROOT


def test_bench_gallery_writes_one_table_and_json(tmp_path: Path) -> None:
    # The smallest real run: a tiny gallery, no models or services.
    out = tmp_path / "bench.json"
    args = ["--only", "gallery", "--gallery-sizes", "500", "--queries", "5", "--json", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--results", str(tmp_path / "RESULTS.md")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "| gallery top-10, N=500, ours (per query) |" in run.stdout
    assert set(json.loads(out.read_text())["gallery"]["sizes"]) == {"500"}
    assert "## Runs of `python -m bench`" in (tmp_path / "RESULTS.md").read_text()
