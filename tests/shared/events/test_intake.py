"""Plain JSON job requests from a Redis stream or list become exactly one job each; malformed
ones land on the rejects stream with a reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading

import pytest
import redis

from shared.config import Settings
from shared.events.consumer import Consumer
from shared.events.model import Outcome
from shared.events.outbox import recall
from tests.conftest import RedisServer, need
from tests.shared.events.conftest import counts, job_ids, rejects, task_messages

pytestmark = pytest.mark.services

SELFIE = "s3://kyc-images/selfies/case-1/selfie.jpg"
DOCUMENT = "s3://kyc-images/documents/case-1/passport.jpg"
# Exactly what `redis-cli XADD kyc:intake '*' kind verify selfie ... tenant acme` sends.
CLI_FIELDS = {"kind": "verify", "selfie": SELFIE, "document": DOCUMENT, "job_id": "case-1:verify", "tenant": "acme"}


def test_a_stream_request_becomes_exactly_one_job(
    client: redis.Redis, ev_settings: Settings, consumer: Consumer
) -> None:
    client.xadd(ev_settings.events_intake_stream, CLI_FIELDS)
    client.xadd(ev_settings.events_intake_stream, CLI_FIELDS)  # a producer's retry
    totals = consumer.run(max_batches=2)
    assert totals[Outcome.CREATED] == 2
    # Filed under the request's tenant: another tenant's case-1:verify is another job.
    assert job_ids(client) == ["acme/case-1:verify"] and task_messages(client) == ["acme/case-1:verify"]
    assert recall(client, "acme/case-1:verify").tenant == "acme"
    # Acknowledged: nothing pending in the group.
    assert client.xpending(ev_settings.events_intake_stream, ev_settings.events_group)["pending"] == 0


def test_redis_cli_xadd_becomes_a_job(redis_server: RedisServer, client: redis.Redis, ev_settings: Settings,
                                      consumer: Consumer) -> None:  # fmt: skip
    need(shutil.which("redis-cli") is not None, "redis-cli is not installed")
    # The module's own database of the shared server, as the test's client uses it.
    cli = ["redis-cli", "-p", str(redis_server.port), "-n", str(client.connection_pool.connection_kwargs["db"])]
    args = [*cli, "XADD", ev_settings.events_intake_stream, "*"]
    args += ["kind", "faces", "image", "s3://kyc-images/faces/a.jpg"]
    subprocess.run(args, check=True, capture_output=True, timeout=10)
    bad = [*cli, "XADD", ev_settings.events_intake_stream, "*"]
    subprocess.run([*bad, "kind", "faces", "image", "/etc/passwd"], check=True, capture_output=True, timeout=10)
    consumer.run(max_batches=1)
    [job_id] = job_ids(client)
    assert job_id.startswith("in-") and task_messages(client) == [job_id]
    [reject] = rejects(client, ev_settings)
    assert "image" in reject["reason"] and "s3://" in reject["reason"] and "/etc/passwd" not in reject["reason"]


def test_a_redelivered_entry_finds_its_job(client: redis.Redis, ev_settings: Settings, consumer: Consumer) -> None:
    """Without a job_id the id comes from the request: a crash before XACK does not make a second job."""
    client.xadd(ev_settings.events_intake_stream, {"kind": "faces", "image": "s3://kyc-images/a.jpg"})
    route = consumer.routes[0]
    [entry] = route.source.read(10, 10)
    route.handler(entry)  # the job is made, then the consumer dies before it acknowledges
    first = job_ids(client)
    assert client.xpending(ev_settings.events_intake_stream, ev_settings.events_group)["pending"] == 1
    route.source._recover = True  # type: ignore[attr-defined]  # as a restarted consumer starts
    consumer.run(max_batches=2)
    assert job_ids(client) == first and len(task_messages(client)) == 1
    # Acknowledged and deleted: the stream keeps only what is still to do.
    assert client.xpending(ev_settings.events_intake_stream, ev_settings.events_group)["pending"] == 0
    assert client.xlen(ev_settings.events_intake_stream) == 0


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"kind": "verify", "selfie": SELFIE}, "document"),
        ({"kind": "teleport", "image": SELFIE}, "kind"),
        ({"selfie": SELFIE}, "kind: required"),
        ({"kind": "faces", "image": SELFIE, "job_id": "has spaces"}, "job_id"),
        ({"kind": "faces", "image": SELFIE, "extra": "x"}, "extra"),
        ({"kind": "faces", "image": "s3://other-bucket/a.jpg"}, "bucket"),
        ({"request": "{not json"}, "not JSON"),
    ],
)
def test_a_malformed_request_lands_on_the_rejects_stream(
    client: redis.Redis, ev_settings: Settings, consumer: Consumer, fields: dict[str, str], reason: str
) -> None:
    entry_id = client.xadd(ev_settings.events_intake_stream, fields).decode()
    totals = consumer.run(max_batches=1)
    assert totals[Outcome.REJECTED] == 1 and job_ids(client) == []
    [reject] = rejects(client, ev_settings)
    assert reject["entry_id"] == entry_id and reason in reject["reason"]
    assert counts(client)["rejected"] == 1
    assert client.xpending(ev_settings.events_intake_stream, ev_settings.events_group)["pending"] == 0


def test_a_request_as_json_in_one_field(client: redis.Redis, ev_settings: Settings, consumer: Consumer) -> None:
    client.xadd(ev_settings.events_intake_stream, {"request": json.dumps({**CLI_FIELDS, "job_id": "case-9:verify"})})
    consumer.run(max_batches=1)
    assert job_ids(client) == ["acme/case-9:verify"]


def test_a_list_request_is_moved_then_removed(client: redis.Redis, ev_settings: Settings, consumer: Consumer) -> None:
    client.lpush(ev_settings.events_intake_list, json.dumps({**CLI_FIELDS, "job_id": "case-2:verify"}))
    client.lpush(ev_settings.events_intake_list, "[]")
    consumer.run(max_batches=1)
    assert job_ids(client) == ["acme/case-2:verify"]
    assert client.llen(ev_settings.events_intake_list) == 0
    assert [k for k in client.scan_iter("kyc:events:processing:*") if client.llen(k)] == []
    assert len(rejects(client, ev_settings)) == 1


def test_a_list_entry_survives_a_broker_outage(client: redis.Redis, ev_settings: Settings, consumer: Consumer) -> None:
    """Transient failure: the entry stays in the processing list and is done on a later read."""
    calls: list[str] = []
    real = consumer.routes[1].handler

    def flaky(entry):  # type: ignore[no-untyped-def]
        calls.append(entry.entry_id)
        if len(calls) == 1:
            raise redis.ConnectionError("broker away")
        return real(entry)

    consumer.routes[1] = type(consumer.routes[1])(consumer.routes[1].source, flaky)
    client.lpush(ev_settings.events_intake_list, json.dumps({**CLI_FIELDS, "job_id": "case-3:verify"}))
    assert consumer.run_once()[Outcome.RETRY] == 1
    assert job_ids(client) == [] and client.llen(ev_settings.events_intake_list) == 0
    consumer.run(max_batches=1)
    assert job_ids(client) == ["acme/case-3:verify"] and len(calls) == 2


def test_a_callback_to_a_host_off_the_allow_list_is_refused(
    client: redis.Redis, ev_settings: Settings, consumer: Consumer
) -> None:
    for url in ("https://evil.example/hook", "http://169.254.169.254/latest/meta-data", "https://10.0.0.1/x"):
        client.xadd(ev_settings.events_intake_stream, {**CLI_FIELDS, "callback_url": url})
    client.xadd(
        ev_settings.events_intake_stream, {**CLI_FIELDS, "tenant": "other", "callback_url": "http://127.0.0.1/x"}
    )
    consumer.run(max_batches=1)
    assert job_ids(client) == []
    reasons = [r["reason"] for r in rejects(client, ev_settings)]
    assert len(reasons) == 4 and all("callback_url" in r and "allow-list" in r for r in reasons)


def test_the_consumer_runs_in_a_thread_and_stops(
    client: redis.Redis, ev_settings: Settings, consumer: Consumer
) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        client.xadd(ev_settings.events_intake_stream, {**CLI_FIELDS, "job_id": "case-4:verify"})
        client.lpush(ev_settings.events_intake_list, json.dumps({**CLI_FIELDS, "job_id": "case-5:verify"}))
        for _ in range(200):
            if len(job_ids(client)) == 2:
                break
            stop.wait(0.02)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert job_ids(client) == ["acme/case-4:verify", "acme/case-5:verify"]


def test_a_corrected_resubmit_keeps_its_own_callback(
    client: redis.Redis, ev_settings: Settings, consumer: Consumer
) -> None:
    first = {**CLI_FIELDS, "selfie": "s3://other-bucket/s.jpg", "callback_url": "http://127.0.0.1:1/old"}
    client.xadd(ev_settings.events_intake_stream, first)
    client.xadd(ev_settings.events_intake_stream, {**CLI_FIELDS, "callback_url": "http://127.0.0.1:1/new"})
    consumer.run(max_batches=1)
    assert job_ids(client) == ["acme/case-1:verify"]
    assert recall(client, "acme/case-1:verify").callback_url == "http://127.0.0.1:1/new"


def test_a_lost_acknowledgement_leaves_the_read_pending_and_makes_no_second_job(
    client: redis.Redis, ev_settings: Settings, consumer: Consumer
) -> None:
    """A read's entries are acknowledged together; when that fails they stay pending, and the
    next read finds the jobs they made."""
    for n in range(3):
        client.xadd(ev_settings.events_intake_stream, {"kind": "faces", "image": f"s3://kyc-images/{n}.jpg"})
    source = consumer.routes[0].source
    real = source.ack_many

    def lost(entries):  # type: ignore[no-untyped-def]
        raise redis.ConnectionError("connection lost before the acknowledgement")

    source.ack_many = lost  # type: ignore[method-assign]
    assert consumer.run_once()[Outcome.RETRY] == 3
    assert client.xpending(ev_settings.events_intake_stream, ev_settings.events_group)["pending"] == 3
    source.ack_many = real  # type: ignore[method-assign]
    made = job_ids(client)
    assert consumer.run_once()[Outcome.CREATED] == 3
    assert job_ids(client) == made and len(made) == 3 and len(task_messages(client)) == 3
    assert client.xlen(ev_settings.events_intake_stream) == 0
