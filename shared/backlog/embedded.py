"""The embedded backlog: jobs run in a local process pool, with no broker, Redis or S3 needed.

Each pool process builds the engine once (in the pool initializer) and runs jobs through the
same :func:`shared.runner.complete` as the Celery workers, so the documents are the same.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING

from shared.config import Settings
from shared.errors import KYCFaceError, ModelError, StorageUnavailableError
from shared.jobs import JobDocument, JobFailure
from shared.runner import complete
from shared.storage import store_for

if TYPE_CHECKING:
    from shared.engine import KYCDeepFace
    from shared.storage import RoutingStore

# Per pool process, set by _start_process.
_engine: KYCDeepFace | None = None
_images: RoutingStore | None = None
_start_error: str | None = None


def _start_process(settings: Settings) -> None:
    global _engine, _images, _start_error
    from shared.engine import KYCDeepFace

    try:
        _engine = KYCDeepFace(verify_confidence=settings.verify_confidence, settings=settings)
        _engine.warm_up()
    except KYCFaceError as exc:
        # An initializer that raises breaks the pool with no message; keep it for the first job.
        _start_error = exc.message
    _images = store_for(settings)


def _run(job: JobDocument) -> JobDocument:
    if _engine is None or _images is None:
        raise ModelError(_start_error or "the face engine did not start in this process")
    doc = job.running(attempts=1)
    try:
        return complete(doc, _engine, _images)
    except StorageUnavailableError as exc:
        # No broker to retry through; boto3 has already retried, so this is the answer.
        return doc.failed(JobFailure.from_exception(exc))


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
