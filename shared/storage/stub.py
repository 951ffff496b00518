"""An in-memory image store for unit tests: no files, no S3, and failures on demand."""

from __future__ import annotations

from shared.errors import ObjectNotFoundError, StorageError
from shared.storage.refs import Ref, parse_ref


class StubImageStore:
    """Objects in a dict, keyed by the reference's text; an :class:`~shared.storage.base.ImageStore`.

    Args:
        objects: reference -> bytes.
        fail_with: raised by every ``get`` when set (e.g. a ``StorageUnavailableError``).
    """

    def __init__(self, objects: dict[str, bytes] | None = None, fail_with: StorageError | None = None) -> None:
        self.objects = dict(objects or {})
        self.fail_with = fail_with
        self.reads = 0

    def get(self, ref: str | Ref) -> bytes:
        self.reads += 1
        if self.fail_with is not None:
            raise self.fail_with
        parsed = ref if isinstance(ref, Ref) else parse_ref(ref)
        try:
            return self.objects[str(parsed)]
        except KeyError:
            raise ObjectNotFoundError(f"{parsed}: no such object") from None

    def put(self, ref: str, data: bytes) -> None:
        self.objects[str(parse_ref(ref))] = data
