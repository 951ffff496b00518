"""Sharding a gallery: which shard holds a face, and merging the shards' top-k into one answer.

With ``KYC_GALLERY_SHARDS=S`` a gallery is S independent stores (``name~0of2``...); a face lives
in the shard its id hashes to, so writes touch one shard and a search asks all of them. Each
shard's answer is a :class:`Partial`, plain JSON so it can cross a queue; merging them by
similarity gives exactly the answer one big gallery would. The shard count is part of the
store names: changing it starts from empty galleries (re-enrol) rather than silently missing
the faces that hashed elsewhere.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from shared.errors import GalleryError

if TYPE_CHECKING:
    from shared.gallery.replica import Replica


def shard_names(gallery: str, shards: int) -> list[str]:
    """Store names of a gallery's shards (just the gallery's name when unsharded)."""
    if shards == 1:
        return [gallery]
    return [f"{gallery}~{i}of{shards}" for i in range(shards)]


def shard_of(face_id: str, shards: int) -> int:
    """The shard of a face: CRC-32 of its id, the same in every process (``hash()`` is salted)."""
    return zlib.crc32(face_id.encode("utf-8")) % shards


@dataclass(frozen=True)
class Partial:
    """One shard's answer to a batch of queries: its model, its size and per query its top-k."""

    model_id: str | None
    size: int
    face_ids: list[list[str]]
    similarities: list[list[float]]

    def to_json(self) -> dict[str, object]:
        return {
            "model_id": self.model_id,
            "size": self.size,
            "face_ids": self.face_ids,
            "similarities": self.similarities,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Partial:
        return cls(
            model_id=data["model_id"],  # type: ignore[arg-type]
            size=int(data["size"]),  # type: ignore[call-overload]
            face_ids=data["face_ids"],  # type: ignore[arg-type]
            similarities=data["similarities"],  # type: ignore[arg-type]
        )


# A fan-out sends (gallery, shards, features strings, top_k) to other processes and returns a
# ``collect()`` that waits (boundedly) for their partials; shards missing from what it returns
# are searched locally, so a lost or slow shard worker costs time, never the answer.
Collect = Callable[[], "dict[int, Partial]"]
FanOut = Callable[[str, list[int], list[str], int], Collect]


def search_replica(replica: Replica, vectors: np.ndarray, top_k: int) -> Partial:
    """Refresh one shard's replica and search it (``vectors`` already of the gallery's model)."""
    replica.refresh()
    index = replica.index
    if index is None or len(vectors) == 0:
        return Partial(replica.model_id, len(replica), [[] for _ in vectors], [[] for _ in vectors])
    if vectors.shape[1] != index.dim:
        raise GalleryError(f"queries have {vectors.shape[1]} dimensions; the gallery {index.dim}")
    hits = index.search(vectors, top_k)
    return Partial(
        model_id=replica.model_id,
        size=len(index),
        face_ids=[ids for ids, _ in hits],
        similarities=[[float(s) for s in sims] for _, sims in hits],
    )


def merge(partials: list[Partial], top_k: int) -> Partial:
    """The top-k over all shards per query, best first (ties by face id, as one gallery would).

    Raises:
        GalleryError: two shards hold templates of different models.
    """
    models = {p.model_id for p in partials if p.model_id is not None}
    if len(models) > 1:
        raise GalleryError(f"gallery shards hold templates of different models: {sorted(models)}")
    n_queries = len(partials[0].face_ids) if partials else 0
    face_ids: list[list[str]] = []
    similarities: list[list[float]] = []
    for q in range(n_queries):
        pooled = [(s, f) for p in partials for f, s in zip(p.face_ids[q], p.similarities[q], strict=True)]
        pooled.sort(key=lambda hit: (-hit[0], hit[1]))
        face_ids.append([f for _, f in pooled[:top_k]])
        similarities.append([s for s, _ in pooled[:top_k]])
    return Partial(next(iter(models), None), sum(p.size for p in partials), face_ids, similarities)
