"""The embedded backlog: jobs run in a local process pool, with no broker, Redis or S3 needed.

Each pool process builds the engine once (in the pool initializer) and runs jobs through the
same :func:`shared.jobs.runner.complete` as the Celery workers, so the documents are the same.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for

from shared.config import Settings
from shared.errors import KYCFaceError, ModelError
from shared.jobs import JobDocument
from shared.jobs.resources import Resources
from shared.jobs.runner import complete
from shared.storage import store_for

# This pool process's resources, and why its engine could not be built (kept for the first job:
# an initializer that raises breaks the pool with no message).
_resources: Resources | None = None
_start_error: str | None = None


def _start_process(settings: Settings) -> None:
    global _resources, _start_error
    # The manifest's author names its own files here, and no job document crosses a queue.
    _resources = Resources(settings, images=store_for(settings, any_local_path=True))
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


class EmbeddedRunner:
    """Runs a backlog's jobs in a pool of ``processes`` local processes (started on the first job).

    Args:
        settings: engine and storage settings for the pool processes.
        processes: pool size.
        poll_s: longest wait for a job to finish in one poll.
    """

    def __init__(self, settings: Settings, processes: int, poll_s: float = 0.5) -> None:
        size = max(1, processes)
        # onnxruntime threads = cores / pool size, so the processes do not fight over the cores.
        self.settings = settings.model_copy(update={"worker_concurrency": size})
        self.size = size
        self.poll_s = poll_s
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[str, Future[JobDocument]] = {}

    def start_many(self, jobs: Sequence[JobDocument]) -> list[JobDocument | None]:
        """Hand the jobs to the pool; never terminal at once."""
        if self._pool is None:
            # spawn, not fork: the parent may run threads (tqdm's monitor), and forking those is unsafe.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self.size, mp_context=context, initializer=_start_process, initargs=(self.settings,)
            )
        for job in jobs:
            self._futures[job.job_id] = self._pool.submit(_run, job)
        return [None] * len(jobs)

    def poll(self, job_ids: Sequence[str], wait: bool = True) -> list[JobDocument]:
        """The documents of the jobs among ``job_ids`` that finished; with ``wait``, waiting up to
        ``poll_s`` for one.

        Raises:
            ModelError: the engine could not be built (missing or corrupt models).
        """
        futures = [self._futures[j] for j in job_ids]
        done, _ = wait_for(futures, timeout=self.poll_s if wait else 0, return_when=FIRST_COMPLETED)
        docs = [f.result() for f in futures if f in done]
        for doc in docs:
            del self._futures[doc.job_id]
        return docs

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
