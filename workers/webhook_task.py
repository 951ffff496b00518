"""The webhook delivery task: one attempt per run, the next one scheduled after the backoff.

Not registered yet: the job-kind registry (or ``workers.app``'s includes) wires it, and the
worker's finish calls ``shared.events.webhooks.on_terminal(..., schedule=schedule_webhook)``.
It runs on its own task, never inside a job: a slow receiver costs a light-queue slot, not a
verify.
"""

from __future__ import annotations

from typing import Any

from shared.events.webhooks import Status, WebhookDelivery, attempt
from shared.jobs.store import redis_client
from workers.app import app, settings

TASK = "kyc.events.deliver_webhook"
QUEUE = "kyc.light"


@app.task(name=TASK, bind=True, acks_late=True, ignore_result=True)
def deliver_webhook(self: Any, delivery: dict[str, Any], number: int = 1) -> str:
    client = redis_client(str(settings.resolved_redis_url()))
    try:
        result = attempt(settings, client, WebhookDelivery.model_validate(delivery), number)
    finally:
        client.close()
    if result.status is Status.RETRY:
        self.apply_async(args=(delivery, number + 1), countdown=result.retry_in_s, queue=QUEUE)
    return result.status.value


def schedule_webhook(delivery: WebhookDelivery) -> None:
    """The ``schedule`` argument of ``on_terminal``: enqueue attempt 1."""
    deliver_webhook.apply_async(args=(delivery.model_dump(), 1), queue=QUEUE)
