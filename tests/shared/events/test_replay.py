"""``kycface webhooks replay``: a dead-lettered webhook is delivered once more, with the same
``webhook-id``, and a second replay sends nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from shared.config import Settings
from shared.events.replay import replay, since_id
from shared.events.webhooks import Status, WebhookDelivery, attempt
from tests.conftest import ROOT, S3Endpoint, pipeline_env
from tests.shared.events.conftest import Receiver

pytestmark = pytest.mark.services

CLI = "from shared.cli.main import main; raise SystemExit(main())"


def dead_letter(client: redis.Redis, settings: Settings, receiver: Receiver, job_id: str, tenant: str) -> None:
    delivery = WebhookDelivery(
        msg_id=f"msg_{job_id}", tenant=tenant, url=receiver.url, event={"job_id": job_id, "status": "succeeded"}
    )
    assert attempt(settings, client, delivery, settings.webhook_max_attempts).status is Status.DEAD


def kycface(settings: Settings, s3: S3Endpoint, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = pipeline_env(
        redis_url,
        s3,
        KYC_WEBHOOK_ALLOWED_HOSTS=json.dumps(settings.webhook_allowed_hosts),
        KYC_WEBHOOK_ALLOW_PRIVATE=json.dumps(settings.webhook_allow_private),
        KYC_WEBHOOK_SECRETS=json.dumps({k: v.get_secret_value() for k, v in settings.webhook_secrets.items()}),
    )
    return subprocess.run(
        [sys.executable, "-c", CLI, "webhooks", "replay", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("receiver", [1], indirect=True)  # the receiver fails the first delivery
def test_a_dead_letter_is_replayed_once_with_the_same_webhook_id(
    client: redis.Redis, ev_settings: Settings, receiver: Receiver, s3: S3Endpoint, redis_url: str
) -> None:
    settings = ev_settings.model_copy(update={"webhook_max_attempts": 1})
    dead_letter(client, settings, receiver, "case-1:verify", "acme")
    assert [call["id"] for call in receiver.calls] == ["msg_case-1:verify"]  # answered 500: dead
    [(_, letter)] = client.xrange(settings.webhook_dead_stream)
    assert letter[b"reason"] == b"receiver answered 500" and letter[b"attempts"] == b"1"

    run = kycface(settings, s3, redis_url)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split("\t")[1:] == ["msg_case-1:verify", "acme", "delivered\n"]
    assert "delivered: 1" in run.stderr
    assert [(call["id"], call["valid"]) for call in receiver.calls] == [
        ("msg_case-1:verify", True),
        ("msg_case-1:verify", True),  # the same webhook-id: a receiver that dedupes sees one delivery
    ]
    assert receiver.calls[1]["payload"]["data"]["job_id"] == "case-1:verify"
    assert client.xlen(settings.webhook_dead_stream) == 0

    again = kycface(settings, s3, redis_url)  # nothing left to replay
    assert again.returncode == 0 and again.stdout == "" and len(receiver.calls) == 2


def test_a_replay_sends_each_letter_once_and_keeps_to_its_tenant_and_time(
    client: redis.Redis, ev_settings: Settings, receiver: Receiver
) -> None:
    settings = ev_settings.model_copy(
        update={"webhook_max_attempts": 1, "webhook_allowed_hosts": {"acme": ["127.0.0.1"], "beta": ["127.0.0.1"]},
                "webhook_secrets": {**ev_settings.webhook_secrets, "beta": ev_settings.webhook_secrets["acme"]}}
    )  # fmt: skip
    receiver.fail_first = 3  # the three first deliveries fail: three dead letters
    for job_id, tenant in (("old", "acme"), ("beta-1", "beta"), ("new", "acme")):
        dead_letter(client, settings, receiver, job_id, tenant)
    ids = [entry_id.decode() for entry_id, _ in client.xrange(settings.webhook_dead_stream)]
    assert [(r.msg_id, r.outcome) for r in replay(settings, client, since=ids[1], tenant="acme")] == [
        ("msg_new", "delivered")
    ]
    # A replay that dies after the attempt, before the letter left the stream: the marker stops a second send.
    real_xdel = client.xdel

    def crash(*args: object) -> int:
        raise redis.ConnectionError("the replay's Redis connection dropped")

    client.xdel = crash  # type: ignore[method-assign]
    with pytest.raises(redis.ConnectionError):
        replay(settings, client, tenant="acme")
    client.xdel = real_xdel  # type: ignore[method-assign]
    assert receiver.calls[-1]["id"] == "msg_old"
    calls = len(receiver.calls)
    assert [(r.msg_id, r.outcome) for r in replay(settings, client, tenant="acme")] == [("msg_old", "skipped")]
    assert len(receiver.calls) == calls
    assert [f[b"tenant"] for _, f in client.xrange(settings.webhook_dead_stream)] == [b"beta"]


def test_since_takes_a_stream_id_or_a_time() -> None:
    assert since_id(None) == "-" and since_id("1733630000000-0") == "1733630000000-0"
    assert since_id("2024-12-08T04:33:20Z") == since_id("2024-12-08T04:33:20") == "1733632400000"
    with pytest.raises(ValueError):
        since_id("yesterday")
