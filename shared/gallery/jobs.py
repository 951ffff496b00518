"""Running the gallery job kinds in a worker: ``enroll``, ``search`` and ``delete``.

Inputs are plain strings (see :mod:`shared.gallery.inputs`). A probe image must show exactly
one usable face, as a selfie must for ``verify``. Each process keeps one
:class:`KYCDeepFaceDB` per gallery, so its index stays warm between jobs and only replays the
gallery's log.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.config import Settings
from shared.errors import GalleryError, InvalidImageError, JobError
from shared.gallery import inputs
from shared.gallery.shards import FanOut
from shared.schemas import ErrorResult, InvalidImageResult, to_dict

if TYPE_CHECKING:
    from shared.engine import KYCDeepFace
    from shared.gallery.db import KYCDeepFaceDB

ENROLL = "enroll"
SEARCH = "search"
DELETE = "delete"
KINDS = (ENROLL, SEARCH, DELETE)

_lock = threading.Lock()
_open: dict[tuple[int, str], KYCDeepFaceDB] = {}
_fan_out: FanOut | None = None


def configure(fan_out: FanOut | None) -> None:
    """Search sharded galleries' other shards through ``fan_out`` (a worker sets its Celery group)."""
    global _fan_out
    _fan_out = fan_out
    with _lock:
        for db in _open.values():
            db.fan_out = fan_out


def gallery(settings: Settings, name: str) -> KYCDeepFaceDB:
    """This process's instance of gallery ``name`` (keyed by pid: never shared across a fork)."""
    from shared.gallery.db import KYCDeepFaceDB

    key = (os.getpid(), name)
    with _lock:
        db = _open.get(key)
        if db is None:
            db = _open[key] = KYCDeepFaceDB(name, settings=settings)
            db.fan_out = _fan_out
        return db


def probe_features(
    probe: str, engine: KYCDeepFace, fetch: Callable[[str], bytes], compute: Callable[..., Any] | None = None
) -> str:
    """The features of a probe: itself if it is a features string, else its image's one usable face.

    Raises:
        InvalidImageError: the image is not usable.
        GalleryError: the image shows no usable face, or more than one.
        StorageError: the image could not be read.
    """
    if inputs.probe_is_features(probe):
        return probe
    image = fetch(probe)
    result = compute(engine.get_faces, image) if compute is not None else engine.get_faces(image)
    if isinstance(result, InvalidImageResult):
        raise InvalidImageError(result.reason, result.message)
    if isinstance(result, ErrorResult):
        raise JobError(result.message)
    if len(result.faces) != 1:
        raise GalleryError(f"the probe image must show exactly one usable face; it shows {len(result.faces)}")
    return str(result.faces[0].features)


def run(
    kind: str,
    job_inputs: dict[str, str],
    engine: KYCDeepFace,
    fetch: Callable[[str], bytes],
    compute: Callable[..., Any],
) -> dict[str, Any]:
    """Run one gallery job and return its answer as a JSON-ready dict.

    Args:
        kind: ``enroll`` (``gallery``, ``face_id``, ``probe``), ``search`` (``gallery``,
            ``probe``, ``top_k``) or ``delete`` (``gallery``, ``face_id``).
        job_inputs: the validated inputs.
        engine: the face engine (its settings select the gallery store).
        fetch: reads an image reference.
        compute: runs a function, timing it as compute (``compute(fn, *args)``).

    Returns:
        The ``EnrolResult``, ``FindManyResult`` or ``DeleteResult`` document.

    Raises:
        KYCFaceError: a refused input (bad probe image, other model...): the job fails with it.
        StorageUnavailableError: the gallery store or image store is down (transient).
    """
    db = gallery(engine.settings, job_inputs["gallery"])
    if kind == DELETE:
        result = compute(db.delete, job_inputs["face_id"])
    elif kind == ENROLL:
        probe = probe_features(job_inputs["probe"], engine, fetch, compute)
        result = compute(db.set, job_inputs["face_id"], probe)
    elif kind == SEARCH:
        probe = probe_features(job_inputs["probe"], engine, fetch, compute)
        result = compute(db.find_faces, probe, inputs.top_k(job_inputs["top_k"]))
    else:
        raise JobError(f"unknown gallery job kind {kind!r}")
    if isinstance(result, ErrorResult):
        raise GalleryError(result.message)
    return to_dict(result)
