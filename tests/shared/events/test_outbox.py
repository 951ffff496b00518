"""Completion events on a stream read once per consumer group, and signed webhooks delivered
with backoff to a local receiver, refused for hosts a tenant may not call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from shared.config import Settings
from shared.events.callbacks import check_callback
from shared.events.consumer import Consumer
from shared.events.model import CallbackRefusedError
from shared.events.outbox import EVENT_FIELDS
from shared.events.webhooks import Status, WebhookDelivery, backoff_s, deliver, on_terminal
from shared.jobs import JobDocument
from shared.jobs.store import JobStore
from shared.tenants import DEFAULT_TENANT, Tenant
from tests.conftest import S3Endpoint
from tests.shared.events.conftest import Receiver, make_settings

pytestmark = pytest.mark.services

FEATURES = "mobilefacenet:AAAA"  # stands for a template: it must never reach an event


def finished(job_id: str = "case-1:verify", tenant: Tenant = DEFAULT_TENANT) -> JobDocument:
    inputs = {"selfie": "s3://kyc-images/s.jpg", "document": "s3://kyc-images/d.jpg"}
    doc = JobDocument.new("verify", inputs, job_id, tenant)
    result = {"code": "SUCCESS", "verified": True, "confidence": 0.912345678, "features": FEATURES}
    return doc.running(1).succeeded(result)


def no_webhook(delivery: WebhookDelivery) -> None:
    raise AssertionError(f"{delivery.msg_id}: a job without a callback has no webhook")


def test_a_completion_event_is_read_once_per_consumer_group(client: redis.Redis, ev_settings: Settings) -> None:
    stream = ev_settings.events_completed_stream
    for group in ("onboarding", "analytics"):
        client.xgroup_create(stream, group, id="0", mkstream=True)
    doc = finished()
    [published] = on_terminal(client, ev_settings, [doc], schedule=no_webhook)
    assert published is not None
    assert on_terminal(client, ev_settings, [doc], schedule=no_webhook) == [None]  # a re-run finish publishes nothing
    for group in ("onboarding", "analytics"):
        [(_, entries)] = client.xreadgroup(group, "c1", {stream: ">"}, count=10)
        assert len(entries) == 1
        entry_id, fields = entries[0]
        event = {k.decode(): v.decode() for k, v in fields.items()}
        assert tuple(event) == EVENT_FIELDS and FEATURES not in json.dumps(event)
        assert event["job_id"] == "case-1:verify" and event["status"] == "succeeded" and event["code"] == "SUCCESS"
        assert event["verified"] == "true" and event["confidence"] == "0.912346" and event["tenant"] == "default"
        client.xack(stream, group, entry_id)
        assert client.xreadgroup(group, "c2", {stream: ">"}, count=10) == []
    assert client.xlen(stream) == 1


def test_the_events_tenant_is_the_jobs_own(client: redis.Redis, ev_settings: Settings) -> None:
    # A job submitted through the producer library or the CLI leaves no meta beside its document.
    for tenant in ("acme", "beta"):
        assert on_terminal(client, ev_settings, [finished("case-1:verify", Tenant(tenant))], no_webhook) != [None]
    entries = client.xrange(ev_settings.events_completed_stream)
    assert [(f[b"job_id"], f[b"tenant"]) for _, f in entries] == [
        (b"case-1:verify", b"acme"),
        (b"case-1:verify", b"beta"),
    ]


def test_the_stream_is_trimmed_by_length(client: redis.Redis, redis_url: str, s3: S3Endpoint) -> None:
    settings = make_settings(redis_url, s3, events_stream_max_len=100)
    for n in range(0, 1000, 10):
        on_terminal(client, settings, [finished(f"job-{m}") for m in range(n, n + 10)], schedule=no_webhook)
    assert 100 <= client.xlen(settings.events_completed_stream) < 1000


def submit_with_callback(
    client: redis.Redis, settings: Settings, consumer: Consumer, url: str, job_id: str = "case-1:verify"
) -> JobDocument:
    """A verify request with a callback through the intake, finished as a worker would."""
    fields = {"kind": "verify", "selfie": "s3://kyc-images/s.jpg", "document": "s3://kyc-images/d.jpg",
              "job_id": job_id, "tenant": "acme", "callback_url": url}  # fmt: skip
    client.xadd(settings.events_intake_stream, fields)
    consumer.run(max_batches=1)
    doc = JobStore(settings, client).get(f"acme/{job_id}")
    assert doc is not None
    return doc.running(1).succeeded({"code": "SUCCESS", "verified": False, "confidence": 0.12, "features": FEATURES})


def test_the_receiver_gets_a_valid_signature(
    client: redis.Redis, ev_settings: Settings, consumer: Consumer, receiver: Receiver
) -> None:
    doc = submit_with_callback(client, ev_settings, consumer, receiver.url)
    scheduled: list[WebhookDelivery] = []
    assert on_terminal(client, ev_settings, [doc], schedule=scheduled.append) != [None]
    assert on_terminal(client, ev_settings, [doc], schedule=scheduled.append) == [None]
    assert len(scheduled) == 1 and receiver.calls == []  # scheduled, not sent from the worker
    assert scheduled[0].event == publish_event_of(client, ev_settings)
    result = deliver(ev_settings, client, scheduled[0])
    assert result.status is Status.DELIVERED and result.attempt == 1
    [call] = receiver.calls
    assert call["valid"] and call["id"] == "msg_case-1:verify"
    assert call["payload"]["type"] == "job.completed"
    data = call["payload"]["data"]
    assert data["job_id"] == "case-1:verify" and data["tenant"] == "acme" and data["verified"] == "false"
    assert FEATURES not in json.dumps(call["payload"])


def publish_event_of(client: redis.Redis, settings: Settings) -> dict[str, str]:
    [(_, fields)] = client.xrange(settings.events_completed_stream)
    return {k.decode(): v.decode() for k, v in fields.items()}


def test_a_webhook_the_broker_could_not_take_is_scheduled_by_the_retry(
    client: redis.Redis, ev_settings: Settings, consumer: Consumer, receiver: Receiver
) -> None:
    doc = submit_with_callback(client, ev_settings, consumer, receiver.url)

    def broker_down(delivery: WebhookDelivery) -> None:
        raise ConnectionError("broker away")

    with pytest.raises(ConnectionError):
        on_terminal(client, ev_settings, [doc], schedule=broker_down)
    scheduled: list[WebhookDelivery] = []
    on_terminal(client, ev_settings, [doc], schedule=scheduled.append)  # the worker's retry
    on_terminal(client, ev_settings, [doc], schedule=scheduled.append)
    assert len(scheduled) == 1 and client.xlen(ev_settings.events_completed_stream) == 1


def test_a_chunks_webhooks_the_broker_stopped_taking_are_scheduled_by_the_retry(
    client: redis.Redis, ev_settings: Settings, consumer: Consumer, receiver: Receiver
) -> None:
    """A chunk's completions in one call: when the broker fails on the second webhook, the
    retry schedules the second and third, and the first is not scheduled twice."""
    docs = [submit_with_callback(client, ev_settings, consumer, receiver.url, f"case-{n}:verify") for n in (1, 2, 3)]
    scheduled: list[WebhookDelivery] = []

    def broker_fails_on_second(delivery: WebhookDelivery) -> None:
        if scheduled:
            raise ConnectionError("broker away")
        scheduled.append(delivery)

    with pytest.raises(ConnectionError):
        on_terminal(client, ev_settings, docs, schedule=broker_fails_on_second)
    assert [d.msg_id for d in scheduled] == ["msg_case-1:verify"]
    assert on_terminal(client, ev_settings, docs, schedule=scheduled.append) == [None, None, None]  # published once
    assert [d.msg_id for d in scheduled] == [f"msg_case-{n}:verify" for n in (1, 2, 3)]
    assert client.xlen(ev_settings.events_completed_stream) == 3


def test_a_forged_signature_is_refused_by_the_receiver(
    client: redis.Redis, redis_url: str, s3: S3Endpoint, receiver: Receiver
) -> None:
    """The receiver's check is real: a delivery signed with another secret fails it."""
    forger = make_settings(
        redis_url, s3, webhook_max_attempts=1, webhook_secrets={"acme": "whsec_b3RoZXItc2VjcmV0LWtleS0wMTIzNDU2Nzg5"}
    )
    delivery = WebhookDelivery(msg_id="msg_x", tenant="acme", url=receiver.url, event={"job_id": "x"})
    assert deliver(forger, client, delivery).status is Status.DEAD
    assert [c["valid"] for c in receiver.calls] == [False]


