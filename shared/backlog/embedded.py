"""The embedded backlog: jobs run in a local process pool, with no broker, Redis or S3 needed.

Each pool process builds the engine once (in the pool initializer) and runs jobs through the
same :func:`shared.jobs.runner.complete` as the Celery workers, so the documents are the same.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from shared.config import Settings
from shared.errors import KYCFaceError, ModelError
from shared.jobs import JobDocument
from shared.jobs.resources import Resources, for_process
from shared.jobs.runner import complete

# This pool process's resources, and why its engine could not be built (kept for the first job:
# an initializer that raises breaks the pool with no message).
_resources: Resources | None = None
_start_error: str | None = None


def _start_process(settings: Settings) -> None:
    global _resources, _start_error
    _resources = for_process(settings)
    try:
        _resources.engine  # noqa: B018 - load and warm the models before the first job
    except KYCFaceError as exc:
        _start_error = exc.message


def _run(job: JobDocument) -> JobDocument:
    if _resources is None or _start_error is not None:
        raise ModelError(_start_error or "the face engine did not start in this process")
    resources = _resources
    # No broker to retry through; boto3 has already retried, so a transient error is the answer.
    return complete(job.running(attempts=1), resources, final_attempt=True)


def run_embedded(jobs: Sequence[JobDocument], settings: Settings, processes: int) -> Iterator[JobDocument]:
    """Run jobs in a pool of ``processes`` processes; yield each terminal document as it is done.

    Args:
        jobs: ``queued`` job documents.
        settings: engine and storage settings for the pool processes.
        processes: pool size (capped at the number of jobs).

    Raises:
        ModelError: the engine could not be built (missing or corrupt models).
    """
    if not jobs:
        return
    size = max(1, min(processes, len(jobs)))
    # onnxruntime threads = cores / pool size, so the processes do not fight over the cores.
    pool_settings = settings.model_copy(update={"worker_concurrency": size})
    # spawn, not fork: the parent may run threads (tqdm's monitor), and forking those is unsafe.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(size, mp_context=context, initializer=_start_process, initargs=(pool_settings,))
    try:
        futures = [pool.submit(_run, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
