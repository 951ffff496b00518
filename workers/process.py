"""What a worker process does when it starts: checks in the parent, the resources in each child.

Models load in ``worker_process_init`` (each prefork child, right after the fork) and are warmed
there, so the first job pays nothing; a solo worker (``--pool solo``: one process that both
consumes and runs) loads them once it is ready, before its first message. onnxruntime gets
cores / pool size intra-op threads, so the pool's processes do not fight over the cores; several
solo workers on one host must say how many threads each takes (``KYC_INTRA_OP_THREADS``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import celeryd_after_setup, worker_process_init, worker_ready

from shared.config import Settings, get_settings
from shared.events import review, webhooks
from shared.jobs import resources as process_resources
from shared.jobs.model import JobDocument
from shared.jobs.resources import Resources
from workers import startup

log = logging.getLogger(__name__)

# The real pool size (``-c`` on the command line wins over KYC_WORKER_CONCURRENCY), set in the
# parent before the fork so the children inherit it.
_pool_size: int | None = None
# Whether this worker runs its tasks in its own process (``--pool solo``).
_solo = False


def is_solo() -> bool:
    """Whether this worker runs its tasks in its own process (``--pool solo``)."""
    return _solo


def settings() -> Settings:
    """The worker's settings, with the pool's real size."""
    base = get_settings()
    return base if _pool_size is None else base.model_copy(update={"worker_concurrency": _pool_size})


def resources() -> Resources:
    """This process's resources; the soft time limit is Celery's exception here."""
    found = process_resources.for_process(settings())
    found.interrupts = (SoftTimeLimitExceeded,)
    if found.settings.gallery_shards > 1 and found.fan_out is None:
        from workers.gallery_tasks import fan_out

        found.fan_out = fan_out
    if found.on_terminal is None:
        found.on_terminal = finish_hook(found)
    return found


def finish_hook(found: Resources) -> Callable[[Sequence[JobDocument]], None]:
    """What terminal jobs do once stored: their completion events (once each), their webhooks
    handed to the delivery task (never sent here), and a place in the review queue for those
    that need one."""
    from workers.webhook_task import schedule_webhook

    def on_terminal(docs: Sequence[JobDocument]) -> None:
        webhooks.on_terminal(found.redis, found.settings, docs, schedule=schedule_webhook)
        for doc in docs:
            review.consider(found.redis, found.settings, doc)

    return on_terminal


@celeryd_after_setup.connect
def _before_fork(sender: Any, instance: Any, **_: Any) -> None:
    global _pool_size, _solo
    _pool_size = int(instance.concurrency)
    _solo = getattr(instance.pool_cls, "__module__", "").endswith(".solo")
    startup.refuse_inside_celery(settings())


@worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    found = resources()
    engine = found.engine  # load and warm the models now, not in the first job
    log.info("worker process %d ready: %s, %d onnx threads", os.getpid(), engine.model_id,
             found.settings.onnx_threads())  # fmt: skip
    # Compile (first start) or load the gallery index's kernels now, not inside the first search.
    # numba costs ~110 MiB per process: a worker that never serves gallery jobs can skip it.
    if found.settings.worker_warm_gallery:
        from shared.gallery import kernels

        kernels.warm_up()


@worker_ready.connect
def _load_in_solo(**_: Any) -> None:
    # Sent in the consuming process: for prefork that is the parent, which must not load models.
    if _solo:
        _load_in_child()
