"""``python -m shared.events``: run the intake and bucket-event consumer until SIGTERM or Ctrl-C.

Reads ``KYC_EVENTS_*`` and ``KYC_EVENT_RULES`` (see docs/EVENTS.md); submits through the producer.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from shared.config import get_settings
from shared.events.consumer import Consumer, default_routes
from shared.events.wiring import producer_submit, validate
from shared.jobs.store import redis_client
from shared.producer import Producer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.events", description=__doc__)
    parser.add_argument("--max-batches", type=int, default=None, help="stop after this many reads of every source")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    producer = Producer(settings)
    url = settings.resolved_redis_url()
    if url is None:
        parser.error("no Redis: set KYC_REDIS_URL or KYC_BROKER_URL")
    client = redis_client(url)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    consumer = Consumer(client, settings, default_routes(client, settings, validate, producer_submit(producer)))
    totals = consumer.run(stop, args.max_batches)
    logging.getLogger(__name__).info("stopped: %s", {o.value: n for o, n in totals.items()})
    producer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
