"""The worker's observability, wired by Celery signals: its log format and its metrics endpoint.

``KYC_LOG_FORMAT=json`` gives Celery's own handlers the JSON formatter of :mod:`shared.logs`.
``KYC_METRICS_PORT`` serves the host's Prometheus metrics.

The parent serves the sum of its pool processes' metrics (see :mod:`shared.metrics`); the
jobs themselves are counted where their terminal document is stored (``shared.jobs.runner``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_after_setup, worker_process_shutdown

from shared import logs, metrics
from shared.jobs.registry import QUEUES
from shared.storage.redis_client import redis_client
from workers import process

log = logging.getLogger(__name__)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: Any) -> None:
    logs.apply(process.settings(), logger)


@celeryd_after_setup.connect
def _serve(**_: Any) -> None:
    settings = process.settings()
    if settings.metrics_port is None or not settings.broker_url:
        return
    metrics.serve_worker(settings, redis_client(settings.broker_url, settings), QUEUES)
    log.info("metrics on port %d", settings.metrics_port)


@worker_process_shutdown.connect
def _child_exited(**_: Any) -> None:
    metrics.child_exited(os.getpid())
