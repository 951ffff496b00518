"""``kycface`` entry point. Each command group registers its sub-commands from its own module.

Exit codes: 0 when a result was produced (even INVALID_IMAGE or a failed job), 2 on usage errors,
1 when the command itself could not run (missing model, unreachable service).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from shared import logs
from shared.cli import bench_cmds, engine_cmds, events_cmds, gallery_cmds, key_cmds, pipeline_cmds, webhook_cmds
from shared.config import get_settings
from shared.errors import KYCFaceError

GROUPS = (engine_cmds, pipeline_cmds, gallery_cmds, bench_cmds, key_cmds, events_cmds, webhook_cmds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kycface", description="KYC face matching")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        logs.apply(get_settings())
        return int(args.func(args) or 0)
    except KYCFaceError as exc:
        print(f"kycface: {exc.message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `kycface faces *.jpg | head` is fine
        return 0


if __name__ == "__main__":
    sys.exit(main())
