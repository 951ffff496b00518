"""Helpers shared by the gallery benchmarks: the machine description."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys


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
