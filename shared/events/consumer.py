"""The consumer loop: read each source, hand each entry to its handler, count, ack or reject.

An entry is acknowledged only after its jobs exist (or it was rejected, unmatched, malformed),
the settled entries of one read together; a transient error leaves it to be read again. Rejected requests go to the rejects stream with
their reason and never their content (a request may carry features, which are biometric).
Nothing an entry holds stops the loop; it ends when ``stop`` is set or after ``max_batches``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from shared import keys
from shared.config import Settings
from shared.events.bucket import BucketEvents
from shared.events.model import Handled, Outcome, Submit, Validate, handled_error
from shared.events.requests import JobRequests
from shared.events.sources import Entry, HashSource, ListSource, Source, StreamSource

log = logging.getLogger(__name__)
Handler = Callable[[Entry], list[Handled]]


@dataclass(frozen=True)
class Route:
    source: Source
    handler: Handler


def consumer_name() -> str:
    """Unique per process, stable for its life: the stream group's consumer, the processing list."""
    return f"{socket.gethostname()}-{os.getpid()}"


def default_routes(
    client: redis.Redis, settings: Settings, validate: Validate, submit: Submit, consumer: str | None = None
) -> list[Route]:
    """The intake stream and list, and the bucket-event source, as the settings name them."""
    name = consumer or consumer_name()
    requests = JobRequests(client, settings, validate, submit)
    bucket = BucketEvents(client, settings, validate, submit)
    bucket_source: Source
    if settings.events_bucket_source == "stream":
        bucket_source = StreamSource(client, settings.events_bucket_key, settings.events_group, name)
    elif settings.events_bucket_source == "hash":
        bucket_source = HashSource(client, settings.events_bucket_key)
    else:
        bucket_source = ListSource(client, settings.events_bucket_key, name, pop="LEFT")  # MinIO RPUSHes
    return [
        Route(StreamSource(client, settings.events_intake_stream, settings.events_group, name), requests),
        Route(ListSource(client, settings.events_intake_list, name, pop="RIGHT"), requests),
        Route(bucket_source, bucket),
    ]


class Consumer:
    """Runs ``routes`` until stopped.

    Args:
        client: Redis for the counts and the rejects stream.
        routes: each source with its handler (see :func:`default_routes`).
    """

    def __init__(self, client: redis.Redis, settings: Settings, routes: Sequence[Route]) -> None:
        self.client = client
        self.settings = settings
        self.routes = list(routes)
        self.counts: Counter[Outcome] = Counter()

    def run_once(self) -> Counter[Outcome]:
        """One read of every source; what became of the entries read."""
        batch: Counter[Outcome] = Counter()
        found = sum(self._drain(route, 1, batch) for route in self.routes)
        if not found:  # all quiet: wait on one source (a busy list is never held up by a quiet stream)
            self._drain(self.routes[-1], self.settings.events_block_ms, batch)
        if batch:
            try:
                pipe = self.client.pipeline(transaction=False)
                for outcome, n in batch.items():
                    pipe.hincrby(keys.event_counts_key(), outcome.value, n)
                pipe.execute()
            except redis.RedisError:
                pass  # counts are for operators; never worth losing an entry over
        self.counts.update(batch)
        return batch

    def _drain(self, route: Route, block_ms: int, batch: Counter[Outcome]) -> int:
        """Read one batch of ``route`` and handle it; how many entries it held."""
        try:
            entries = route.source.read(self.settings.events_batch, block_ms)
        except redis.RedisError as exc:
            log.warning("cannot read %s (%s); trying again", route.source.name, type(exc).__name__)
            batch[Outcome.RETRY] += 1
            return 0
        settled: list[tuple[Entry, list[Outcome]]] = []
        for entry in entries:
            outcomes = self._handle(route, entry)
            if Outcome.RETRY in outcomes:
                batch.update(outcomes)
            else:
                settled.append((entry, outcomes))
        if settled:
            # One acknowledgement for the read's settled entries: one round trip, not one each.
            # A crash before it leaves them pending; read again, each finds the job it made.
            try:
                route.source.ack_many([entry for entry, _ in settled])
            except redis.RedisError as exc:
                log.warning("cannot acknowledge %d entries of %s (%s)", len(settled), route.source.name,
                            type(exc).__name__)  # fmt: skip
                route.source.release(settled[0][0])
                batch[Outcome.RETRY] += len(settled)
            else:
                for _, outcomes in settled:
                    batch.update(outcomes)
        return len(entries)

    def _handle(self, route: Route, entry: Entry) -> list[Outcome]:
        """Handle one entry: its outcomes, its reject written; acknowledged by the caller unless
        the outcomes hold a retry (then it is released here)."""
        try:
            results = route.handler(entry)
        except Exception as exc:  # a handler bug must not stop the consumer
            results = [handled_error(exc)]
        outcomes = [r.outcome for r in results]
        try:
            if Outcome.RETRY in outcomes:
                route.source.release(entry)
                return outcomes
            for result in results:
                if result.outcome is Outcome.REJECTED:
                    self._reject(entry, result)
                elif result.outcome is Outcome.MALFORMED:
                    log.warning("dropped malformed entry %s of %s: %s", entry.entry_id, entry.source, result.reason)
        except redis.RedisError as exc:
            log.warning("cannot settle entry %s of %s (%s)", entry.entry_id, entry.source, type(exc).__name__)
            route.source.release(entry)
            return [Outcome.RETRY]
        return outcomes

    def _reject(self, entry: Entry, result: Handled) -> None:
        # The reason goes to the producer's rejects stream, not the log: it may quote a reference.
        log.info(
            "rejected entry %s of %s (reason on %s)", entry.entry_id, entry.source, self.settings.events_rejects_stream
        )
        fields: dict[Any, Any] = {"source": entry.source, "entry_id": entry.entry_id, "reason": result.reason}
        self.client.xadd(
            self.settings.events_rejects_stream, fields, maxlen=self.settings.events_rejects_max_len, approximate=True
        )

    def run(self, stop: threading.Event | None = None, max_batches: int | None = None) -> Counter[Outcome]:
        """Read until ``stop`` is set or ``max_batches`` rounds are done; the totals."""
        stop = stop or threading.Event()
        done = 0
        while not stop.is_set() and (max_batches is None or done < max_batches):
            batch = self.run_once()
            if batch[Outcome.RETRY]:
                stop.wait(self.settings.events_block_ms / 1000)  # Redis or the broker is down: back off
            done += 1
        return self.counts
