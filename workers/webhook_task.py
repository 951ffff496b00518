"""The webhook delivery task: one attempt per run, the next one scheduled after the backoff.

The worker's finish hook (``workers.process``) calls ``shared.events.webhooks.on_terminal(...,
schedule=schedule_webhook)``; the delivery then runs as its own task on its own queue
(``kyc.webhooks``), never inside a job nor on a job queue: served by a thread pool
(``kycface worker --queues kyc.webhooks --pool threads``), a receiver that trickles holds one
thread for at most ``KYC_WEBHOOK_ATTEMPT_DEADLINE_S``, and no job waits behind it. The policy is
the app's (``workers.policy.KYCTask``); the webhook's own attempts and backoff are counted in the
delivery.
"""

from __future__ import annotations

from typing import Any

from shared.events.webhooks import Status, WebhookDelivery, attempt
from shared.jobs.registry import WEBHOOK_QUEUE
from workers import process
from workers.app import WEBHOOK_TASK, app
from workers.policy import KYCTask


@app.task(name=WEBHOOK_TASK, base=KYCTask, bind=True, acks_late=True, ignore_result=True)
def deliver_webhook(self: KYCTask, delivery: dict[str, Any], number: int = 1) -> str:
    resources = process.resources()
    result = attempt(resources.settings, resources.redis, WebhookDelivery.model_validate(delivery), number)
    if result.status is Status.RETRY:
        self.apply_async(args=(delivery, number + 1), countdown=result.retry_in_s, queue=WEBHOOK_QUEUE)
    return result.status.value


def schedule_webhook(delivery: WebhookDelivery) -> None:
    """The ``schedule`` argument of ``on_terminal``: enqueue attempt 1."""
    deliver_webhook.apply_async(args=(delivery.model_dump(), 1), queue=WEBHOOK_QUEUE)
