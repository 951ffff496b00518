"""Inputs of the gallery job kinds, checked without I/O or heavy imports.

A producer (or the HTTP stub) refuses a bad gallery request here, before it reaches a queue.
A probe is a features string or, failing that, an image reference; a features string never
parses as a reference the other way round (it has no scheme and is not a path we would read).
"""

from __future__ import annotations

from shared import features
from shared.errors import FeaturesError, GalleryError, JobError, ReferenceRejectedError
from shared.gallery.store import check_face_id, check_gallery_name
from shared.storage.refs import parse_ref

MAX_TOP_K = 1000
# A features string of a 4096-d model is under 22k characters; an image reference under 2k.
MAX_PROBE_CHARS = 32 * 1024


def probe_is_features(value: str) -> bool:
    """True for a features string, False for an image reference.

    Raises:
        JobError: neither.
    """
    try:
        features.decode(value)
        return True
    except FeaturesError:
        pass
    try:
        parse_ref(value)
    except ReferenceRejectedError:
        # Not echoed: a mangled features string is still biometric data.
        raise JobError("probe is neither a features string nor a valid image reference") from None
    return False


def top_k(value: str) -> int:
    """``top_k`` as the integer it spells, 1 to 1000.

    Raises:
        JobError: not such an integer.
    """
    if not value.isdigit() or not 1 <= int(value) <= MAX_TOP_K:
        raise JobError(f"top_k must be an integer from 1 to {MAX_TOP_K}")
    return int(value)


def check(input_type: str, value: str) -> None:
    """Check one gallery job input (``gallery``, ``face_id``, ``probe`` or ``top_k``).

    Raises:
        JobError: the value is not valid for its type.
    """
    try:
        if input_type == "gallery":
            check_gallery_name(value)
        elif input_type == "face_id":
            check_face_id(value)
        elif input_type == "probe":
            if len(value) > MAX_PROBE_CHARS:
                raise JobError(f"probe is longer than {MAX_PROBE_CHARS} characters")
            probe_is_features(value)
        elif input_type == "top_k":
            top_k(value)
        else:
            raise JobError(f"unknown gallery input type {input_type!r}")
    except GalleryError as exc:
        raise JobError(exc.message) from None