@pytest.mark.parametrize("receiver", [2], indirect=True)
def test_a_receiver_that_fails_twice_gets_it_on_the_third_try(
    client: redis.Redis, ev_settings: Settings, receiver: Receiver
) -> None:
    delivery = WebhookDelivery(msg_id="msg_case-2", tenant="acme", url=receiver.url, event={"job_id": "case-2"})
    slept: list[float] = []
    result = deliver(ev_settings, client, delivery, sleep=slept.append)
    assert result.status is Status.DELIVERED and result.attempt == 3
    assert [c["valid"] for c in receiver.calls] == [True, True, True]
    assert len({c["id"] for c in receiver.calls}) == 1  # one webhook-id: the receiver can drop repeats
    assert slept == [backoff_s(ev_settings, 1), backoff_s(ev_settings, 2)] == [2.0, 4.0]


@pytest.mark.parametrize("receiver", [99], indirect=True)
def test_a_dead_letter_after_the_last_attempt(
    client: redis.Redis, s3: S3Endpoint, ev_settings: Settings, receiver: Receiver
) -> None:
    settings = make_settings(str(ev_settings.broker_url), s3, webhook_max_attempts=3)
    delivery = WebhookDelivery(msg_id="msg_case-3", tenant="acme", url=receiver.url, event={"job_id": "case-3"})
    result = deliver(settings, client, delivery, sleep=lambda s: None)
    assert result.status is Status.DEAD and len(receiver.calls) == 3
    [(_, fields)] = client.xrange(settings.webhook_dead_stream)
    assert fields[b"job_id"] == b"case-3" and fields[b"attempts"] == b"3" and b"500" in fields[b"reason"]
    assert WebhookDelivery.model_validate_json(fields[b"delivery"]) == delivery  # replayable


