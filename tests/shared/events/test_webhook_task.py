"""The webhook task (workers/webhook_task.py), beside the fixtures of the delivery tests: each run is one attempt, and a failed one schedules the next."""

from __future__ import annotations

import pytest
import redis

from shared.config import Settings
from shared.events.webhooks import WebhookDelivery
from tests.shared.events.conftest import Receiver

pytestmark = pytest.mark.services


@pytest.mark.parametrize("receiver", [2], indirect=True)
def test_the_task_retries_itself_until_the_receiver_takes_it(
    monkeypatch: pytest.MonkeyPatch, client: redis.Redis, ev_settings: Settings, receiver: Receiver
) -> None:
    from shared.jobs.resources import Resources
    from workers import process, webhook_task

    # Eager: apply_async runs at once (the countdown is the broker's business), so the chain of
    # attempts runs here; the task reads the test's settings and Redis.
    resources = Resources(ev_settings)
    monkeypatch.setattr(process, "resources", lambda: resources)
    delivery = WebhookDelivery(msg_id="msg_case-7", tenant="acme", url=receiver.url, event={"job_id": "case-7"})
    webhook_task.app.conf.task_always_eager = True
    try:
        webhook_task.schedule_webhook(delivery)
    finally:
        webhook_task.app.conf.task_always_eager = False
        resources.close()
    assert [c["valid"] for c in receiver.calls] == [True, True, True]
