"""Bounded streams: the intake stream keeps only what is still to do, however many requests went
through it, and the completion, rejects and dead-letter streams stay near their caps.

The intake consumer is the real one (two of them, sharing the group) on the real producer; the
completions and the dead letters are written by the real hooks, with jobs finished as a worker
finishes them (no models: this is plumbing).
"""

from __future__ import annotations

import json

import pytest
import redis

from shared.config import Settings
from shared.events.consumer import Consumer, default_routes
from shared.events.model import Outcome
from shared.events.webhooks import Status, WebhookDelivery, attempt, on_terminal
from shared.events.wiring import producer_submit, validator
from shared.jobs import JobDocument
from shared.producer import Producer
from tests.conftest import S3Endpoint
from tests.shared.events.conftest import make_settings

# About 15 s on two shared cores: 10,000 requests through the real producer, which the bound is about.
pytestmark = [pytest.mark.services, pytest.mark.slow]

REQUESTS, MALFORMED = 9_000, 1_000
# XADD MAXLEN ~ trims whole stream nodes (stream-node-max-entries, 100 by default): a stream
# stays within its cap plus one node.
NODE = 100


@pytest.fixture()
def capped(redis_url: str, s3: S3Endpoint) -> Settings:
    return make_settings(
        redis_url,
        s3,
        events_batch=500,
        events_stream_max_len=1_000,
        events_rejects_max_len=200,
        webhook_dead_max_len=200,
    )


def test_ten_thousand_intake_entries_leave_the_streams_within_their_bounds(
    client: redis.Redis, capped: Settings
) -> None:
    stream = capped.events_intake_stream
    pipe = client.pipeline(transaction=False)
    for n in range(REQUESTS + MALFORMED):
        if n % 10 == 9:  # every tenth is malformed: a reject
            pipe.xadd(stream, {"kind": "faces", "image": f"/etc/passwd-{n}"})
        else:
            pipe.xadd(stream, {"kind": "faces", "image": f"s3://kyc-images/bulk/{n}.jpg", "tenant": "acme"})
    pipe.execute()
    producer = Producer(capped)
    try:
        validate, submit = validator(capped, producer.images.validate), producer_submit(producer)
        consumers = [
            Consumer(client, capped, default_routes(client, capped, validate, submit, consumer=f"c-{n}"))
            for n in (1, 2)
        ]
        handled = 0
        while handled < REQUESTS + MALFORMED:
            for consumer in consumers:  # two consumers of the group, taking turns
                batch = consumer.run_once()
                handled += batch[Outcome.CREATED] + batch[Outcome.REJECTED]
                # What is left is exactly what was never read: handled entries are gone.
                assert client.xlen(stream) == REQUESTS + MALFORMED - handled
    finally:
        producer.close()
    totals = sum((c.counts for c in consumers), start=consumers[0].counts.__class__())
    assert totals[Outcome.CREATED] == REQUESTS and totals[Outcome.REJECTED] == MALFORMED
    assert client.xlen(stream) == 0
    assert client.xpending(stream, capped.events_group)["pending"] == 0
    assert client.xlen(capped.events_rejects_stream) <= capped.events_rejects_max_len + NODE

    # The completions of those jobs, as the workers' finish hook publishes them.
    docs = [
        JobDocument.new("faces", {"image": f"s3://kyc-images/bulk/{n}.jpg"}, f"done-{n}")
        .running(1)
        .succeeded({"code": "SUCCESS", "faces": []})
        for n in range(3_000)
    ]
    for start in range(0, len(docs), 500):
        on_terminal(client, capped, docs[start : start + 500], schedule=lambda _: None)
    assert capped.events_stream_max_len <= client.xlen(capped.events_completed_stream)
    assert client.xlen(capped.events_completed_stream) <= capped.events_stream_max_len + NODE

    # Dead letters: a callback refused at delivery is dead at once, 1,000 times.
    for n in range(1_000):
        delivery = WebhookDelivery(msg_id=f"msg_{n}", tenant="nobody", url="https://x.example/h", event={"n": str(n)})
        assert attempt(capped, client, delivery, 1).status is Status.DEAD
    assert client.xlen(capped.webhook_dead_stream) <= capped.webhook_dead_max_len + NODE
    dead = client.xrevrange(capped.webhook_dead_stream, count=1)[0][1]
    assert json.loads(dead[b"delivery"])["msg_id"] == "msg_999"  # the newest are kept
