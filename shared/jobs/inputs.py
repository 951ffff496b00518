"""Typed job inputs: each kind's input model is built from these, parsed once at the edge.

A job's inputs cross the queue as plain strings (``JobDocument.inputs``). The producer parses
them into these values before storing the job, and the runner parses the stored strings once
more when the job starts (it is a new edge: the document may come from another version of the
producer); from there the typed values travel down, so no layer below parses a reference or a
features string again. Every field is tagged with its :class:`InputType`, from which the HTTP
stub and the CLI derive their own fields.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

from shared import features
from shared.errors import FeaturesError, GalleryError, JobError, ReferenceRejectedError
from shared.features import Features
from shared.gallery.store import MAX_TOP_K, check_face_id, check_gallery_name
from shared.storage.refs import Ref, parse_ref

MAX_FEATURES_CHARS = 16 * 1024
# A features string of a 4096-d model is under 22k characters; an image reference under 2k.
MAX_PROBE_CHARS = 32 * 1024


class InputType(str, Enum):
    """What a job input holds; the front doors pick their own field type from it."""

    REF = "ref"  # an image reference, see shared.storage.refs
    FEATURES = "features"  # a features string from get_faces
    GALLERY = "gallery"  # a gallery name
    FACE_ID = "face_id"  # the caller's id of an enrolled face
    PROBE = "probe"  # a features string, or else an image reference
    TOP_K = "top_k"  # how many candidates, "1" to "1000"
    FLAG = "flag"  # "true" or "false"


def _text(value: Any) -> str:
    if isinstance(value, (Ref, Features)):
        return str(value)
    if not isinstance(value, str) or not value:
        raise JobError("job inputs must be non-empty strings")
    return value


def parse_image_ref(value: Any) -> Ref:
    """An image reference (raises ``ReferenceRejectedError``)."""
    return value if isinstance(value, Ref) else parse_ref(_text(value))


def parse_features(value: Any) -> Features:
    """A features string (raises ``FeaturesError``, or ``JobError`` when it is too long)."""
    if isinstance(value, Features):
        return value
    text = _text(value)
    if len(text) > MAX_FEATURES_CHARS:
        raise JobError(f"features are longer than {MAX_FEATURES_CHARS} characters")
    return features.decode(text)


def parse_probe(value: Any) -> Features | Ref:
    """A features string or, failing that, an image reference; a features string never parses as
    a reference the other way round (it has no scheme and is not a path we would read).

    Raises:
        JobError: neither, or too long.
    """
    if isinstance(value, (Features, Ref)):
        return value
    text = _text(value)
    if len(text) > MAX_PROBE_CHARS:
        raise JobError(f"probe is longer than {MAX_PROBE_CHARS} characters")
    try:
        return features.decode(text)
    except FeaturesError:
        pass
    try:
        return parse_ref(text)
    except ReferenceRejectedError:
        # Not echoed: a mangled features string is still biometric data.
        raise JobError("probe is neither a features string nor a valid image reference") from None


def parse_top_k(value: Any) -> int:
    """``top_k`` as the integer it spells in ASCII digits, 1 to 1000 (raises ``JobError``).

    ``str.isdigit`` alone accepts every script's digits and superscripts ("١٠", "²"), which
    ``int`` then reads differently or refuses.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _text(value)
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_TOP_K:
        raise JobError(f"top_k must be an integer from 1 to {MAX_TOP_K}")
    return int(text)


def parse_flag(value: Any) -> bool:
    """A yes/no option: ``true`` or ``false`` in any case, or a bool (raises ``JobError``)."""
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text not in ("true", "false"):
        raise JobError('a flag must be "true" or "false"')
    return text == "true"


def _as_job_error(check: Any) -> Any:
    def run(value: Any) -> str:
        try:
            return str(check(_text(value)))
        except GalleryError as exc:
            raise JobError(exc.message) from None

    return run


_AS_TEXT = PlainSerializer(str, return_type=str)

ImageRef = Annotated[Ref, PlainValidator(parse_image_ref), _AS_TEXT, InputType.REF]
FeaturesInput = Annotated[Features, PlainValidator(parse_features), _AS_TEXT, InputType.FEATURES]
Probe = Annotated[Features | Ref, PlainValidator(parse_probe), _AS_TEXT, InputType.PROBE]
GalleryName = Annotated[str, PlainValidator(_as_job_error(check_gallery_name)), InputType.GALLERY]
FaceId = Annotated[str, PlainValidator(_as_job_error(check_face_id)), InputType.FACE_ID]
TopK = Annotated[int, PlainValidator(parse_top_k), _AS_TEXT, InputType.TOP_K]
Flag = Annotated[
    bool, PlainValidator(parse_flag), PlainSerializer(lambda v: str(v).lower(), return_type=str), InputType.FLAG
]


def input_type(metadata: list[Any]) -> InputType:
    """The :class:`InputType` tag among a field's ``Annotated`` metadata."""
    for item in metadata:
        if isinstance(item, InputType):
            return item
    raise TypeError("a job input must be one of the typed inputs of shared.jobs.inputs")


# The parser of each input type, for front doors that keep the value as a string (the HTTP stub).
PARSERS: dict[InputType, Callable[[Any], Any]] = {
    InputType.REF: parse_image_ref,
    InputType.FEATURES: parse_features,
    InputType.PROBE: parse_probe,
    InputType.GALLERY: _as_job_error(check_gallery_name),
    InputType.FACE_ID: _as_job_error(check_face_id),
    InputType.TOP_K: parse_top_k,
    InputType.FLAG: parse_flag,
}
