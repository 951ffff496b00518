"""``kycface bench``: the benchmarks of ``bench/`` (``python -m bench``) from a source checkout."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from shared.errors import KYCFaceError

_CHECKOUT = Path(__file__).resolve().parent.parent.parent
# The options of ``python -m bench`` this command passes on (flag, takes a value).
_FORWARDED = (
    ("--only", True),
    ("--gallery-sizes", True),
    ("--full-gallery", False),
    ("--queries", True),
    ("--rounds", True),
    ("--jobs", True),
    ("--stores", True),
    ("--repeat", True),
    ("--results", True),
    ("--json", True),
)


def cmd_bench(args: argparse.Namespace) -> int:
    if not (_CHECKOUT / "bench" / "__main__.py").is_file():
        raise KYCFaceError("kycface bench needs a source checkout (bench/ is not installed with the package)")
    argv: list[str] = []
    for flag, takes_value in _FORWARDED:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if takes_value and value is not None:
            argv += [flag, str(value)]
        elif not takes_value and value:
            argv.append(flag)
    # A child process: the benchmarks start their own services and pin their own threads.
    return subprocess.run([sys.executable, "-m", "bench", *argv], cwd=_CHECKOUT, check=False).returncode


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="run the engine, pipeline and gallery benchmarks; one table (python -m bench)",
        description="Runs `python -m bench` from the source checkout; see `python -m bench --help`.",
    )
    for flag, takes_value in _FORWARDED:
        if takes_value:
            bench.add_argument(flag, default=None, help="see python -m bench --help")
        else:
            bench.add_argument(flag, action="store_true", help="see python -m bench --help")
    bench.set_defaults(func=cmd_bench)
