"""The producer without workers: validation, idempotent submit, polling, and no model imports."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from harness import free_port
from shared import features
from shared.config import Settings
from shared.errors import JobError, ReferenceRejectedError, StorageUnavailableError
from shared.jobs import JobDocument, JobStatus
from shared.producer import Producer, _task_ids
from tests.conftest import ROOT

pytestmark = pytest.mark.services


@pytest.fixture()
def producer(redis_url: str) -> Iterator[Producer]:
    p = Producer(Settings(broker_url=redis_url))
    yield p
    p.close()


def queued_messages(redis_url: str, queue: str) -> list[dict[str, object]]:
    return [json.loads(m) for m in redis.Redis.from_url(redis_url).lrange(queue, 0, -1)]


def test_producer_imports_no_model_code() -> None:
    code = (
        "import sys, shared.producer\n"
        "heavy = [m for m in ('onnxruntime', 'cv2', 'shared.engine', 'shared.models') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_submit_sends_one_message_per_job_id(producer: Producer, redis_url: str) -> None:
    doc = producer.submit_faces("s3://kyc-images/a.jpg", job_id="case-1:faces")
    assert doc.status is JobStatus.QUEUED and doc.inputs == {"image": "s3://kyc-images/a.jpg"}
    assert producer.submit_faces("s3://kyc-images/a.jpg", job_id="case-1:faces") == doc
    messages = queued_messages(redis_url, "kyc.heavy")
    assert len(messages) == 1
    headers = messages[0]["headers"]
    assert isinstance(headers, dict) and headers["task"] == "kyc.jobs.faces" and headers["id"] == "case-1:faces"
    assert producer.get_job("case-1:faces") == doc


def test_routes_light_work_to_the_light_queue(producer: Producer, redis_url: str) -> None:
    unit = features.encode("mobilefacenet", np.ones(128, np.float32))
    producer.submit_match(unit, unit)
    producer.submit_verify("s3://kyc-images/s.jpg", "s3://kyc-images/d.jpg")
    assert len(queued_messages(redis_url, "kyc.light")) == 1
    assert len(queued_messages(redis_url, "kyc.heavy")) == 1


def test_reusing_a_job_id_for_other_work_is_refused(producer: Producer) -> None:
    producer.submit_faces("s3://kyc-images/a.jpg", job_id="case-2")
    with pytest.raises(JobError, match="different"):
        producer.submit_faces("s3://kyc-images/b.jpg", job_id="case-2")


@pytest.mark.parametrize("ref", ["s3://other-bucket/a.jpg", "s3://kyc-images/", "s3://kyc-images/../a.jpg"])
def test_bad_refs_are_refused_before_queueing(producer: Producer, redis_url: str, ref: str) -> None:
    with pytest.raises(ReferenceRejectedError):
        producer.submit_faces(ref)
    assert queued_messages(redis_url, "kyc.heavy") == []


def test_wait_for(producer: Producer) -> None:
    doc = producer.submit_faces("s3://kyc-images/a.jpg")
    with pytest.raises(TimeoutError):
        producer.wait_for(doc.job_id, timeout_s=0.3, poll_s=0.05)
    with pytest.raises(JobError, match="no job"):
        producer.wait_for("unknown-job", timeout_s=0.3)


def test_broker_down_frees_the_job_id(redis_url: str) -> None:
    settings = Settings(broker_url=f"redis://127.0.0.1:{free_port()}/0", redis_url=redis_url)
    p = Producer(settings)
    with pytest.raises(StorageUnavailableError, match="broker"):
        p.submit_faces("s3://kyc-images/a.jpg", job_id="case-3")
    assert p.get_job("case-3") is None


def test_no_broker_configured() -> None:
    with pytest.raises(JobError, match="KYC_BROKER_URL"):
        Producer(Settings(broker_url=None))


def test_a_batch_is_stored_in_a_few_round_trips_and_sent_in_chunks(
    producer: Producer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sends = 0
    real = redis.connection.AbstractConnection.send_packed_command

    def counted(self: redis.connection.AbstractConnection, command: object, check_health: bool = True) -> None:
        nonlocal sends
        sends += 1
        real(self, command, check_health)  # type: ignore[arg-type]

    earlier = producer.submit_faces("s3://kyc-images/0.jpg", job_id="batch-0")
    docs = [JobDocument.new("faces", {"image": f"s3://kyc-images/{i}.jpg"}, f"batch-{i}") for i in range(100)]
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    stored = producer.store_many(docs)
    assert sends <= 3  # the scripts' check, the creates, the reads of the ids already taken
    monkeypatch.undo()
    assert stored[0] == (earlier, False)
    assert all(created for _, created in stored[1:]) and [d.job_id for d, _ in stored] == [d.job_id for d in docs]
    producer.send([doc for doc, created in stored if created], per_message=8)
    messages = queued_messages(redis_url, "kyc.heavy")  # newest first
    assert [len(_task_ids([json.dumps(m)])) for m in messages] == [3] + [8] * 12 + [1]  # 99 new, then batch-0
    assert sorted(_task_ids(json.dumps(m) for m in messages)) == sorted(f"batch-{i}" for i in range(100))


def test_a_batch_with_a_reused_id_stores_nothing(producer: Producer) -> None:
    producer.submit_faces("s3://kyc-images/a.jpg", job_id="taken")
    docs = [
        JobDocument.new("faces", {"image": "s3://kyc-images/new.jpg"}, "fresh"),
        JobDocument.new("faces", {"image": "s3://kyc-images/b.jpg"}, "taken"),
    ]
    with pytest.raises(JobError, match="'taken' was already used"):
        producer.store_many(docs)
    assert producer.get_job("fresh") is None
    taken = producer.get_job("taken")
    assert taken is not None and taken.inputs == {"image": "s3://kyc-images/a.jpg"}
