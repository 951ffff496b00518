"""A tenant's webhook receiver that trickles its answer a byte a second starves no one: the
deliveries run on their own queue and thread pool, each attempt ends at its deadline, and
another tenant's match jobs, on a one-process light worker as compose runs it, keep the latency
they had before the trickle began (within 1 s)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness import CeleryWorker
from harness.tarpit import Tarpit
from shared.config import Settings
from shared.events.outbox import JobMeta, remember
from shared.features import seal_for
from shared.jobs.registry import LIGHT_QUEUE, WEBHOOK_QUEUE
from shared.producer import Producer
from shared.tenants import Tenant, scoped
from tests.conftest import S3Endpoint, features_of, pipeline_env, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.slow]

ACME, BETA = Tenant("acme"), Tenant("beta")
DEADLINE_S = 8
SECRET = "whsec_" + "dGFycGl0LXdlYmhvb2stc2VjcmV0LWZvci10ZXN0cw=="
HOOKS = {
    "webhook_allowed_hosts": {"acme": ["127.0.0.1"]},
    "webhook_allow_private": ["127.0.0.1"],
    "webhook_secrets": {"acme": SECRET},
    "webhook_max_attempts": 1,  # one attempt each: dead at the deadline
    "webhook_attempt_deadline_s": DEADLINE_S,
}


@pytest.fixture(scope="module")
def workers(broker_url: str, photos_s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    env = pipeline_env(broker_url, photos_s3, **{f"KYC_{k.upper()}": json.dumps(v) for k, v in HOOKS.items()})
    logs = tmp_path_factory.mktemp("workers")
    started: list[CeleryWorker] = []
    try:
        # As docker-compose.yml runs them: one light process for the jobs, a thread pool for the hooks.
        started.append(start_worker(env, logs / "light.log", 1, queues=LIGHT_QUEUE))
        started.append(start_worker(env, logs / "hooks.log", 8, queues=WEBHOOK_QUEUE, pool="threads"))
        yield
    finally:
        for worker in started:
            worker.stop()


def latency_s(producer: Producer, features: tuple[str, str], job_id: str) -> float:
    """Submit beta's match job and wait for it: the document's own finished - created."""
    producer.submit_match(*features, job_id=job_id, tenant=BETA)
    doc = producer.wait_for(job_id, timeout_s=60, poll_s=0.05, tenant=BETA)
    assert doc.status.terminal and doc.finished_at is not None, doc
    return (doc.finished_at - doc.created_at).total_seconds()


def test_a_trickling_receiver_leaves_another_tenants_latency_flat(
    workers: None,
    broker_url: str,
    photos_s3: S3Endpoint,
    engine,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    # Each tenant's own templates: features are sealed per tenant, and another tenant's refused.
    plain = (features_of(engine, "fr_obama.jpg"), features_of(engine, "fr_obama2.jpg"))
    features = (seal_for(plain[0], BETA), seal_for(plain[1], BETA))
    acme_features = (seal_for(plain[0], ACME), seal_for(plain[1], ACME))
    settings = Settings(broker_url=broker_url, s3_endpoint_url=photos_s3.url, s3_bucket=photos_s3.bucket, **HOOKS)  # type: ignore[arg-type]
    producer = Producer(settings)
    client: redis.Redis = producer.jobs.redis
    try:
        for n in range(3):  # warm the path
            latency_s(producer, features, f"warm-{n}")
        baseline = [latency_s(producer, features, f"before-{n}") for n in range(8)]
        with Tarpit("trickle", interval_s=1.0) as tarpit:
            hooked = [f"hooked-{n}" for n in range(4)]
            for job_id in hooked:
                remember(client, settings, scoped(ACME, job_id), JobMeta(ACME, tarpit.url))
                producer.submit_match(*acme_features, job_id=job_id, tenant=ACME)
            deadline = time.monotonic() + 30
            while tarpit.active < len(hooked):  # every delivery is held by the tarpit now
                assert time.monotonic() < deadline, f"{tarpit.active} of {len(hooked)} deliveries started"
                time.sleep(0.05)
            trickling = [latency_s(producer, features, f"during-{n}") for n in range(8)]
            assert tarpit.active == len(hooked), "the measurement must fall inside the trickle"
            # Each attempt ends at its deadline, however the receiver trickles.
            ends = time.monotonic() + DEADLINE_S + 10
            while tarpit.active:
                assert time.monotonic() < ends, "a trickled delivery outlived its deadline"
                time.sleep(0.1)
        dead = [{k.decode(): v.decode() for k, v in f.items()} for _, f in client.xrange(settings.webhook_dead_stream)]
        assert sorted(d["job_id"] for d in dead) == sorted(hooked)
        assert all("deadline" in d["reason"] for d in dead), dead
    finally:
        producer.close()
    print(
        f"\nbeta match latency s: before {[round(x, 3) for x in baseline]}, during {[round(x, 3) for x in trickling]}"
    )
    assert statistics.median(trickling) < statistics.median(baseline) + 1.0, (baseline, trickling)
    assert max(trickling) < max(baseline) + 1.0, (baseline, trickling)
