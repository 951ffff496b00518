"""1:1 kinds: ``faces`` (every face of an image), ``verify`` (selfie against document), ``match``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pydantic import BaseModel

from shared.features import Features
from shared.jobs.context import JobContext
from shared.jobs.inputs import FeaturesInput, Flag, ImageRef
from shared.jobs.registry import HEAVY_QUEUE, LIGHT_QUEUE, JobInputs, batch_of, job_kind
from shared.schemas import FacesResult, InvalidImageResult, MatchResult, QualityLevel
from shared.verification import VerificationResult, decide

if TYPE_CHECKING:  # the engine (onnxruntime, OpenCV) stays out of the API's process
    from shared.engine import Role


class FacesInputs(JobInputs):
    image: ImageRef


@job_kind("faces", queue=HEAVY_QUEUE, help="every face of one image")
def faces(inputs: FacesInputs, job: JobContext) -> FacesResult | InvalidImageResult:
    return job.compute(job.engine.describe, job.fetch(inputs.image))


class VerifyInputs(JobInputs):
    selfie: ImageRef
    document: ImageRef
    include_features: Flag = False


def _stored(result: FacesResult | InvalidImageResult, include_features: bool) -> FacesResult | InvalidImageResult:
    return result if include_features or not isinstance(result, FacesResult) else result.without_features()


@job_kind("verify", queue=HEAVY_QUEUE, help="a selfie against an ID document")
def verify(inputs: VerifyInputs, job: JobContext) -> VerificationResult:
    selfie_bytes, document_bytes = job.fetch(inputs.selfie), job.fetch(inputs.document)
    selfie = job.compute(job.engine.selfie_faces, selfie_bytes)
    document = job.compute(job.engine.document_faces, document_bytes)
    decided = job.compute(decide, selfie, document, job.engine.compare, job.engine.enforced_liveness)
    return _as_stored(decided, inputs.include_features)


def _as_stored(decided: VerificationResult, include_features: bool) -> VerificationResult:
    """A verify answer is a decision: its templates stay out of the stored result unless asked for."""
    return decided.model_copy(
        update={
            "selfie": _stored(decided.selfie, include_features),
            "document": _stored(decided.document, include_features),
        }
    )


def _fetch(job: JobContext, ref: ImageRef) -> bytes | Exception:
    try:
        return job.fetch(ref)
    except Exception as exc:  # this job's failure, not the batch's
        return exc


def _describe_all(
    jobs: list[JobContext], images: list[tuple[bytes, QualityLevel | None, bool]], roles: list[Role] | None = None
) -> list[BaseModel | Exception]:
    """``engine.describe_many``, its time shared out as ``compute_s`` between the jobs."""
    start = time.perf_counter()
    described: list[BaseModel | Exception] = list(jobs[0].engine.describe_many(images, roles)) if images else []
    for job in jobs:
        job.add("compute_s", (time.perf_counter() - start) / len(jobs))
    return described


@batch_of("faces")
def faces_batch(inputs: list[FacesInputs], jobs: list[JobContext]) -> list[BaseModel | Exception]:
    fetched = [_fetch(job, i.image) for i, job in zip(inputs, jobs, strict=True)]
    described = iter(_describe_all(jobs, [(f, None, False) for f in fetched if isinstance(f, bytes)]))
    return [next(described) if isinstance(f, bytes) else f for f in fetched]


@batch_of("verify")
def verify_batch(inputs: list[VerifyInputs], jobs: list[JobContext]) -> list[BaseModel | Exception]:
    engine, settings = jobs[0].engine, jobs[0].settings
    fetched = [(_fetch(job, i.selfie), _fetch(job, i.document)) for i, job in zip(inputs, jobs, strict=True)]
    live = engine.liveness is not None
    images: list[tuple[bytes, QualityLevel | None, bool]] = []
    roles: list[Role] = []
    for selfie, document in fetched:
        if isinstance(selfie, bytes) and isinstance(document, bytes):
            images += [(selfie, settings.quality_selfie, live), (document, settings.quality_document, False)]
            roles += ["selfie", "document"]
    described = iter(_describe_all(jobs, images, roles))
    answers: list[BaseModel | Exception] = []
    for job, wanted, (selfie_bytes, document_bytes) in zip(jobs, inputs, fetched, strict=True):
        if isinstance(selfie_bytes, Exception) or isinstance(document_bytes, Exception):
            answers.append(selfie_bytes if isinstance(selfie_bytes, Exception) else document_bytes)  # type: ignore[arg-type]
            continue
        selfie_faces, document_faces = next(described), next(described)
        failed = next((x for x in (selfie_faces, document_faces) if isinstance(x, Exception)), None)
        try:
            answers.append(
                failed
                or _as_stored(
                    job.compute(decide, selfie_faces, document_faces, engine.compare, engine.enforced_liveness),
                    wanted.include_features,
                )
            )
        except Exception as exc:
            answers.append(exc)
    return answers


class MatchInputs(JobInputs):
    features1: FeaturesInput
    features2: FeaturesInput


@job_kind("match", queue=LIGHT_QUEUE, help="two features strings")
def match(inputs: MatchInputs, job: JobContext) -> MatchResult:
    a: Features = inputs.features1
    return job.compute(job.engine.compare, a, inputs.features2)
