"""The events service: the intake and bucket-event consumer, run until SIGTERM or Ctrl-C.

``kycface events`` (the compose ``events`` service) and ``python -m shared.events`` run it. It
reads ``KYC_EVENTS_*`` and ``KYC_EVENT_RULES`` (docs/EVENTS.md) and submits through the producer.
"""

from __future__ import annotations

import logging
import signal
import threading

from shared import features
from shared.config import Settings
from shared.errors import StorageUnavailableError
from shared.events.consumer import Consumer, default_routes
from shared.events.wiring import producer_submit, validator
from shared.jobs.store import redis_client
from shared.producer import Producer

log = logging.getLogger(__name__)


def run(settings: Settings, max_batches: int | None = None) -> int:
    """Consume until a signal (or ``max_batches`` reads of every source); returns entries handled.

    Raises:
        StorageUnavailableError: no Redis configured.
        SettingsError: no sealing key: every match request would be refused as not sealed here.
    """
    url = settings.resolved_redis_url()
    if url is None:
        raise StorageUnavailableError("no Redis: set KYC_REDIS_URL or KYC_BROKER_URL")
    features.require_key(settings, "events")
    producer = Producer(settings)
    client = redis_client(url, settings)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        validate = validator(settings, producer.images.validate)
        consumer = Consumer(client, settings, default_routes(client, settings, validate, producer_submit(producer)))
        totals = consumer.run(stop, max_batches)
    finally:
        producer.close()
        client.close()
    log.info("stopped: %s", {o.value: n for o, n in totals.items()})
    return sum(totals.values())
