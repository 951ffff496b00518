"""Helpers shared by the gallery benchmarks: the machine description and RESULTS.md sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path


def machine() -> str:
    """Date, command, core count and the head of ``lscpu``, as a Markdown paragraph and block."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines()[:20]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python " + " ".join(sys.argv)
    # The machine is shared: the load average says how much else ran during the measurement.
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{when}. Command: `{command}`. `nproc` = {os.cpu_count()}; Python {platform.python_version()} "
        f"on {platform.machine()}; load average at the end {load} (1/5/15 min).\n\n```\n" + "\n".join(lscpu) + "\n```\n"
    )


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace the ``## heading`` section of ``path`` (or append it), leaving other sections alone."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"## {heading}\n\n{text.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(old)
    new = pattern.sub(lambda _: section + "\n", old) if found else old.rstrip("\n") + "\n\n" + section
    path.write_text(new)
