"""A bounded window of jobs in flight: the backpressure that keeps a long backlog's footprint flat.

At most ``size`` manifest rows are submitted and not yet answered at any time, so Redis holds
at most ``size`` queued jobs and this process at most ``size`` rows, whatever the manifest's
length. Answers come out in manifest order; a slow row holds back the rows after it (and new
submissions) until it is answered, which is what bounds the window.

Freed slots are refilled a quarter of the window at a time, with a read of the answers (no wait)
in between: refilled whole, a window whose submissions take about as long as the workers' answers
ran in lock-step (submit ``size`` rows, find all answered, submit ``size`` again), answers coming
in bursts of ``size``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from shared.backlog.manifest import ManifestRow
from shared.errors import JobError
from shared.jobs import JobDocument


class Runner(Protocol):
    """Where a window's jobs run: the Celery workers or a local process pool."""

    def start_many(self, jobs: Sequence[JobDocument]) -> list[JobDocument | None]:
        """Start the jobs; per job, its terminal document if it already has one."""
        ...

    def poll(self, job_ids: Sequence[str], wait: bool = True) -> list[JobDocument]:
        """The terminal documents among ``job_ids``; with ``wait``, may wait a little for them
        (without, the window has rows to submit meanwhile)."""
        ...

    def close(self) -> None: ...


def run_window(
    rows: Iterable[ManifestRow],
    runner: Runner,
    size: int,
    known: Callable[[JobDocument], JobDocument | None] = lambda _job: None,
    on_result: Callable[[JobDocument, bool], None] | None = None,
    timeout_s: float | None = None,
) -> Iterator[tuple[ManifestRow, JobDocument]]:
    """Run every row's job with at most ``size`` rows in flight; yield (row, answer) in row order.

    Identical jobs in the window share one submission.

    Args:
        rows: the rows, read lazily (one at a time, as the window has room).
        runner: starts and polls the jobs.
        size: rows in flight at most.
        known: an answer already at hand for a job (e.g. an earlier run's document), if any.
        on_result: called once per job as its answer arrives, with whether it is an earlier
            run's (known, or already terminal when submitted).
        timeout_s: give up after this long.

    Raises:
        TimeoutError: rows still pending after ``timeout_s``.
        JobError: one job id given to two different pieces of work within the window.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    source = iter(rows)
    window: deque[ManifestRow] = deque()
    # job id -> (the job, its answer or None while pending, rows of the window that share it)
    jobs: dict[str, tuple[JobDocument, JobDocument | None, int]] = {}
    exhausted = False
    refill = max(1, size // 4)
    while True:
        starting: list[JobDocument] = []
        while not exhausted and len(window) < size and len(starting) < refill:
            row = next(source, None)
            if row is None:
                exhausted = True
                break
            window.append(row)
            job_id = row.job.job_id
            if job_id in jobs:
                job, answer, refs = jobs[job_id]
                if not job.same_request(row.job):
                    raise JobError(f"line {row.line}: job id {job_id!r} is already used for other images")
                jobs[job_id] = (job, answer, refs + 1)
                continue
            answer = known(row.job)
            jobs[job_id] = (row.job, answer, 1)
            if answer is None:
                starting.append(row.job)
            elif on_result is not None:
                on_result(answer, True)
        for job, answer in zip(starting, runner.start_many(starting) if starting else [], strict=True):
            if answer is not None:
                jobs[job.job_id] = (job, answer, jobs[job.job_id][2])
                if on_result is not None:
                    on_result(answer, True)
        if not window:
            return
        pending = [job_id for job_id, (_, answer, _) in jobs.items() if answer is None]
        if pending:
            room = not exhausted and len(window) < size  # more rows to submit: read, do not wait
            for doc in runner.poll(pending, wait=not room):
                job, _, refs = jobs[doc.job_id]
                jobs[doc.job_id] = (job, doc, refs)
                if on_result is not None:
                    on_result(doc, False)
        while window:
            job, answer, refs = jobs[window[0].job.job_id]
            if answer is None:
                break
            row = window.popleft()
            if refs == 1:
                del jobs[job.job_id]
            else:
                jobs[job.job_id] = (job, answer, refs - 1)
            yield row, answer
        if window and deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{len(window)} rows still pending after {timeout_s}s")
