"""KYCDeepFaceDB: enrol, search and erase faces in a named gallery (1:N).

Like :class:`shared.engine.KYCDeepFace`, the public methods answer bad input with result
documents (``{"code": "ERROR", "message"}``), never exceptions. Only infrastructure failures
raise: :class:`shared.errors.StorageUnavailableError` (Redis or the gallery file unreachable),
which a worker retries.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from redis import Redis

from shared import calibration, features
from shared.config import Settings, get_settings
from shared.errors import FeaturesError, GalleryError, KYCFaceError, StorageUnavailableError
from shared.gallery.answers import Scored, candidates, confidence_map_for, matches, score
from shared.gallery.factory import open_store
from shared.gallery.replica import Replica
from shared.gallery.shards import FanOut, Partial, merge, search_replica, shard_names, shard_of
from shared.gallery.store import MAX_TOP_K, GalleryStore, check_face_id, check_stored_gallery_name
from shared.gallery.threshold import gallery_threshold
from shared.schemas import (
    DeleteResult,
    EnrolResult,
    ErrorResult,
    FindManyResult,
    FindResult,
    TemplateResult,
)
from shared.tenants import DEFAULT_TENANT

DEFAULT_GALLERY = "default"


def _features_text(value: Any) -> str:
    if isinstance(value, features.Features):
        return value.text
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not isinstance(value, str):
        raise FeaturesError("features must be a base64 string")
    return value


class KYCDeepFaceDB:
    """A named face gallery.

    Args:
        gallery: the gallery's name (``customers``, ``watchlist``...): letters, digits, ``._-``.
        settings: the project settings (default: from the environment). ``KYC_GALLERY_SHARDS``
            splits the gallery into that many stores (see :mod:`shared.gallery.shards`).
        redis: a Redis client to use instead of one built from ``KYC_REDIS_URL``.
        stores: the shards' stores, any :class:`~shared.gallery.store.GalleryStore` (overrides
            ``redis``; as many as ``KYC_GALLERY_SHARDS``).
        verify_confidence: 1:1 confidence that is the floor of the gallery threshold
            (default ``KYC_VERIFY_CONFIDENCE``).
        fpir: target false-positive identification rate (default ``KYC_GALLERY_FPIR``).

    Raises:
        GalleryError: invalid gallery name, a Redis store asked for without a URL, or a number
            of stores that is not the number of shards.
        StorageUnavailableError: the gallery file cannot be opened.
    """

    def __init__(
        self,
        gallery: str = DEFAULT_GALLERY,
        *,
        settings: Settings | None = None,
        redis: Redis | None = None,
        stores: Sequence[GalleryStore] | None = None,
        verify_confidence: float | None = None,
        fpir: float | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.gallery = check_stored_gallery_name(gallery)
        names = shard_names(self.gallery, self.settings.gallery_shards)
        self.stores = list(stores) if stores is not None else [open_store(n, self.settings, redis) for n in names]
        if len(self.stores) != len(names):
            raise GalleryError(f"{len(self.stores)} stores given for {len(names)} shards")
        self.verify_confidence = self.settings.verify_confidence if verify_confidence is None else verify_confidence
        self.fpir = self.settings.gallery_fpir if fpir is None else fpir
        self._replicas = [
            Replica(store, self.settings.gallery_shortlist, self.settings.gallery_float16) for store in self.stores
        ]
        # Set by a worker to search shards 1..S-1 in other processes (Celery group); None: here.
        self.fan_out: FanOut | None = None
        # Searches read the replicas while refreshes rewrite them: one at a time per instance.
        self._lock = threading.Lock()

    def __enter__(self) -> KYCDeepFaceDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for store in self.stores:
            store.close()

    @property
    def shards(self) -> int:
        return len(self.stores)

    def _store_of(self, face_id: str) -> GalleryStore:
        return self.stores[shard_of(face_id, self.shards)]

    # -- writes --------------------------------------------------------------------------------

    def set(self, face_id: str, features: Any) -> EnrolResult | ErrorResult:
        """Enrol (or replace) the template of ``face_id``.

        Returns:
            ``EnrolResult``; ``ErrorResult`` for a bad face id, malformed features, features of
            a model without a calibration, or of another model than the gallery's.
        """
        return self._answer(self.put, face_id, features)

    def put(self, face_id: Any, value: Any) -> EnrolResult:
        """:meth:`set` for code that handles errors itself: raises what ``set`` reports."""
        face_id = check_face_id(face_id)
        text = _features_text(value)
        decoded = features.decode(text)
        self.confidence_map(decoded.model_id)  # refuse a model we could not score searches of
        if self.shards > 1:
            # Each shard binds its own model; another shard's binding must agree too.
            bound = self.model_id()
            if bound is not None and bound != decoded.model_id:
                raise GalleryError(
                    f"gallery holds templates of model {bound!r}; refusing features of {decoded.model_id!r}"
                )
        if decoded.tenant != DEFAULT_TENANT:
            # Stored as the service's own string: a gallery's templates load without a tenant's
            # keys, and survive a retired key as before (docs/OPERATIONS.md, "Tenant-bound features").
            text = features.seal_for(text, DEFAULT_TENANT)  # the same vector bytes: the same digest
        self._store_of(face_id).put(face_id, decoded.model_id, text)
        return EnrolResult(gallery=self.gallery, face_id=face_id)

    def delete(self, face_id: str) -> DeleteResult | ErrorResult:
        """Erase ``face_id``'s template from the store; every replica drops it on its next search."""
        return self._answer(self.remove, face_id)

    def remove(self, face_id: Any) -> DeleteResult:
        """:meth:`delete` for code that handles errors itself: raises what ``delete`` reports."""
        face_id = check_face_id(face_id)
        return DeleteResult(gallery=self.gallery, face_id=face_id, deleted=self._store_of(face_id).remove(face_id))

    def drop(self) -> None:
        """Erase the whole gallery (every template, the log and its model binding)."""
        for store in self.stores:
            store.drop()

    # -- reads ---------------------------------------------------------------------------------

    def get(self, face_id: str) -> TemplateResult | ErrorResult:
        """The stored features of ``face_id`` (``features`` None when not enrolled)."""
        return self._answer(self._get, face_id)

    def _get(self, face_id: Any) -> TemplateResult:
        face_id = check_face_id(face_id)
        stored = self._store_of(face_id).fetch([face_id]).get(face_id)
        return TemplateResult(gallery=self.gallery, face_id=face_id, features=stored)

    def count(self) -> int:
        """Faces enrolled (read from the stores, not this process's replicas)."""
        return sum(store.count() for store in self.stores)

    def face_ids(self) -> list[str]:
        """Every enrolled face id, sorted."""
        return sorted(face_id for store in self.stores for face_id in store.face_ids())

    def templates(self, face_ids: Sequence[str]) -> dict[str, str]:
        """Stored features of those of ``face_ids`` that are enrolled."""
        by_shard: dict[int, list[str]] = {}
        for face_id in face_ids:
            by_shard.setdefault(shard_of(face_id, self.shards), []).append(face_id)
        found: dict[str, str] = {}
        for shard, ids in by_shard.items():
            found.update(self.stores[shard].fetch(ids))
        return found

    def model_id(self) -> str | None:
        """The model the gallery's templates come from (None while it is empty and new)."""
        bound = {m for m in (store.model_id() for store in self.stores) if m is not None}
        if len(bound) > 1:
            raise GalleryError(f"gallery shards hold templates of different models: {sorted(bound)}")
        return next(iter(bound), None)

    def refresh(self) -> None:
        """Bring this process's indexes up to date (a worker calls it once at start to preload)."""
        with self._lock:
            for replica in self._replicas:
                replica.refresh()

    def confidence_map(self, model_id: str) -> calibration.ConfidenceMap:
        """The calibration of the embedding model ``model_id`` (``name@sha256-prefix``).

        Raises:
            ModelError: the model is not in the registry.
            CalibrationError: no calibration for it.
            GalleryError: the registry's model of that name has other weights.
        """
        return confidence_map_for(model_id, self.settings)

    def threshold(self, model_id: str, gallery_size: int) -> float:
        """The cosine a hit must reach in a gallery of ``gallery_size`` faces of ``model_id``."""
        return gallery_threshold(self.confidence_map(model_id), self.fpir, gallery_size, self.verify_confidence)

    # -- search --------------------------------------------------------------------------------

    def find_face(self, features: Any) -> FindResult | ErrorResult:
        """The best match in the gallery, decided at the gallery's 1:N operating point.

        Returns:
            ``FindResult``: ``found`` is the best face id when it is ``verified`` (its cosine
            reaches the threshold for ``fpir`` at this gallery size, never below the 1:1
            threshold), and ``confidence`` its confidence's band (0.99, 0.9 or 0.5: at least
            that, on the same map as ``match_faces``); below the operating point ``found`` is
            None and ``confidence`` 0.0, whatever the nearest face (a near miss is no answer).
            ``ErrorResult`` for malformed or other-model features.
        """
        many = self.find_faces(features, top_k=1)
        if isinstance(many, ErrorResult):
            return many
        if not many.candidates:
            return FindResult(found=None, confidence=0.0, verified=False)
        best = many.candidates[0]
        return FindResult(found=best.face_id, confidence=best.confidence, verified=True)

    def find_faces(self, features: Any, top_k: int = 10, *, near_misses: bool = False) -> FindManyResult | ErrorResult:
        """The enrolled faces at or above the operating point among the ``top_k`` most similar,
        best first, each ``verified`` with its confidence's band; none when nothing matches.

        ``near_misses=True`` (an investigator's search: the ``search:candidates`` scope of the API)
        lists all ``top_k``, verified or not, ranked, with confidences to two decimals. Those
        ranks rebuild templates (docs/OPERATIONS.md, "Search answers"): never hand them to a
        caller who may also enrol.

        A search sees every ``set`` and ``delete`` that returned before it was issued.
        """
        return self.find_faces_many([features], top_k, near_misses=near_misses)[0]

    def find_faces_many(
        self, queries: Sequence[Any], top_k: int = 10, *, near_misses: bool = False
    ) -> list[FindManyResult | ErrorResult]:
        """:meth:`find_faces` for a batch of features (one index pass, several times faster per query).

        A malformed query gets its own ``ErrorResult``; the others are still answered.
        """
        try:
            return self._search_many(queries, top_k, near_misses)
        except StorageUnavailableError:
            raise
        except KYCFaceError as exc:
            return [ErrorResult.from_error(exc)] * len(queries)

    def search(self, query: Any, top_k: int = 10, *, near_misses: bool = False) -> FindManyResult:
        """:meth:`find_faces` for code that handles errors itself.

        Raises:
            FeaturesError: malformed features.
            GalleryError: ``top_k`` out of range, or features of another model than the gallery's.
        """
        vectors, errors = self.prepare([query], top_k)
        if errors[0] is not None:
            raise errors[0]
        merged = merge(self._search_all(vectors, [_features_text(query)], top_k), top_k)
        # No refused query, so the one answer is a FindManyResult.
        return cast(FindManyResult, self.answer(errors, merged, near_misses)[0])

    def _search_many(self, queries: Sequence[Any], top_k: int, near_misses: bool) -> list[FindManyResult | ErrorResult]:
        vectors, errors = self.prepare(queries, top_k)
        texts = [_features_text(q) for q, e in zip(queries, errors, strict=True) if e is None]
        return self.answer(errors, merge(self._search_all(vectors, texts, top_k), top_k), near_misses)

    def prepare(
        self, queries: Sequence[Any], top_k: int, sealed: bool = True
    ) -> tuple[np.ndarray, list[KYCFaceError | None]]:
        """Decode a batch of queries: the vectors to search, and an error for each query refused.

        ``sealed=False`` only for templates read from a gallery store (screening runs), which
        were checked when enrolled.

        Raises:
            GalleryError: ``top_k`` out of range, or the shards disagree on the model.
        """
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
            raise GalleryError(f"top_k must be an integer from 1 to {MAX_TOP_K}")
        model_id = self.model_id()
        errors: list[KYCFaceError | None] = []
        vectors: list[np.ndarray] = []
        for query in queries:
            try:
                decoded = features.decode(_features_text(query), sealed=sealed)
                if model_id is not None and decoded.model_id != model_id:
                    raise GalleryError(
                        f"features come from model {decoded.model_id!r}; gallery {self.gallery!r} holds {model_id!r}"
                    )
                vectors.append(decoded.vector)
                errors.append(None)
            except KYCFaceError as exc:
                errors.append(exc)
        dim = vectors[0].size if vectors else 0
        return np.stack(vectors) if vectors else np.zeros((0, dim), np.float32), errors

    def _search_all(self, vectors: np.ndarray, texts: list[str], top_k: int) -> list[Partial]:
        if self.fan_out is None or self.shards == 1 or not texts:
            return [self.search_shard(i, vectors, top_k) for i in range(self.shards)]
        collect = self.fan_out(self.gallery, list(range(1, self.shards)), texts, top_k)
        local = self.search_shard(0, vectors, top_k)  # while the other shards search
        remote = collect()
        rest = [remote[i] if i in remote else self.search_shard(i, vectors, top_k) for i in range(1, self.shards)]
        return [local, *rest]

    def search_shard(self, shard: int, vectors: np.ndarray, top_k: int) -> Partial:
        """One shard's top-k for prepared query vectors (a worker of that shard runs this)."""
        with self._lock:
            return search_replica(self._replicas[shard], vectors, top_k)

    def scores(self, errors: list[KYCFaceError | None], merged: Partial) -> tuple[list[list[Scored] | None], float]:
        """Per query, its scored candidates (None for a refused query), and the cosine cut.

        In-process only: a :class:`Scored` holds the exact cosine, which no result document does.
        """
        if merged.model_id is None:
            cmap, cut = None, 0.0
        else:
            cmap = self.confidence_map(merged.model_id)
            cut = gallery_threshold(cmap, self.fpir, merged.size, self.verify_confidence)
        hits = iter(zip(merged.face_ids, merged.similarities, strict=True))
        scored: list[list[Scored] | None] = []
        for error in errors:
            if error is not None:
                scored.append(None)
                continue
            face_ids, sims = next(hits)
            scored.append(score(cmap, cut, face_ids, sims))
        return scored, cut

    def answer(
        self, errors: list[KYCFaceError | None], merged: Partial, near_misses: bool = False
    ) -> list[FindManyResult | ErrorResult]:
        """Result documents from the merged top-k, in query order, refused queries keeping their
        error: the matches only, or every candidate ranked with ``near_misses``."""
        scored, cut = self.scores(errors, merged)
        document = candidates if near_misses else matches
        return [
            ErrorResult.from_error(error) if error is not None else document(found or [], merged.size, cut)
            for error, found in zip(errors, scored, strict=True)
        ]

    def _answer(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except StorageUnavailableError:
            raise
        except KYCFaceError as exc:
            return ErrorResult.from_error(exc)
