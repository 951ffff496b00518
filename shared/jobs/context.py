"""What a job handler gets: the process's resources, and stage timers around fetch and compute."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from shared.config import Settings
from shared.storage.refs import Ref
from shared.tenants import DEFAULT_TENANT, Tenant, scoped

if TYPE_CHECKING:
    from shared.engine import KYCDeepFace
    from shared.gallery.db import KYCDeepFaceDB
    from shared.jobs.resources import Resources

T = TypeVar("T")


class JobContext:
    """One job's view of its process: the engine, images, galleries, and per-stage seconds.

    Args:
        resources: the process's resources.
        timings: receives ``fetch_s`` and ``compute_s``, summed over the job's steps.
        tenant: the job's tenant; the galleries it names are that tenant's.
    """

    def __init__(self, resources: Resources, timings: dict[str, float], tenant: Tenant = DEFAULT_TENANT) -> None:
        self.resources = resources
        self.timings = timings
        self.tenant = tenant

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    @property
    def engine(self) -> KYCDeepFace:
        return self.resources.engine

    def gallery(self, name: str, create: bool = True) -> KYCDeepFaceDB:
        """The job's tenant's gallery ``name``: a handler cannot name another tenant's (see
        :meth:`Resources.gallery` for ``create``)."""
        return self.resources.gallery(scoped(self.tenant, name), create)

    def fetch(self, ref: Ref) -> bytes:
        """The referenced image's bytes, timed as ``fetch_s``."""
        start = time.perf_counter()
        try:
            return self.resources.images.get(ref)
        finally:
            self._add("fetch_s", start)

    def compute(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, timed as ``compute_s``."""
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._add("compute_s", start)

    def add(self, stage: str, seconds: float) -> None:
        """Count ``seconds`` to ``stage`` (a job's share of a step run for a whole batch)."""
        self.timings[stage] = round(self.timings.get(stage, 0.0) + seconds, 6)

    def _add(self, stage: str, start: float) -> None:
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.perf_counter() - start, 6)
