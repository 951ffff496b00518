"""The queued backlog: jobs go to the Celery workers through the producer; results are polled."""

from __future__ import annotations

import time
from collections.abc import Sequence

from shared.errors import JobError
from shared.jobs import JobDocument
from shared.producer import Producer


class QueuedRunner:
    """Runs a backlog's jobs on the Celery workers.

    Args:
        producer: where to submit and poll.
        poll_s: pause before each poll round.
        result_ttl_s: once read, a terminal document's Redis TTL is cut to this (None: it keeps
            ``KYC_JOB_TTL_S``). The backlog has it on disk, so a short value keeps Redis flat
            over a manifest of any length.
    """

    def __init__(self, producer: Producer, poll_s: float = 0.5, result_ttl_s: int | None = None) -> None:
        self.producer = producer
        self.poll_s = poll_s
        self.result_ttl_s = result_ttl_s

    def start(self, job: JobDocument) -> JobDocument | None:
        """Submit the job under its own id; its document if it is already terminal (an earlier run's).

        Raises:
            JobError: the id was used for different work.
        """
        stored = self.producer.submit(job.kind, job.run_inputs(), job.job_id)  # probes held beside inputs
        return stored if stored.status.terminal else None

    def poll(self, job_ids: Sequence[str]) -> list[JobDocument]:
        """The terminal documents among ``job_ids``, read in pipelined MGETs after a pause.

        Raises:
            JobError: a job expired before it was read.
        """
        time.sleep(self.poll_s)
        done = []
        for job_id, doc in zip(job_ids, self.producer.jobs.get_many(job_ids), strict=True):
            if doc is None:
                raise JobError(f"job {job_id} disappeared before it finished (expired? see KYC_JOB_TTL_S)")
            if doc.status.terminal:
                done.append(doc)
        if done and self.result_ttl_s is not None:
            self.producer.jobs.expire_soon([doc.job_id for doc in done], self.result_ttl_s)
        return done

    def close(self) -> None:
        self.producer.close()
