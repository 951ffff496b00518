"""``kycface events``: the intake and bucket-event consumer (docs/EVENTS.md), until SIGTERM."""

from __future__ import annotations

import argparse
import logging

from shared import preflight
from shared.config import Settings, get_settings
from shared.events.service import run
from shared.exits import StartRefused


def check(settings: Settings) -> None:
    """Refuse to start without Redis, a sealing key (match requests carry sealed features, which
    a key of its own could not open) or an answering Redis.

    Raises:
        StartRefused: with the reason and the exit status.
    """
    url = settings.resolved_redis_url()
    if not url:
        raise StartRefused("kycdeepface events: no Redis: set KYC_REDIS_URL or KYC_BROKER_URL")
    preflight.require_sealing_key(settings, "events")
    preflight.require_redis(url, "events")


def cmd_events(args: argparse.Namespace) -> int:
    settings = get_settings()
    check(settings)
    # A service logs what it does, -v or not: it has no other output.
    logging.getLogger("shared.events").setLevel(logging.INFO)
    run(settings, args.max_batches)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    events = sub.add_parser("events", help="turn intake requests and bucket notifications into jobs (a service)")
    events.add_argument("--max-batches", type=int, default=None, help="stop after this many reads of every source")
    events.set_defaults(func=cmd_events)
