"""A webhook attempt ends by its total deadline whatever the receiver does: a tarpit that
trickles its answer (or a TLS handshake) a byte a second, and an answer that never ends is read
only up to the cap."""

from __future__ import annotations

import time

import pytest
import redis

from harness.tarpit import Tarpit
from shared.config import Settings
from shared.events.webhooks import Status, WebhookDelivery, attempt

pytestmark = pytest.mark.services

DEADLINE_S = 1.5


def delivery(url: str) -> WebhookDelivery:
    return WebhookDelivery(msg_id="msg_tarpit", tenant="acme", url=url, event={"job_id": "tarpit"})


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_trickling_receiver_is_cut_at_the_deadline(client: redis.Redis, ev_settings: Settings, scheme: str) -> None:
    # webhook_timeout_s bounds each read; a byte every 0.2 s resets it, the deadline does not.
    settings = ev_settings.model_copy(update={"webhook_attempt_deadline_s": DEADLINE_S, "webhook_timeout_s": 5.0})
    with Tarpit("trickle", interval_s=0.2) as tarpit:
        # Over https the trickle is what the TLS handshake reads: it never completes either.
        url = tarpit.url.replace("http://", f"{scheme}://")
        start = time.monotonic()
        result = attempt(settings, client, delivery(url), 1)
        took = time.monotonic() - start
    assert result.status is Status.RETRY and "deadline" in result.reason, result
    assert DEADLINE_S - 0.1 < took < DEADLINE_S + 1.0, took
    assert tarpit.started == 1


def test_an_endless_answer_is_read_up_to_the_cap(client: redis.Redis, ev_settings: Settings) -> None:
    settings = ev_settings.model_copy(update={"webhook_attempt_deadline_s": 5.0, "webhook_max_response_bytes": 4096})
    with Tarpit("endless") as tarpit:
        start = time.monotonic()
        result = attempt(settings, client, delivery(tarpit.url), 1)
        took = time.monotonic() - start
    assert result.status is Status.DELIVERED, result  # the status line said 200; the body is never used
    assert took < 2.0, took


def test_without_a_cap_an_endless_answer_is_drained_until_the_deadline(
    client: redis.Redis, ev_settings: Settings
) -> None:
    """The deadline also bounds the drain a cap would not (one larger than the answer's rate
    allows): the 200 came in time, so the delivery counts, and the attempt still ends on time."""
    settings = ev_settings.model_copy(
        update={"webhook_attempt_deadline_s": DEADLINE_S, "webhook_max_response_bytes": 1 << 34}
    )
    with Tarpit("endless") as tarpit:
        start = time.monotonic()
        result = attempt(settings, client, delivery(tarpit.url), 1)
        took = time.monotonic() - start
    assert result.status is Status.DELIVERED, result
    assert DEADLINE_S - 0.1 < took < DEADLINE_S + 1.0, took
