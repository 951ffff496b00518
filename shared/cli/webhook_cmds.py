"""``kycface webhooks replay``: send the dead-lettered webhooks again (docs/EVENTS.md)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from shared.config import get_settings
from shared.errors import StorageUnavailableError
from shared.events.replay import replay
from shared.storage.redis_client import redis_client


def cmd_replay(args: argparse.Namespace) -> int:
    settings = get_settings()
    url = settings.resolved_redis_url()
    if url is None:
        raise StorageUnavailableError("no Redis: set KYC_REDIS_URL or KYC_BROKER_URL")
    client = redis_client(url)
    try:
        done = replay(settings, client, args.since, args.tenant)
    finally:
        client.close()
    for letter in done:
        print(f"{letter.entry_id}\t{letter.msg_id}\t{letter.tenant}\t{letter.outcome}")
    totals = Counter(letter.outcome for letter in done)
    print(", ".join(f"{outcome}: {totals[outcome]}" for outcome in ("delivered", "dead", "skipped")), file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    webhooks = sub.add_parser("webhooks", help="dead-lettered webhooks")
    verbs = webhooks.add_subparsers(dest="verb", required=True, metavar="VERB")
    again = verbs.add_parser(
        "replay", help="re-deliver the dead letters of KYC_WEBHOOK_DEAD_STREAM once each, with the same webhook-id"
    )
    again.add_argument("--since", help="a stream id (1733630000000-0) or an ISO 8601 time (UTC when naive)")
    again.add_argument("--tenant", help="only this tenant's dead letters")
    again.set_defaults(func=cmd_replay)
