"""The one interface every gallery store implements, and the types that cross it.

A store holds the durable templates of one named gallery and an ordered change log of
``set``/``del`` ops by face id (never vectors, so erasing a face leaves no copy in the log).
Each process's index replays the log from its cursor; a cursor the store can no longer serve
(the log was trimmed past it, or the gallery was dropped and recreated) means "reload".
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from shared.errors import GalleryError
from shared.tenants import SEPARATOR, TENANT_PATTERN

# The most candidates one search returns.
MAX_TOP_K = 1000

# Letters, digits and ._- : a gallery name lands in Redis keys and file names unescaped.
GALLERY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_FACE_ID_CHARS = 256


def check_gallery_name(name: str) -> str:
    if not isinstance(name, str) or not GALLERY_NAME_PATTERN.fullmatch(name):
        raise GalleryError("gallery name must be 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
    return name


def check_stored_gallery_name(name: str) -> str:
    """A gallery name as stored: a gallery name, scoped by a tenant or not (``acme/customers``,
    see :func:`shared.tenants.scoped`); callers name only the bare gallery."""
    if not isinstance(name, str):
        raise GalleryError("gallery name must be a string")
    tenant, _, gallery = name.rpartition(SEPARATOR)
    if tenant and not re.fullmatch(TENANT_PATTERN, tenant):
        raise GalleryError("gallery tenant must be 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
    check_gallery_name(gallery)
    return name


def check_face_id(face_id: object) -> str:
    """A face id is the caller's key (a customer or case id): any printable text up to 256 chars."""
    if not isinstance(face_id, str) or not 0 < len(face_id) <= MAX_FACE_ID_CHARS or not face_id.isprintable():
        raise GalleryError(f"face id must be 1-{MAX_FACE_ID_CHARS} printable characters")
    return face_id


class Op(str, Enum):
    SET = "set"
    DELETE = "del"


@dataclass(frozen=True)
class Changes:
    """Ops after a cursor, oldest first, and the cursor to resume from."""

    ops: list[tuple[Op, str]]
    cursor: str


@dataclass(frozen=True)
class Head:
    """Where the log stands now: the epoch (changes when the gallery is recreated) and cursor."""

    epoch: str | None
    cursor: str


class GalleryStore(Protocol):
    """Durable templates of one gallery, stored as features strings (model id + vector).

    Infrastructure failures raise :class:`shared.errors.StorageUnavailableError` (transient);
    a refused write raises :class:`shared.errors.GalleryError`.
    """

    def model_id(self) -> str | None:
        """The model every template of the gallery comes from; None while it is empty and new."""
        ...

    def put(self, face_id: str, model_id: str, features: str) -> None:
        """Store (or replace) a template and log ``set``; refuse a second model with GalleryError."""
        ...

    def remove(self, face_id: str) -> bool:
        """Erase a template and log ``del``; False if there was none."""
        ...

    def fetch(self, face_ids: Sequence[str]) -> dict[str, str]:
        """Features strings of the given faces that exist now."""
        ...

    def count(self) -> int: ...

    def face_ids(self) -> list[str]:
        """Every enrolled face id (no templates), for planning screening runs."""
        ...

    def head(self) -> Head: ...

    def changes(self, epoch: str | None, cursor: str) -> Changes | None:
        """Ops after ``cursor`` (at most a few thousand; call again until none), or None if the
        cursor cannot be served any more and the caller must reload."""
        ...

    def scan(self, batch: int = 5000) -> Iterator[list[tuple[str, str]]]:
        """Every (face id, features) in batches, for a full load."""
        ...

    def drop(self) -> None:
        """Erase the whole gallery: templates, log and model binding."""
        ...

    def close(self) -> None: ...
