"""1:N kinds on a gallery: ``enroll``, ``search``, ``delete``, and ``forget`` (every gallery of a tenant).

A probe is a features string or an image reference; an image must show exactly one usable face,
as a selfie must for ``verify``. Only ``enroll`` creates a gallery: a search or delete naming one
that does not exist fails with ``GalleryNotFoundError`` and leaves nothing behind.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from shared import features
from shared.features import Features
from shared.gallery.audit import audit_near_misses
from shared.gallery.factory import gallery_names
from shared.gallery.probe_patterns import process_patterns
from shared.jobs.context import JobContext
from shared.jobs.erasure import purge_intake
from shared.jobs.inputs import FaceId, Flag, GalleryName, Probe, TopK
from shared.jobs.registry import HEAVY_QUEUE, LIGHT_QUEUE, JobInputs, job_kind
from shared.jobs.store import JobStore
from shared.metrics import metrics
from shared.schemas import DeleteResult, EnrolResult, FindManyResult, ForgetResult
from shared.storage.refs import Ref
from shared.tenants import Scope, scoped

if TYPE_CHECKING:
    from shared.gallery.db import KYCDeepFaceDB


def probe_features(probe: Features | Ref, job: JobContext) -> Features:
    """The probe itself if it is features, else its image's one usable face.

    Raises:
        InvalidImageError: the image is not usable.
        FaceCountError: the image shows no usable face, or more than one.
        StorageError: the image could not be read.
    """
    if isinstance(probe, Features):
        return probe
    return features.decode(job.compute(job.engine.single_face, job.fetch(probe)).template())


class EnrollInputs(JobInputs):
    gallery: GalleryName
    face_id: FaceId
    probe: Probe
    include_features: Flag = False


@job_kind("enroll", queue=HEAVY_QUEUE, help="enrol (or replace) a face in a gallery", scope=Scope.GALLERY_ENROLL)
def enroll(inputs: EnrollInputs, job: JobContext) -> EnrolResult:
    probe = probe_features(inputs.probe, job)
    gallery = job.gallery(inputs.gallery)
    replaced = job.compute(gallery.templates, [inputs.face_id]).get(inputs.face_id)
    enrolled = job.compute(gallery.put, inputs.face_id, probe)
    # A re-enrolment replaces the template: the old one is erased everywhere, as a forget would,
    # or a later forget (which finds only the new one) would leave its copies behind.
    if replaced is not None and (old := features.digest_of_string(replaced)) != features.digest(probe):
        erase_documents(job, {old})
    return enrolled.model_copy(update={"features": probe.text}) if inputs.include_features else enrolled


class SearchInputs(JobInputs):
    gallery: GalleryName
    probe: Probe
    top_k: TopK = 10
    include_features: Flag = False
    # Every top-k candidate ranked, verified or not (investigators; the API asks the
    # search:candidates scope for it). Default: the matches at the operating point only.
    near_misses: Flag = False


@job_kind(
    "search",
    queue=HEAVY_QUEUE,
    help="the enrolled faces that match the probe (near misses too with near_misses)",
    scope=Scope.GALLERY_SEARCH,
)
def search(inputs: SearchInputs, job: JobContext) -> FindManyResult:
    probe = probe_features(inputs.probe, job)
    if process_patterns(job.settings).observe(f"tenant:{job.tenant}", probe):
        metrics().probe_near_duplicates.labels("search").inc()
    gallery = job.gallery(inputs.gallery, create=False)
    found = job.compute(partial(gallery.search, near_misses=inputs.near_misses), probe, inputs.top_k)
    if inputs.near_misses:
        audit_near_misses("job", job.tenant, inputs.gallery, len(found.candidates))
    return found.model_copy(update={"probe_features": probe.text}) if inputs.include_features else found


def erase(gallery: KYCDeepFaceDB, face_id: str) -> tuple[DeleteResult, set[str]]:
    """Remove ``face_id`` from ``gallery`` (its store, and every index through the change log);
    the digest of the template it held, for erasing its copies in job results."""
    held = gallery.templates([face_id]).get(face_id)
    removed = gallery.remove(face_id)
    if held is None:
        return removed, set()
    return removed, {features.digest_of_string(held)}


def erase_documents(job: JobContext, digests: set[str]) -> int:
    """Redact those templates from stored job results (Redis and every version of the S3
    archive) and drop the intake requests that carried them."""
    if not digests or job.settings.resolved_redis_url() is None:
        return 0  # no job store (the library, the embedded demo): no job documents to erase
    store = job.resources.jobs
    if isinstance(store, JobStore):  # the in-memory store of the unit tests has no intake
        purge_intake(store.redis, job.settings, digests, job.tenant)
    return store.erase_templates(digests, job.tenant)


class DeleteInputs(JobInputs):
    gallery: GalleryName
    face_id: FaceId


@job_kind(
    "delete",
    queue=LIGHT_QUEUE,
    help="erase a face's template from a gallery and every job result",
    scope=Scope.GALLERY_DELETE,
)
def delete(inputs: DeleteInputs, job: JobContext) -> DeleteResult:
    removed, digests = job.compute(erase, job.gallery(inputs.gallery, create=False), inputs.face_id)
    return removed.model_copy(update={"documents_redacted": erase_documents(job, digests)})


class ForgetInputs(JobInputs):
    face_id: FaceId


@job_kind(
    "forget",
    queue=LIGHT_QUEUE,
    help="erase a subject from every gallery of the tenant and every job result",
    scope=Scope.GALLERY_DELETE,
)
def forget(inputs: ForgetInputs, job: JobContext) -> ForgetResult:
    erased: list[str] = []
    digests: set[str] = set()
    for name in gallery_names(job.settings, scoped(job.tenant, "")):
        removed, held = job.compute(erase, job.gallery(name), inputs.face_id)
        if removed.deleted:
            erased.append(name)
        digests |= held
    return ForgetResult(face_id=inputs.face_id, galleries=erased, documents_redacted=erase_documents(job, digests))
