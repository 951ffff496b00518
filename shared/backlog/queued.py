"""The queued backlog: jobs go to the Celery workers through the producer; results are polled."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence

from shared.errors import JobError
from shared.jobs import JobDocument
from shared.producer import Producer

# Jobs finish roughly in submission order, so each poll round looks at the oldest pending ones
# only: a 100k-job backlog costs this many GETs per round, not 100k.
POLL_WINDOW = 1000


def run_queued(
    jobs: Sequence[JobDocument],
    producer: Producer,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> Iterator[JobDocument]:
    """Submit every job (idempotently, under its own id) and yield terminal documents as they land.

    Args:
        jobs: ``queued`` job documents; their ids are the idempotency keys.
        producer: where to submit and poll.
        poll_s: pause between poll rounds.
        timeout_s: give up waiting after this long (None: wait for every job).

    Raises:
        TimeoutError: jobs still pending after ``timeout_s``.
        JobError: a job id was used for different work, or a job expired before it was read.
    """
    for job in jobs:
        producer.submit(job.kind, job.inputs, job.job_id)
    pending = dict.fromkeys(job.job_id for job in jobs)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while pending:
        for job_id in list(itertools.islice(pending, POLL_WINDOW)):
            doc = producer.get_job(job_id)
            if doc is None:
                raise JobError(f"job {job_id} disappeared before it finished (expired? see KYC_JOB_TTL_S)")
            if doc.status.terminal:
                del pending[job_id]
                yield doc
        if not pending:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{len(pending)} jobs still pending after {timeout_s}s")
        time.sleep(poll_s)