def test_backoff_doubles_up_to_its_cap(redis_url: str, s3: S3Endpoint) -> None:
    settings = make_settings(redis_url, s3, webhook_backoff_s=1.0, webhook_backoff_max_s=30.0)
    assert [backoff_s(settings, n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


@pytest.mark.parametrize(
    ("tenant", "url", "why"),
    [
        ("acme", "https://evil.example/x", "allow-list"),
        ("other", "http://127.0.0.1/x", "allow-list"),  # allowed for acme only
        ("acme", "https://localhost/x", "allow-list"),
        ("acme", "ftp://127.0.0.1/x", "http(s)"),
        ("acme", "http://user:pw@127.0.0.1/x", "credentials"),
        ("lab", "https://127.0.0.2/x", "private"),
        ("lab", "https://169.254.169.254/latest", "private"),
        ("lab", "https://[::ffff:10.0.0.1]/x", "private"),
        ("lab", "https://[::1]/x", "private"),
        ("lab", "http://93.184.216.34/x", "https"),
        ("lab", "https://localhost/x", "private"),  # a name that resolves to loopback
    ],
)
def test_callbacks_are_refused(redis_url: str, s3: S3Endpoint, tenant: str, url: str, why: str) -> None:
    lab = ["127.0.0.2", "169.254.169.254", "::ffff:10.0.0.1", "::1", "93.184.216.34", "localhost"]
    settings = make_settings(redis_url, s3, webhook_allowed_hosts={"acme": ["127.0.0.1"], "lab": lab})
    with pytest.raises(CallbackRefusedError, match=why.replace("(", r"\(").replace(")", r"\)")):
        check_callback(settings, tenant, url)


def test_an_allowed_callback_pins_the_checked_address(redis_url: str, s3: S3Endpoint) -> None:
    settings = make_settings(redis_url, s3, webhook_allowed_hosts={"acme": ["*.acme.example", "93.184.216.34"]})
    checked = check_callback(settings, "acme", "https://93.184.216.34:8443/hook")
    assert (checked.addresses, checked.port, checked.scheme) == (("93.184.216.34",), 8443, "https")
    with pytest.raises(CallbackRefusedError, match="allow-list"):
        check_callback(settings, "acme", "https://acme.example/hook")  # "*." matches subdomains only


def test_https_delivery_checks_the_certificate_of_the_host(
    client: redis.Redis, redis_url: str, s3: S3Endpoint, tls_receiver: Receiver, tls_ca: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The connection goes to the checked address, but TLS (SNI, certificate) is for the host name."""
    settings = make_settings(
        redis_url, s3, webhook_allowed_hosts={"acme": ["localhost"]}, webhook_allow_private=["localhost"]
    )
    delivery = WebhookDelivery(msg_id="msg_tls", tenant="acme", url=tls_receiver.url, event={"job_id": "tls"})
    untrusted = deliver(settings.model_copy(update={"webhook_max_attempts": 1}), client, delivery)
    assert untrusted.status is Status.DEAD and "SSL" in untrusted.reason and tls_receiver.calls == []
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_ca))
    assert deliver(settings, client, delivery).status is Status.DELIVERED
    assert [c["valid"] for c in tls_receiver.calls] == [True]
