"""The one interface every image store implements."""

from __future__ import annotations

from typing import Protocol

from shared.storage.refs import Ref


class ImageStore(Protocol):
    """Reads and writes objects by reference (see :func:`shared.storage.refs.parse_ref`).

    Every failure is a :class:`shared.errors.StorageError` leaf: ``ObjectNotFoundError``,
    ``ReferenceRejectedError``, ``ObjectTooLargeError`` (permanent) or
    ``StorageUnavailableError`` (transient, worth a retry).
    """

    def get(self, ref: str | Ref) -> bytes:
        """The object's bytes, refused before download when over ``KYC_MAX_IMAGE_BYTES``."""
        ...

    def put(self, ref: str, data: bytes) -> None:
        """Write (or overwrite) the object."""
        ...
