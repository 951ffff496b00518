"""1:N kinds on a gallery: ``enroll``, ``search`` and ``delete``.

A probe is a features string or an image reference; an image must show exactly one usable face,
as a selfie must for ``verify``. Only ``enroll`` creates a gallery: a search or delete naming one
that does not exist fails with ``GalleryNotFoundError`` and leaves nothing behind.
"""

from __future__ import annotations

from shared import features
from shared.features import Features
from shared.jobs.context import JobContext
from shared.jobs.inputs import FaceId, GalleryName, Probe, TopK
from shared.jobs.registry import HEAVY_QUEUE, LIGHT_QUEUE, JobInputs, job_kind
from shared.schemas import DeleteResult, EnrolResult, FindManyResult
from shared.storage.refs import Ref
from shared.tenants import Scope


def probe_features(probe: Features | Ref, job: JobContext) -> Features:
    """The probe itself if it is features, else its image's one usable face.

    Raises:
        InvalidImageError: the image is not usable.
        FaceCountError: the image shows no usable face, or more than one.
        StorageError: the image could not be read.
    """
    if isinstance(probe, Features):
        return probe
    return features.decode(job.compute(job.engine.single_face, job.fetch(probe)).features)


class EnrollInputs(JobInputs):
    gallery: GalleryName
    face_id: FaceId
    probe: Probe


@job_kind("enroll", queue=HEAVY_QUEUE, help="enrol (or replace) a face in a gallery", scope=Scope.GALLERY_ENROLL)
def enroll(inputs: EnrollInputs, job: JobContext) -> EnrolResult:
    probe = probe_features(inputs.probe, job)
    return job.compute(job.gallery(inputs.gallery).put, inputs.face_id, probe)


class SearchInputs(JobInputs):
    gallery: GalleryName
    probe: Probe
    top_k: TopK = 10


@job_kind("search", queue=HEAVY_QUEUE, help="the top-k enrolled faces most like the probe", scope=Scope.GALLERY_SEARCH)
def search(inputs: SearchInputs, job: JobContext) -> FindManyResult:
    probe = probe_features(inputs.probe, job)
    return job.compute(job.gallery(inputs.gallery, create=False).search, probe, inputs.top_k)


class DeleteInputs(JobInputs):
    gallery: GalleryName
    face_id: FaceId


@job_kind("delete", queue=LIGHT_QUEUE, help="erase a face's template from a gallery", scope=Scope.GALLERY_DELETE)
def delete(inputs: DeleteInputs, job: JobContext) -> DeleteResult:
    return job.compute(job.gallery(inputs.gallery, create=False).remove, inputs.face_id)
