"""Test only: an image store double that SIGKILLs its own process when asked for an image whose
key holds :data:`POISON_MARKER`, for a worker started with ``-I tests.workers.poison_store``.

It stands for a poison image: one that crashes its decoder in native code, or has the OOM killer
take the process, every time it is read. Every other reference is read from the real store.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from celery.signals import worker_process_init

from shared.storage.base import ImageStore
from shared.storage.refs import Ref
from workers import process

POISON_MARKER = "poison-"


class PoisonImageStoreDouble:
    """The process's image store, except that reading a poison image kills the process."""

    def __init__(self, inner: ImageStore) -> None:
        self.inner = inner

    def get(self, ref: str | Ref) -> bytes:
        if POISON_MARKER in (ref if isinstance(ref, str) else ref.key):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.get(ref)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@worker_process_init.connect
def _install(**_: Any) -> None:
    found = process.resources()
    found._images = PoisonImageStoreDouble(found.images)  # type: ignore[assignment]
