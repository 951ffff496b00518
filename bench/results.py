"""Writing a benchmark's section of ``bench/RESULTS.md``: the one place that edits that file."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace the ``## heading`` section of ``path`` (or append it), leaving other sections alone."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"## {heading}\n\n{text.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(old)
    new = pattern.sub(lambda _: section + "\n", old) if found else old.rstrip("\n") + "\n\n" + section
    path.write_text(new)
