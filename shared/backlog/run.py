"""Run a backlog end to end: read the manifest, run every job once, write the output directory."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.backlog.embedded import run_embedded
from shared.backlog.manifest import ManifestRow
from shared.backlog.output import BacklogOutput
from shared.backlog.queued import run_queued
from shared.config import Settings
from shared.jobs import JobDocument
from shared.producer import Producer


@dataclass(frozen=True)
class BacklogReport:
    """What a backlog run did.

    Attributes:
        mode: ``embedded`` (local process pool) or ``queued`` (Celery workers).
        summary: path of ``summary.csv``.
        rows: manifest rows (one summary line each).
        jobs: distinct jobs (identical rows share one).
        reused: jobs answered by a document from a previous run in the same directory.
        statuses: number of jobs per final status.
    """

    mode: Literal["embedded", "queued"]
    summary: Path
    rows: int
    jobs: int
    reused: int
    statuses: Counter[str]


def run_backlog(
    rows: Sequence[ManifestRow],
    out_dir: Path,
    settings: Settings,
    on_result: Callable[[JobDocument], None] | None = None,
    processes: int | None = None,
    timeout_s: float | None = None,
) -> BacklogReport:
    """Answer every row of a manifest as a ``verify`` job.

    Re-running on the same output directory is idempotent: jobs already answered there are not
    run again, and job ids are stable (given in the manifest or derived from the row's inputs).
    ``summary.csv`` is written even when the run is interrupted, with the unfinished jobs'
    status.

    Args:
        rows: the manifest (see :func:`shared.backlog.manifest.read_manifest`).
        out_dir: receives ``<job_id>.json`` per job and ``summary.csv`` (manifest order).
        settings: with ``broker_url`` set the jobs go to the Celery workers; without, they run
            in a local process pool.
        on_result: called with each job's terminal document as it arrives (e.g. a progress bar).
        processes: embedded pool size (default: ``settings.worker_processes()``, the cores).
        timeout_s: queued mode only: stop waiting after this long and raise ``TimeoutError``.

    Returns:
        A report of the run.

    Raises:
        JobError: queued mode: a job id already used for different work.
        ModelError: embedded mode could not load the models.
        TimeoutError: queued mode: jobs still pending after ``timeout_s``.
    """
    output = BacklogOutput(out_dir)
    jobs = list({row.job.job_id: row.job for row in rows}.values())
    done: dict[str, JobDocument] = {}
    for job in jobs:
        previous = output.finished(job)
        if previous is not None:
            done[job.job_id] = previous
            if on_result is not None:
                on_result(previous)
    reused = len(done)
    todo = [job for job in jobs if job.job_id not in done]
    mode: Literal["embedded", "queued"] = "queued" if settings.broker_url else "embedded"
    try:
        for doc in _results(mode, todo, settings, processes, timeout_s):
            output.write_document(doc)
            done[doc.job_id] = doc
            if on_result is not None:
                on_result(doc)
    finally:
        # One line per manifest row even after an interruption: unfinished jobs show "queued".
        summary = output.write_summary([done.get(row.job.job_id, row.job) for row in rows])
    statuses = Counter(doc.status.value for doc in done.values())
    return BacklogReport(mode, summary, len(rows), len(jobs), reused, statuses)


def _results(
    mode: Literal["embedded", "queued"],
    todo: list[JobDocument],
    settings: Settings,
    processes: int | None,
    timeout_s: float | None,
) -> Iterator[JobDocument]:
    if mode == "embedded":
        yield from run_embedded(todo, settings, processes or settings.worker_processes())
        return
    if not todo:
        return
    producer = Producer(settings)
    try:
        yield from run_queued(todo, producer, timeout_s=timeout_s)
    finally:
        producer.close()
