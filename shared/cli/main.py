"""``kycface`` entry point. Each command group registers its sub-commands from its own module.

Exit codes (:mod:`shared.exits`, docs/OPERATIONS.md "Exit codes"): 0 when a result was produced
(even INVALID_IMAGE or a failed job), 2 on usage errors, 1 when a command could not do what was
asked (no such job, a bad manifest, a timeout), 78 for settings that cannot work (a typo in a
``KYC_`` name, an invalid value; a service's missing key, model or broker), 69 when a service's
broker or Redis does not answer at start, 70 for an internal failure. Each with one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from pydantic import ValidationError

from shared import logs
from shared.cli import (
    bench_cmds,
    celery_cmds,
    engine_cmds,
    events_cmds,
    features_cmds,
    gallery_cmds,
    key_cmds,
    pipeline_cmds,
    webhook_cmds,
)
from shared.config import get_settings
from shared.errors import KYCFaceError, SettingsError
from shared.exits import EX_CONFIG, EX_FAILURE, EX_SOFTWARE, StartRefused, one_line, settings_message

GROUPS = (
    engine_cmds,
    pipeline_cmds,
    celery_cmds,
    gallery_cmds,
    bench_cmds,
    key_cmds,
    events_cmds,
    features_cmds,
    webhook_cmds,
)


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
        return _run(args)
    except BrokenPipeError:  # `kycface faces *.jpg | head` is fine
        return 0
    except Exception as exc:  # a bug: still one line and a status a supervisor reads as a failure
        if args.verbose:
            traceback.print_exc()
        return _fail(f"internal error ({type(exc).__name__}: {exc}); -v prints the traceback", EX_SOFTWARE)


def _run(args: argparse.Namespace) -> int:
    try:
        logs.apply(get_settings())
        return int(args.func(args) or 0)
    except StartRefused as refusal:
        return _fail(refusal.message, refusal.status)
    except SettingsError as exc:
        return _fail(settings_message(exc), EX_CONFIG)
    except ValidationError as exc:
        if exc.title != "Settings":  # a model of ours let pydantic's error escape: a bug
            raise
        return _fail(settings_message(exc), EX_CONFIG)
    except KYCFaceError as exc:
        return _fail(exc.message, EX_FAILURE)


def _fail(message: str, status: int) -> int:
    print(f"kycface: {one_line(message)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
