"""What a worker process builds once and reuses for every task: the engine, the stores.

Models load in ``worker_process_init`` (each prefork child, right after the fork) and are warmed
there, so the first job pays nothing; a pool without that signal (solo, threads) loads lazily on
its first task. onnxruntime gets cores / pool size intra-op threads, so the pool's processes do
not fight over the cores.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery.signals import celeryd_after_setup, worker_process_init

from shared.config import Settings
from shared.jobs import JobStore
from shared.storage import RoutingStore, store_for
from workers import startup

if TYPE_CHECKING:
    from shared.engine import KYCDeepFace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    settings: Settings
    engine: KYCDeepFace
    images: RoutingStore
    jobs: JobStore


_lock = threading.Lock()
_pool_size: int | None = None
_resources: dict[int, Resources] = {}


def build(settings: Settings) -> Resources:
    """Load and warm the engine, and connect the stores (the slow part of a worker's start)."""
    from shared.engine import KYCDeepFace

    if _pool_size is not None:
        # The real pool size (``-c`` on the command line wins over KYC_WORKER_CONCURRENCY).
        settings = settings.model_copy(update={"worker_concurrency": _pool_size})
    engine = KYCDeepFace(verify_confidence=settings.verify_confidence, settings=settings)
    engine.warm_up()
    log.info("worker process %d ready: %s, %d onnx threads", os.getpid(), engine.model_id, settings.onnx_threads())
    return Resources(settings=settings, engine=engine, images=store_for(settings), jobs=JobStore(settings))


def get(settings: Settings) -> Resources:
    """This process's resources, built on first use (keyed by pid: never shared across a fork)."""
    pid = os.getpid()
    with _lock:
        found = _resources.get(pid)
        if found is None:
            found = _resources[pid] = build(settings)
        return found


@celeryd_after_setup.connect
def _before_fork(sender: Any, instance: Any, **_: Any) -> None:
    # Runs in the worker's parent process; the children inherit _pool_size.
    from workers.app import settings

    global _pool_size
    _pool_size = int(instance.concurrency)
    startup.check(settings)


@worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    from workers.app import settings

    get(settings)
