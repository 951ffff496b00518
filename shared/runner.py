"""Run one job: fetch its images, call the engine, return the answer. No queue code here.

The Celery tasks, the embedded backlog and tests all go through :func:`complete` (or
:func:`run_job`), so a job's answer does not depend on how it was scheduled.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from shared.errors import JobError, KYCFaceError, StorageUnavailableError
from shared.gallery import jobs as gallery_jobs
from shared.jobs.model import JobDocument, JobFailure, JobKind, validate_inputs
from shared.schemas import ErrorResult, to_dict
from shared.storage.base import ImageStore
from shared.verification import decide

if TYPE_CHECKING:
    from shared.engine import KYCDeepFace

log = logging.getLogger(__name__)


class _Stopwatch:
    """Accumulates seconds per stage into ``timings`` (fetch_s, compute_s)."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    def fetch(self, store: ImageStore, ref: str) -> bytes:
        start = time.perf_counter()
        try:
            return store.get(ref)
        finally:
            self._add("fetch_s", start)

    def compute(self, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._add("compute_s", start)

    def _add(self, stage: str, start: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.perf_counter() - start, 6)


def run_job(
    kind: JobKind | str,
    inputs: dict[str, Any],
    engine: KYCDeepFace,
    store: ImageStore,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Execute one job and return its answer as a JSON-ready dict.

    An unusable image is an answer (``INVALID_IMAGE``, ``NO_FACE``...), not an exception.

    Args:
        kind: ``faces`` (``image``), ``verify`` (``selfie``, ``document``), ``match``
            (``features1``, ``features2``), or a gallery kind (``enroll``, ``search``, ``delete``:
            see :mod:`shared.gallery.jobs`).
        inputs: the job's inputs, as in :data:`shared.jobs.JOB_INPUTS`.
        engine: the face engine.
        store: where image references are read from.
        timings: if given, receives seconds spent per stage (``fetch_s``, ``compute_s``).

    Returns:
        ``faces``: the ``get_faces`` document; ``verify``: a
        :class:`~shared.verification.VerificationResult`; ``match``: the ``match_faces`` document;
        gallery kinds: the gallery's result document.

    Raises:
        StorageError: an image could not be read (``StorageUnavailableError`` is transient).
        JobError: bad inputs, or the engine answered ERROR (e.g. malformed features).
    """
    job_kind = JobKind(kind)
    clean = validate_inputs(job_kind, inputs)
    watch = _Stopwatch(timings if timings is not None else {})
    if job_kind is JobKind.FACES:
        faces = watch.compute(engine.get_faces, watch.fetch(store, clean["image"]))
        return _answer(faces)
    if job_kind is JobKind.VERIFY:
        selfie_bytes = watch.fetch(store, clean["selfie"])
        document_bytes = watch.fetch(store, clean["document"])
        selfie = watch.compute(engine.selfie_faces, selfie_bytes)
        document = watch.compute(engine.document_faces, document_bytes)
        return to_dict(watch.compute(decide, selfie, document, engine.match_faces, engine.enforced_liveness))
    if job_kind is JobKind.MATCH:
        matched = watch.compute(engine.match_faces, clean["features1"], clean["features2"])
        return _answer(matched)
    return gallery_jobs.run(job_kind.value, clean, engine, lambda ref: watch.fetch(store, ref), watch.compute)


def _answer(result: Any) -> dict[str, Any]:
    if isinstance(result, ErrorResult):
        raise JobError(result.message)
    return to_dict(result)


def complete(
    doc: JobDocument,
    engine: KYCDeepFace,
    store: ImageStore,
    reraise: tuple[type[BaseException], ...] = (),
) -> JobDocument:
    """Run a job document and return its terminal document.

    Args:
        doc: the job (its kind and inputs).
        engine: the face engine.
        store: where image references are read from.
        reraise: exception types to let through (e.g. a worker's soft time limit).

    Returns:
        ``succeeded`` with the answer, or ``failed`` with the error as plain data. Never raises
        for a bad image, a missing object or a bug in the engine.

    Raises:
        StorageUnavailableError: transient; the caller decides whether to retry.
    """
    timings = dict(doc.timings)
    try:
        result = run_job(doc.kind, doc.inputs, engine, store, timings)
    except StorageUnavailableError:
        raise
    except reraise:
        raise
    except KYCFaceError as exc:
        log.info("job %s failed: %s", doc.job_id, exc.message)
        return doc.failed(JobFailure.from_exception(exc), timings)
    except Exception as exc:
        log.exception("job %s failed unexpectedly", doc.job_id)
        return doc.failed(JobFailure.from_exception(exc), timings)
    return doc.succeeded(result, timings)
