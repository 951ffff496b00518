"""Run a backlog end to end: stream the manifest, run every job once, write the output directory."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.backlog.embedded import EmbeddedRunner
from shared.backlog.manifest import REQUIRED_COLUMNS, ManifestRow
from shared.backlog.output import BacklogOutput
from shared.backlog.queued import QueuedRunner
from shared.backlog.window import Runner, run_window
from shared.config import Settings
from shared.jobs import JobDocument
from shared.producer import Producer


@dataclass(frozen=True)
class BacklogReport:
    """What a backlog run did.

    Attributes:
        mode: ``embedded`` (local process pool) or ``queued`` (Celery workers).
        summary: path of ``summary.csv``.
        rows: manifest rows in the summary (one line each).
        resumed: rows a previous, interrupted run had already written to the summary.
        jobs: jobs answered in this run (identical rows in one window share one).
        reused: of those, jobs answered by an earlier run (its document in the directory, or a
            job already finished on the workers) rather than run again.
        statuses: number of jobs per final status, in this run.
    """

    mode: Literal["embedded", "queued"]
    summary: Path
    rows: int
    resumed: int
    jobs: int
    reused: int
    statuses: Counter[str]


def run_backlog(
    rows: Iterable[ManifestRow],
    out_dir: Path,
    settings: Settings,
    manifest: str = "",
    on_result: Callable[[JobDocument], None] | None = None,
    processes: int | None = None,
    window: int | None = None,
    timeout_s: float | None = None,
    runner: Runner | None = None,
) -> BacklogReport:
    """Answer every row of a manifest as a ``verify`` job, a bounded window at a time.

    Resumable: an interrupted run leaves ``summary.csv`` and its state; the next run into the same
    directory continues after the last row written, and any job answered since (its document
    in the directory, or finished on the workers) is not run again. Job ids are stable (given in
    the manifest or derived from the row's inputs).

    Args:
        rows: the manifest (see :func:`shared.backlog.manifest.iter_manifest`), read lazily.
        out_dir: receives ``<job_id>.json`` per job and ``summary.csv`` (manifest order).
        settings: with ``broker_url`` set the jobs go to the Celery workers; without, they run
            in a local process pool.
        manifest: the manifest's name, recorded in the state so a resume is of the same manifest.
        on_result: called with each job's terminal document as it arrives (e.g. a progress bar).
        processes: embedded pool size (default: ``settings.worker_processes()``, the cores).
        window: rows in flight at most (default: ``KYC_BACKLOG_WINDOW``).
        timeout_s: stop waiting after this long and raise ``TimeoutError``.
        runner: where the jobs run (default: the workers or a local pool, as ``settings`` say).

    Returns:
        A report of the run.

    Raises:
        JobError: a job id already used for different work.
        ModelError: embedded mode could not load the models.
        TimeoutError: jobs still pending after ``timeout_s``.
    """
    source = iter(rows)
    first = next(source, None)
    columns = list(first.columns) if first is not None else list(REQUIRED_COLUMNS)
    output = BacklogOutput(out_dir)
    resumed = output.open_summary(manifest, columns)
    todo = itertools.islice(itertools.chain([first] if first is not None else [], source), resumed, None)
    mode: Literal["embedded", "queued"] = "queued" if settings.broker_url else "embedded"
    statuses: Counter[str] = Counter()
    counts = Counter[str]()
    from_files: set[str] = set()

    def known(job: JobDocument) -> JobDocument | None:
        doc = output.finished(job)
        if doc is not None:
            from_files.add(job.job_id)
        return doc

    def arrived(doc: JobDocument, earlier: bool) -> None:
        if doc.job_id in from_files:
            from_files.discard(doc.job_id)
        else:
            output.write_document(doc)
        statuses[doc.status.value] += 1
        counts["jobs"] += 1
        counts["reused"] += earlier
        if on_result is not None:
            on_result(doc)

    runner = runner or _runner(mode, settings, processes)
    try:
        for row, doc in run_window(todo, runner, window or settings.backlog_window, known, arrived, timeout_s):
            output.append(row.columns, doc)
            counts["rows"] += 1
            if counts["rows"] % 1000 == 0:
                output.checkpoint()
    finally:
        runner.close()
        output.close()
    return BacklogReport(
        mode, output.summary_path, resumed + counts["rows"], resumed, counts["jobs"], counts["reused"], statuses
    )


def _runner(mode: Literal["embedded", "queued"], settings: Settings, processes: int | None) -> Runner:
    if mode == "embedded":
        return EmbeddedRunner(settings, processes or settings.worker_processes())
    return QueuedRunner(Producer(settings), result_ttl_s=settings.backlog_result_ttl_s)
