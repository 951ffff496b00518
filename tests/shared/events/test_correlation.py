"""A fire-and-forget producer can tell which answer is its own: its ``reference`` and the intake
entry travel with the job to the completion event and the webhook, and the derived job id is a
documented function of the tenant and the request."""

from __future__ import annotations

import hashlib
import json

import pytest
import redis

from shared.config import Settings
from shared.events.consumer import Consumer
from shared.events.webhooks import Status, WebhookDelivery, deliver, on_terminal
from shared.jobs.store import JobStore
from tests.shared.events.conftest import Receiver, job_ids

pytestmark = pytest.mark.services

SELFIE = "s3://kyc-images/selfies/case-7/selfie.jpg"
DOCUMENT = "s3://kyc-images/documents/case-7/passport.jpg"


def recipe(tenant: str, fields: dict[str, str]) -> str:
    """docs/EVENTS.md's recipe, as a producer in another language would follow it."""
    parts = [tenant] + [f"{name}={fields[name]}" for name in sorted(fields)]
    return "in-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def test_a_reference_and_the_entry_reach_the_event_and_the_webhook(
    client: redis.Redis, ev_settings: Settings, consumer: Consumer, receiver: Receiver
) -> None:
    fields = {"kind": "verify", "selfie": SELFIE, "document": DOCUMENT, "reference": "onboarding-7f3a/try-2",
              "callback_url": receiver.url}  # fmt: skip
    entry_id = client.xadd(ev_settings.events_intake_stream, {**fields, "tenant": "acme"}).decode()
    consumer.run(max_batches=1)
    job_id = recipe("acme", fields)
    assert job_ids(client) == [f"acme/{job_id}"]
    doc = JobStore(ev_settings, client).get(f"acme/{job_id}")
    assert doc is not None and doc.reference == "onboarding-7f3a/try-2"
    assert doc.origin is not None and (doc.origin.source, doc.origin.entry_id) == (
        ev_settings.events_intake_stream,
        entry_id,
    )

    final = doc.running(1).succeeded({"code": "SUCCESS", "verified": True, "confidence": 0.93})
    scheduled: list[WebhookDelivery] = []
    [published] = on_terminal(client, ev_settings, [final], schedule=scheduled.append)
    assert published is not None
    [(_, raw)] = client.xrange(ev_settings.events_completed_stream)
    event = {k.decode(): v.decode() for k, v in raw.items()}
    assert event["job_id"] == job_id and event["reference"] == "onboarding-7f3a/try-2"
    assert (event["source"], event["entry_id"]) == (ev_settings.events_intake_stream, entry_id)

    [delivery] = scheduled
    assert deliver(ev_settings, client, delivery).status is Status.DELIVERED
    [call] = receiver.calls
    data = call["payload"]["data"]
    assert call["valid"] and data["reference"] == "onboarding-7f3a/try-2" and data["entry_id"] == entry_id
    assert data["source"] == ev_settings.events_intake_stream and data["job_id"] == job_id


def test_the_derived_id_is_stable_and_independent_of_the_entry(
    client: redis.Redis, ev_settings: Settings, consumer: Consumer
) -> None:
    """The same request twice (a producer's retry), as flat fields and as JSON on the list: one job."""
    fields = {"kind": "faces", "image": SELFIE, "reference": "r-1"}
    client.xadd(ev_settings.events_intake_stream, {**fields, "tenant": "acme"})
    client.xadd(ev_settings.events_intake_stream, {"request": json.dumps({**fields, "tenant": "acme"})})
    client.lpush(ev_settings.events_intake_list, json.dumps({**fields, "tenant": "acme"}))
    consumer.run(max_batches=2)
    assert job_ids(client) == [f"acme/{recipe('acme', fields)}"]
    # Another tenant, or another reference, is another request.
    client.xadd(ev_settings.events_intake_stream, {**fields, "reference": "r-2", "tenant": "acme"})
    client.xadd(ev_settings.events_intake_stream, fields)
    consumer.run(max_batches=1)
    assert sorted(job_ids(client)) == sorted(
        [f"acme/{recipe('acme', fields)}", f"acme/{recipe('acme', {**fields, 'reference': 'r-2'})}",
         recipe("default", fields)]
    )  # fmt: skip


def test_an_http_job_keeps_its_reference(client: redis.Redis, ev_settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from api_stub.app import create_app
    from shared.config import ApiKey
    from shared.producer import Producer
    from shared.tenants import Scope

    settings = ev_settings.model_copy(update={"api_keys": {"k": ApiKey.of("corr-key", list(Scope), tenant="acme")}})
    producer = Producer(settings)
    try:
        with TestClient(create_app(settings, producer), headers={"X-API-Key": "corr-key"}) as api:
            answer = api.post("/v1/jobs", json={"kind": "faces", "image": SELFIE, "reference": "crm-991"})
        assert answer.status_code == 202, answer.text
        assert answer.json()["reference"] == "crm-991" and answer.json()["origin"] is None
    finally:
        producer.close()
