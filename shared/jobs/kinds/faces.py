"""1:1 kinds: ``faces`` (every face of an image), ``verify`` (selfie against document), ``match``."""

from __future__ import annotations

from shared.features import Features
from shared.jobs.context import JobContext
from shared.jobs.inputs import FeaturesInput, ImageRef
from shared.jobs.registry import HEAVY_QUEUE, LIGHT_QUEUE, JobInputs, job_kind
from shared.schemas import FacesResult, InvalidImageResult, MatchResult
from shared.verification import VerificationResult, decide


class FacesInputs(JobInputs):
    image: ImageRef


@job_kind("faces", queue=HEAVY_QUEUE, help="every face of one image")
def faces(inputs: FacesInputs, job: JobContext) -> FacesResult | InvalidImageResult:
    return job.compute(job.engine.describe, job.fetch(inputs.image))


class VerifyInputs(JobInputs):
    selfie: ImageRef
    document: ImageRef


@job_kind("verify", queue=HEAVY_QUEUE, help="a selfie against an ID document")
def verify(inputs: VerifyInputs, job: JobContext) -> VerificationResult:
    selfie_bytes, document_bytes = job.fetch(inputs.selfie), job.fetch(inputs.document)
    selfie = job.compute(job.engine.selfie_faces, selfie_bytes)
    document = job.compute(job.engine.document_faces, document_bytes)
    return job.compute(decide, selfie, document, job.engine.compare, job.engine.enforced_liveness)


class MatchInputs(JobInputs):
    features1: FeaturesInput
    features2: FeaturesInput


@job_kind("match", queue=LIGHT_QUEUE, help="two features strings")
def match(inputs: MatchInputs, job: JobContext) -> MatchResult:
    a: Features = inputs.features1
    return job.compute(job.engine.compare, a, inputs.features2)
