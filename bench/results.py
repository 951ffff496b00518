"""Writing a benchmark's section of ``bench/RESULTS.md`` (the one place that edits that file), the
machine and command lines a result records, and which engine run a pipeline column is compared with."""

from __future__ import annotations

import os
import platform
import re
import shlex
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace the ``## heading`` section of ``path`` (or append it), leaving other sections alone."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"## {heading}\n\n{text.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(old)
    new = pattern.sub(lambda _: section + "\n", old) if found else old.rstrip("\n") + "\n\n" + section
    path.write_text(new)


def command_line(*program: str, argv: Sequence[str] | None = None) -> str:
    """How a benchmark was started, for its result: ``python <program> <its options>``, without
    ``--json PATH``: where one run left its measurements is a path of that machine (``python -m
    bench`` hands its scripts a temporary one), not part of repeating the run."""
    args = list(sys.argv[1:] if argv is None else argv)
    kept: list[str] = []
    while args:
        arg = args.pop(0)
        if arg == "--json":
            args[:1] = []
        elif not arg.startswith("--json="):
            kept.append(arg)
    return shlex.join(["python", *program, *kept])


def machine() -> str:
    """Cores, CPU model, memory and Python of this machine, for a result's heading."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return f"{os.cpu_count()} cores ({model}), {mem_kib / 2**20:.0f} GiB, Python {platform.python_version()}"


def baseline(rnd: dict[str, Any], column: str) -> tuple[float, float]:
    """The in-process engine's images/s and CPU ms per image to compare ``column`` of one pipeline
    round with: the mean of the engine runs just before and just after its layout."""
    near = rnd[column]["engine_near"]
    return statistics.fmean(rate for rate, _ in near), statistics.fmean(cpu for _, cpu in near)
