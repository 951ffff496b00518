"""Fixtures of the event tests: settings on the test's Redis and S3, the producer behind the
consumers' seams, and helpers that count what reached the job system."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from shared import keys
from shared.config import EventRule, Settings
from shared.events.consumer import Consumer, default_routes
from shared.events.wiring import producer_submit, validate
from shared.producer import Producer
from tests.conftest import S3Endpoint

RULES = [
    EventRule(
        bucket="kyc-images",
        pattern="selfies/{case}/...",
        kind="verify",
        inputs={"selfie": "{ref}"},
        lookup={"document": "documents/{case}/"},
        tenant="acme",
    ),
    EventRule(
        bucket="kyc-images",
        pattern="enrol/{gallery}/{face_id}.jpg",
        kind="enroll",
        inputs={"gallery": "{gallery}", "face_id": "{face_id}", "probe": "{ref}"},
    ),
]


def make_settings(redis_url: str, s3: S3Endpoint, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "broker_url": redis_url,
        "s3_endpoint_url": s3.url,
        "s3_bucket": s3.bucket,
        "event_rules": RULES,
        "events_block_ms": 20,
        "webhook_allowed_hosts": {"acme": ["hooks.acme.example", "127.0.0.1"]},
        "webhook_allow_private": ["127.0.0.1"],
        "webhook_secrets": {"acme": "whsec_" + "c2VjcmV0LWZvci10ZXN0cy1vbmx5LTAxMjM0NTY3ODk="},
        **overrides,
    }
    return Settings(**values)


@pytest.fixture()
def ev_settings(redis_url: str, s3: S3Endpoint) -> Settings:
    return make_settings(redis_url, s3)


@pytest.fixture()
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture()
def producer(ev_settings: Settings) -> Iterator[Producer]:
    p = Producer(ev_settings)
    yield p
    p.close()


@pytest.fixture()
def consumer(client: redis.Redis, ev_settings: Settings, producer: Producer) -> Consumer:
    routes = default_routes(client, ev_settings, validate, producer_submit(producer), consumer="test-1")
    return Consumer(client, ev_settings, routes)


def job_ids(client: redis.Redis) -> list[str]:
    """Every job document in Redis."""
    return sorted(k.decode().removeprefix(keys.JOB_PREFIX) for k in client.scan_iter(keys.JOB_PREFIX + "*"))


def task_messages(client: redis.Redis) -> list[str]:
    """The job ids of the Celery messages on the queues: one per job made."""
    ids = []
    for queue in ("kyc.heavy", "kyc.light"):
        ids += [json.loads(m)["headers"]["id"] for m in client.lrange(queue, 0, -1)]
    return sorted(ids)


def rejects(client: redis.Redis, settings: Settings) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in client.xrange(settings.events_rejects_stream)
    ]


def counts(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(keys.event_counts_key()).items()}
