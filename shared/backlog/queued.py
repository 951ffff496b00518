"""The queued backlog: jobs go to the Celery workers through the producer; results are polled."""

from __future__ import annotations

import time
from collections.abc import Sequence

from shared.errors import JobError
from shared.jobs import JobDocument
from shared.producer import Producer

# The fewest pending jobs one poll round reads.
MIN_POLL_SPAN = 64


def next_poll_span(span: int, polled: int, done: int) -> int:
    """How many of the oldest pending jobs the next poll round reads, after one that read
    ``polled`` of them (``span`` asked for) and found ``done`` finished: twice as many as finished,
    at least :data:`MIN_POLL_SPAN`, or twice ``span`` when every one read had finished."""
    return 2 * span if done == polled else max(MIN_POLL_SPAN, 2 * done)


class QueuedRunner:
    """Runs a backlog's jobs on the Celery workers.

    Args:
        producer: where to submit and poll.
        poll_s: the shortest time between two waiting poll rounds (time spent submitting counts).
        result_ttl_s: once read, a terminal document's Redis TTL is cut to this (None: it keeps
            ``KYC_JOB_TTL_S``). The backlog has it on disk, so a short value keeps Redis flat
            over a manifest of any length.
        chunk: jobs per broker message (default ``KYC_BACKLOG_CHUNK``).
    """

    def __init__(
        self, producer: Producer, poll_s: float = 0.5, result_ttl_s: int | None = None, chunk: int | None = None
    ) -> None:
        self.producer = producer
        self.poll_s = poll_s
        self.result_ttl_s = result_ttl_s
        self.chunk = chunk if chunk is not None else producer.settings.backlog_chunk
        self._span = MIN_POLL_SPAN
        self._polled_at = 0.0

    def start_many(self, jobs: Sequence[JobDocument]) -> list[JobDocument | None]:
        """Submit the jobs under their own ids, stored in pipelined round trips and sent ``chunk``
        per message; per job, its document if it is already terminal (an earlier run's).

        Raises:
            JobError: an id was used for different work (none of the jobs is then submitted).
            StorageUnavailableError: Redis or the broker is down (the jobs not sent were discarded).
        """
        stored = self.producer.store_many(jobs)
        self.producer.send([doc for doc, created in stored if created], per_message=self.chunk)
        return [doc if doc.status.terminal else None for doc, _ in stored]

    def poll(self, job_ids: Sequence[str], wait: bool = True) -> list[JobDocument]:
        """The terminal documents among the oldest of ``job_ids``, read in pipelined MGETs; with
        ``wait``, no sooner than ``poll_s`` after the last read (a window that spent that long
        submitting reads at once).

        The workers take a queue's jobs in order and a window hands its answers out in row
        order, so only the oldest pending jobs are read: as many as finished in the last round,
        twice over (at least :data:`MIN_POLL_SPAN`), or twice as many as last time when all of
        them had finished. A full window is then not read whole ten times a second.

        Raises:
            JobError: a job expired before it was read.
        """
        if wait:
            time.sleep(max(0.0, self._polled_at + self.poll_s - time.monotonic()))
        self._polled_at = time.monotonic()
        polled = job_ids[: self._span]
        done, unknown = self.producer.jobs.finished_many(polled)
        if unknown:
            raise JobError(f"job {unknown[0]} disappeared before it finished (expired? see KYC_JOB_TTL_S)")
        self._span = next_poll_span(self._span, len(polled), len(done))
        if done and self.result_ttl_s is not None:
            self.producer.jobs.expire_soon(done, self.result_ttl_s)
        return done

    def close(self) -> None:
        self.producer.close()
