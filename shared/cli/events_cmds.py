"""``kycface events``: the intake and bucket-event consumer (docs/EVENTS.md), until SIGTERM."""

from __future__ import annotations

import argparse
import logging

from shared.config import get_settings
from shared.events.service import run


def cmd_events(args: argparse.Namespace) -> int:
    # A service logs what it does, -v or not: it has no other output.
    logging.getLogger("shared.events").setLevel(logging.INFO)
    run(get_settings(), args.max_batches)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    events = sub.add_parser("events", help="turn intake requests and bucket notifications into jobs (a service)")
    events.add_argument("--max-batches", type=int, default=None, help="stop after this many reads of every source")
    events.set_defaults(func=cmd_events)
