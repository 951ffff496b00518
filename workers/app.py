"""The Celery app, configured from the project settings for at-least-once execution.

Every queue-level policy lives here (acknowledgement, prefetch, time limits, visibility
timeout); the retry policy is the base class of every task, ``workers.policy.KYCTask``.
"""

from __future__ import annotations

from celery import Celery

from shared.config import Settings, get_settings
from shared.jobs.registry import HEAVY_QUEUE, LIGHT_QUEUE, WEBHOOK_QUEUE
from shared.producer import celery_config
from shared.storage.redis_client import broker_transport_options
from workers import broker, gallery_schedule
from workers.policy import KYCTask

# Periodic upkeep (celery beat), on the light queue: it only reads Redis and sends messages.
SWEEP_TASK = "kyc.maintenance.requeue_stale"
# One webhook attempt (workers/webhook_task.py), on its own queue: a slow receiver holds a
# delivery thread, never a job's slot.
WEBHOOK_TASK = "kyc.events.deliver_webhook"

# Celery kills a child whose worker_process_init handler runs longer than this (default 4 s);
# loading and warming the models can take longer on a cold disk.
PROCESS_INIT_TIMEOUT_S = 120.0


def lock_ttl_s(settings: Settings) -> float:
    """How long a job's run lock outlives its holder: past the hard time limit, so a lock only
    expires once its holder cannot possibly still be running."""
    return float(settings.task_time_limit_s + settings.lock_margin_s)


def visibility_timeout_s(settings: Settings) -> int:
    """Seconds a reserved message may stay unacknowledged before the broker redelivers it.

    It must outlast the hard time limit, or a slow job runs twice; and the longest countdown a
    retried message waits (backoff, or a busy job's run lock), or a retry is redelivered early.
    """
    longest_wait = max(settings.retry_backoff_max_s, lock_ttl_s(settings))
    return int(settings.task_time_limit_s + longest_wait + settings.redelivery_margin_s)


def create_app(settings: Settings) -> Celery:
    """A Celery app on ``KYC_BROKER_URL`` with the tasks of ``workers.tasks``."""
    app = Celery(
        "kycdeepface",
        broker=settings.resolved_broker_url(),
        include=[
            "workers.tasks",
            "workers.gallery_tasks",
            "workers.webhook_task",
            "workers.process",
            "workers.observability",
        ],
        task_cls=KYCTask,
    )
    shared_config = celery_config()
    routes = {
        **shared_config.pop("task_routes"),
        SWEEP_TASK: {"queue": LIGHT_QUEUE},
        WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE},
    }
    app.conf.update(
        **shared_config,
        # kombu's Redis transport, with a lost-connection crash worked around (see workers.broker).
        broker_transport=broker.transport_for(settings.resolved_broker_url()),
        # Job documents are the results; Celery's result backend would be a second copy.
        task_ignore_result=True,
        # Acknowledge after the job, and give the message back if the process dies mid-job.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # A task that raised has recorded what it could, and a job killed at the hard time limit
        # was failed first (workers.policy.KYCRequest): acknowledge both. A process lost any other
        # way still gives its message back (task_reject_on_worker_lost).
        task_acks_on_failure_or_timeout=True,
        # CPU-bound jobs: a worker process reserves one message at a time, so a long backlog
        # is spread over all processes and a crash loses no more than the running job.
        # With batching, each process needs a batch's worth of messages reserved to fill one.
        worker_prefetch_multiplier=settings.batch_size,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        broker_transport_options={
            "visibility_timeout": visibility_timeout_s(settings),
            # Messages reserved by a worker that died (or that lost Redis mid-job) come back
            # once invisible past the timeout; look for them every interval, not kombu's
            # default of every 10th interval (100 s).
            "unacked_restore_interval": settings.unacked_restore_interval_s,
            "unacked_restore_throttle": 1,
            # A Sentinel-managed primary (KYC_REDIS_SENTINELS): its name, and how long a Sentinel may take.
            **broker_transport_options(settings),
        },
        task_default_queue=HEAVY_QUEUE,
        task_routes=routes,
        worker_concurrency=settings.worker_processes(),
        worker_proc_alive_timeout=PROCESS_INIT_TIMEOUT_S,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Periodic upkeep, for ``celery -A workers beat`` (one beat per deployment).
        beat_schedule={
            SWEEP_TASK: {
                "task": SWEEP_TASK,
                "schedule": settings.sweep_interval_s,
                "options": {"queue": LIGHT_QUEUE, "expires": settings.sweep_interval_s},
            },
            **gallery_schedule.beat_entries(settings),
        },
    )
    return app


settings = get_settings()
app = create_app(settings)
