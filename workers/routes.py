"""Which task runs each job kind, and on which queue: the one place routing is decided.

Heavy (image decoding + networks) and light (feature arithmetic) work sit on separate queues so
they scale apart: ``celery -A workers worker -Q kyc.light`` can answer matches in milliseconds
while a backlog keeps ``kyc.heavy`` busy. This module imports nothing, so a producer can route
tasks by name without loading Celery workers or models.
"""

from __future__ import annotations

from kombu import Exchange, Queue

HEAVY_QUEUE = "kyc.heavy"
LIGHT_QUEUE = "kyc.light"
QUEUES = (HEAVY_QUEUE, LIGHT_QUEUE)

# job kind -> (task name, queue)
ROUTES: dict[str, tuple[str, str]] = {
    "faces": ("kyc.jobs.faces", HEAVY_QUEUE),
    "verify": ("kyc.jobs.verify", HEAVY_QUEUE),
    "match": ("kyc.jobs.match", LIGHT_QUEUE),
    # Gallery jobs: enrol and search may decode a probe image; a delete is one Redis call.
    "enroll": ("kyc.jobs.enroll", HEAVY_QUEUE),
    "search": ("kyc.jobs.search", HEAVY_QUEUE),
    "delete": ("kyc.jobs.delete", LIGHT_QUEUE),
}

# Periodic upkeep (celery beat), on the light queue: it only reads Redis and sends messages.
SWEEP_TASK = "kyc.maintenance.requeue_stale"


def route(kind: str) -> tuple[str, str]:
    """``(task name, queue)`` for a job kind.

    Raises:
        KeyError: no task serves this kind.
    """
    return ROUTES[kind]


def queues() -> list[Queue]:
    """The queues, each on its own direct exchange, as declared by workers and producers alike."""
    return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]


def task_routes() -> dict[str, dict[str, str]]:
    """Celery's ``task_routes`` setting, derived from :data:`ROUTES`."""
    return {name: {"queue": queue} for name, queue in ROUTES.values()} | {SWEEP_TASK: {"queue": LIGHT_QUEUE}}
