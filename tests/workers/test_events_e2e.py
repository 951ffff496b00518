"""Events end to end on real parts: a `celery -A workers worker` with the real models, the HTTP API
served by uvicorn, a webhook receiver on loopback, and the reviewer page in Debian's chromium
(driven by playwright; no browser is downloaded).

A verify job submitted over HTTP with a ``callback_url`` finishes on the worker, which publishes
its completion event (read once by each consumer group) and hands its webhook to the delivery
task (the receiver checks the signature); the same job is in the review queue, and a reviewer
approves it in the browser.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api_stub.app import create_app
from shared import keys
from shared.config import ApiKey, Settings
from shared.jobs import JobStatus
from shared.producer import Producer
from shared.tenants import DEFAULT_TENANT, Scope
from tests.conftest import S3Endpoint, celery_worker, need, pipeline_env
from tests.shared.events.conftest import Receiver, serving

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.slow]

SECRET = "whsec_" + "ZTJlLXdlYmhvb2stc2VjcmV0LWZvci10ZXN0cw=="
REVIEWER_KEY, JOBS_ONLY_KEY = "reviewer-key-e2e", "jobs-only-key-e2e"
REVIEWER = "review-desk"  # REVIEWER_KEY's id: what a decision records
JOBS = (Scope.JOBS_SUBMIT, Scope.JOBS_READ)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
# Every verify is borderline here (band 0..1), so each one reaches the reviewers' queue.
EVENT_SETTINGS = {
    "webhook_allowed_hosts": {"default": ["127.0.0.1"]},
    "webhook_allow_private": ["127.0.0.1"],
    "webhook_secrets": {"default": SECRET},
    "webhook_backoff_s": 0.2,
    "review_confidence_min": 0.0,
    "review_confidence_max": 1.0,
}
SELFIE, DOCUMENT = "s3://kyc-images/faces/df_img11.jpg", "s3://kyc-images/faces/df_img5.jpg"  # one person


def env_of(values: dict[str, Any]) -> dict[str, str]:
    return {f"KYC_{k.upper()}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


@pytest.fixture(scope="module")
def settings(broker_url: str, photos_s3: S3Endpoint) -> Settings:
    return Settings(
        broker_url=broker_url,
        s3_endpoint_url=photos_s3.url,
        s3_bucket=photos_s3.bucket,
        api_keys={
            REVIEWER: ApiKey.of(REVIEWER_KEY, (*JOBS, Scope.REVIEW)),
            "jobs-only": ApiKey.of(JOBS_ONLY_KEY, JOBS),
        },
        **EVENT_SETTINGS,
    )


@pytest.fixture(scope="module")
def worker(broker_url: str, photos_s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    env = pipeline_env(broker_url, photos_s3, **env_of(EVENT_SETTINGS))
    with celery_worker(env, tmp_path_factory.mktemp("worker")):
        yield


@pytest.fixture(scope="module")
def api(worker: None, settings: Settings) -> Iterator[str]:
    """The HTTP API on a free loopback port; one key may review, the other only submit."""
    import uvicorn

    app = create_app(settings)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture()
def producer(settings: Settings) -> Iterator[Producer]:
    p = Producer(settings)
    yield p
    p.close()


@pytest.fixture()
def client(broker_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(broker_url)
    yield c
    c.close()


def submit_verify(api: str, key: str, **extra: str) -> str:
    body = {"kind": "verify", "selfie": SELFIE, "document": DOCUMENT, "job_id": f"e2e-{uuid.uuid4().hex[:10]}"}
    answer = httpx.post(f"{api}/v1/jobs", json={**body, **extra}, headers={"X-API-Key": key}, timeout=30)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


def read_group(client: redis.Redis, stream: str, group: str) -> list[dict[str, str]]:
    reply: Any = client.xreadgroup(group, f"{group}-1", {stream: ">"}, count=100, block=200)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _s, items in reply or [] for _id, fields in items]


def test_a_job_publishes_once_per_group_and_its_webhook_arrives_signed(
    api: str, settings: Settings, producer: Producer, client: redis.Redis
) -> None:
    stream = settings.events_completed_stream
    for group in ("onboarding", "audit"):
        client.xgroup_create(stream, group, id="$", mkstream=True)
    receiver = Receiver(SECRET)
    with serving(receiver, "http://127.0.0.1:{port}/kyc/hook"):
        job_id = submit_verify(api, REVIEWER_KEY, callback_url=receiver.url)
        final = producer.wait_for(job_id, timeout_s=180)
        assert final.status is JobStatus.SUCCEEDED and final.result is not None, final.error
        deadline = time.monotonic() + 60
        while not receiver.calls and time.monotonic() < deadline:
            time.sleep(0.1)
    for group in ("onboarding", "audit"):
        events = [e for e in read_group(client, stream, group) if e["job_id"] == job_id]
        assert len(events) == 1, group
        assert events[0]["status"] == "succeeded" and events[0]["verified"] == str(final.result["verified"]).lower()
        assert events[0]["confidence"] == f"{final.result['confidence']:.6f}"
        assert read_group(client, stream, group) == []  # read once
    [call] = receiver.calls
    assert call["valid"] and call["id"] == f"msg_{job_id}"
    assert call["payload"]["type"] == "job.completed" and call["payload"]["data"]["job_id"] == job_id
    assert client.xlen(settings.webhook_dead_stream) == 0


def test_an_intake_request_with_a_reference_is_answered_with_it_and_its_entry(
    worker: None, settings: Settings, producer: Producer, client: redis.Redis
) -> None:
    """Fire and forget from redis-cli: no job_id, a reference; the worker's completion event and
    webhook carry the reference and the intake entry, under the documented derived id."""
    from shared.events.consumer import Consumer, default_routes
    from shared.events.requests import derived_job_id
    from shared.events.wiring import producer_submit, validator

    receiver = Receiver(SECRET)
    reference = f"crm-{uuid.uuid4().hex[:8]}"
    with serving(receiver, "http://127.0.0.1:{port}/kyc/hook"):
        request = {"kind": "verify", "selfie": SELFIE, "document": DOCUMENT, "reference": reference,
                   "callback_url": receiver.url}  # fmt: skip
        entry_id = client.xadd(settings.events_intake_stream, request).decode()
        validate = validator(settings, producer.images.validate)
        routes = default_routes(client, settings, validate, producer_submit(producer), consumer="e2e")
        Consumer(client, settings, routes).run(max_batches=1)
        job_id = derived_job_id(DEFAULT_TENANT, request)
        final = producer.wait_for(job_id, timeout_s=180)
        assert final.status is JobStatus.SUCCEEDED and final.reference == reference, final.error
        deadline = time.monotonic() + 60
        while not receiver.calls and time.monotonic() < deadline:
            time.sleep(0.1)
    [event] = [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in client.xrange(settings.events_completed_stream)
        if fields[b"job_id"] == job_id.encode()
    ]
    assert (event["reference"], event["source"], event["entry_id"]) == (
        reference,
        settings.events_intake_stream,
        entry_id,
    )
    [call] = receiver.calls
    assert call["valid"] and call["payload"]["data"] == event


def test_a_callback_outside_the_allow_list_is_refused_at_submit(api: str, producer: Producer) -> None:
    job_id = f"e2e-{uuid.uuid4().hex[:10]}"
    body = {"kind": "faces", "image": SELFIE, "job_id": job_id, "callback_url": "http://10.0.0.7/hook"}
    answer = httpx.post(f"{api}/v1/jobs", json=body, headers={"X-API-Key": REVIEWER_KEY}, timeout=30)
    assert answer.status_code == 422 and "allow-list" in answer.json()["detail"][0]["msg"]
    assert producer.get_job(job_id) is None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    need(Path(CHROMIUM).is_file() or shutil.which("chromium") is not None, "Debian's chromium is not installed")
    need(importlib.util.find_spec("playwright") is not None, "playwright is not installed (pip install -e '.[dev]')")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_the_reviewer_page_in_a_browser(
    api: str, browser: Any, settings: Settings, producer: Producer, client: redis.Redis, tmp_path: Path
) -> None:
    job_id = submit_verify(api, JOBS_ONLY_KEY)
    final = producer.wait_for(job_id, timeout_s=180)
    assert final.status is JobStatus.SUCCEEDED and final.result is not None, final.error
    deadline = time.monotonic() + 30
    while client.zscore(keys.review_queue_key(DEFAULT_TENANT), job_id) is None:  # the finish hook queues it
        assert time.monotonic() < deadline, "the job never reached the review queue"
        time.sleep(0.1)

    page = browser.new_page(java_script_enabled=False, viewport={"width": 1100, "height": 1000})
    try:
        # A key without the scope: refused at login, and the queue stays closed.
        page.goto(f"{api}/review")
        assert page.url.endswith("/review/login")
        page.fill("input[name=key]", JOBS_ONLY_KEY)
        with page.expect_navigation() as refused:
            page.click("button[type=submit]")
        assert refused.value.status == 403 and "lacks the review scope" in page.content()
        page.goto(f"{api}/review")
        assert page.url.endswith("/review/login")
        assert httpx.get(f"{api}/review/jobs/{job_id}/selfie/crop.jpg", timeout=10).status_code == 401

        # A reviewer: the queue lists the job, its case shows both images and both crops.
        page.fill("input[name=key]", REVIEWER_KEY)
        page.click("button[type=submit]")
        assert page.url.endswith("/review")
        page.click(f"a:text('{job_id}')")
        assert page.url.endswith(f"/review/jobs/{job_id}")
        page.wait_for_load_state("load")  # the images too
        for alt in (
            "selfie with face boxes",
            "document with face boxes",
            "selfie aligned crop",
            "document aligned crop",
        ):
            size = page.locator(f"img[alt='{alt}']").evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight]")
            assert size[0] and size[1] > 0, alt
            if "crop" in alt:
                assert size[1:] == [224, 224], alt
        text = page.inner_text("body")
        assert (
            f"{final.result['confidence']:.3f}" in text and f"operating point {settings.verify_confidence:.2f}" in text
        )
        assert f"{final.result['liveness']['score']:.3f}" in text
        page.screenshot(path=str(tmp_path / "review-case.png"), full_page=True)  # docs/review-case.png

        # A form post without the session's token is refused; the page's own form is accepted.
        forged = page.request.post(f"{api}/review/jobs/{job_id}/decision", form={"decision": "approved"})
        assert forged.status == 403
        page.fill("textarea[name=note]", "same person, low light")
        page.click("button[value=approved]")
        assert page.url.endswith(f"/review/jobs/{job_id}") and "approved by" in page.inner_text("#decision")
    finally:
        page.close()

    reviewed = producer.get_job(job_id)
    assert reviewed is not None and reviewed.review is not None
    assert reviewed.review.decision == "approved" and reviewed.review.reviewer == REVIEWER
    assert reviewed.review.note == "same person, low light" and reviewed.result == final.result
    events = [{k.decode(): v.decode() for k, v in f.items()} for _id, f in client.xrange(settings.review_stream)]
    ours = [(e["decision"], e["reviewer"]) for e in events if e["job_id"] == job_id]
    assert ours == [("approved", REVIEWER)]
    assert client.zscore(keys.review_queue_key(DEFAULT_TENANT), job_id) is None
