"""What one process builds once and reuses for every job: the engine, the stores, the galleries.

Nothing is built at import: each part is made on first use, and :func:`for_process` keeps one
holder per process id, so a forked child never reuses its parent's sockets. Tests build a
:class:`Resources` of their own, with stubs in place of the parts they do not exercise.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from shared.config import Settings
from shared.errors import GalleryNotFoundError, StorageUnavailableError

if TYPE_CHECKING:
    import redis

    from shared.engine import KYCDeepFace
    from shared.gallery.db import KYCDeepFaceDB
    from shared.gallery.shards import FanOut
    from shared.jobs.model import JobDocument
    from shared.jobs.store import JobStore
    from shared.producer import Producer
    from shared.storage.base import ImageStore

log = logging.getLogger(__name__)


class Resources:
    """One process's engine, image store, job store, Redis client and open galleries.

    Args:
        settings: what to build them from.
        engine, images, jobs: ready-made parts (stubs in tests); the others are built lazily.
        interrupts: exception types a task runner raises asynchronously to stop a job at its soft
            time limit (Celery's ``SoftTimeLimitExceeded``); the runner records them as
            ``TimeLimitExceeded``.
    """

    def __init__(
        self,
        settings: Settings,
        engine: KYCDeepFace | None = None,
        images: ImageStore | None = None,
        jobs: JobStore | None = None,
        interrupts: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.settings = settings
        self.interrupts = interrupts
        # Searches of sharded galleries ask the other shards' workers through this (Celery sets it).
        self.fan_out: FanOut | None = None
        # Told of every terminal document the runner stores or finds, a chunk's together (the
        # worker binds the completion events, the webhooks and the review queue); idempotent.
        self.on_terminal: Callable[[Sequence[JobDocument]], None] | None = None
        self._engine = engine
        self._images = images
        self._jobs = jobs
        self._redis: redis.Redis | None = None
        self._producer: Producer | None = None
        self._galleries: OrderedDict[str, KYCDeepFaceDB] = OrderedDict()
        self._lock = threading.RLock()

    @property
    def engine(self) -> KYCDeepFace:
        """The face engine, loaded and warmed on first use (the slow part of a worker's start)."""
        with self._lock:
            if self._engine is None:
                from shared.engine import KYCDeepFace

                engine = KYCDeepFace(verify_confidence=self.settings.verify_confidence, settings=self.settings)
                engine.warm_up()
                self._engine = engine
            return self._engine

    @property
    def images(self) -> ImageStore:
        with self._lock:
            if self._images is None:
                from shared.storage import store_for

                self._images = store_for(self.settings)
            return self._images

    @property
    def jobs(self) -> JobStore:
        with self._lock:
            if self._jobs is None:
                from shared.jobs.store import JobStore

                self._jobs = JobStore(self.settings)
            return self._jobs

    @property
    def redis(self) -> redis.Redis:
        """A client of the job and gallery Redis (``KYC_REDIS_URL``, else ``KYC_BROKER_URL``)."""
        with self._lock:
            if self._redis is None:
                from shared.storage.redis_client import redis_client

                url = self.settings.resolved_redis_url()
                if url is None:
                    raise StorageUnavailableError("no Redis: set KYC_REDIS_URL (or KYC_BROKER_URL)")
                self._redis = redis_client(url, self.settings)
            return self._redis

    @property
    def producer(self) -> Producer:
        """A producer on these settings (the sweeper re-sends through it)."""
        with self._lock:
            if self._producer is None:
                from shared.producer import Producer

                self._producer = Producer(self.settings)
            return self._producer

    def gallery(self, name: str, create: bool = True) -> KYCDeepFaceDB:
        """Gallery ``name``, kept open while it is among the ``KYC_GALLERY_CACHE_SIZE`` most
        recently used: its index stays warm and only replays the gallery's log. Every gallery
        of the process shares the one Redis client (one connection pool).

        Args:
            name: a checked gallery name.
            create: False for reads and erasures: a gallery nothing was enrolled in is refused
                before anything is opened, cached or written for it.

        Raises:
            GalleryNotFoundError: ``create`` is False and the gallery does not exist.
        """
        from shared.gallery.factory import gallery_exists, uses_redis

        client = self.redis if uses_redis(self.settings) else None
        if not create and not gallery_exists(name, self.settings, client):
            raise GalleryNotFoundError(f"no gallery named {name!r}")
        with self._lock:
            db = self._galleries.pop(name, None)
            if db is None:
                from shared.gallery.db import KYCDeepFaceDB

                db = KYCDeepFaceDB(name, settings=self.settings, redis=client)
            self._galleries[name] = db  # now the most recently used
            while len(self._galleries) > self.settings.gallery_cache_size:
                _, evicted = self._galleries.popitem(last=False)
                # A job still holding it keeps a working object: only a file store has a handle
                # of its own to close, and the shared client stays open.
                evicted.close()
            db.fan_out = self.fan_out
            return db

    def close(self) -> None:
        """Close what was opened (galleries, Redis); the engine needs no closing."""
        with self._lock:
            for db in self._galleries.values():
                db.close()
            self._galleries.clear()
            if self._redis is not None:
                self._redis.close()
                self._redis = None
            if self._producer is not None:
                self._producer.close()
                self._producer = None


_lock = threading.Lock()
_by_pid: dict[int, Resources] = {}


def for_process(settings: Settings) -> Resources:
    """This process's resources (keyed by pid: never shared across a fork)."""
    pid = os.getpid()
    with _lock:
        found = _by_pid.get(pid)
        if found is None:
            found = _by_pid[pid] = Resources(settings)
        return found
