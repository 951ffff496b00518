"""The reviewer page's rules without a browser (the browser test is tests/workers/test_events_e2e.py):
the session cookie, the scope, the CSRF token, one decision per job recorded and published, one
queue per tenant; and ``callback_url`` checked at submit against the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api_stub.app import create_app
from shared import keys
from shared.config import ApiKey, Settings
from shared.events import review
from shared.events.outbox import recall
from shared.jobs import JobDocument
from shared.producer import Producer
from shared.tenants import DEFAULT_TENANT, Scope, Tenant
from tests.api_stub.conftest import ALL_SCOPES, API_KEY, stub_settings

pytestmark = pytest.mark.services

JOBS_ONLY, BETA_KEY = "jobs-only-key-0123", "beta-review-key-4567"
REVIEWER = "review-desk"  # API_KEY's id: what a decision records
BETA = Tenant("beta")
SELFIE, DOCUMENT = "s3://kyc-images/case-1/selfie.jpg", "s3://kyc-images/case-1/passport.jpg"


@pytest.fixture()
def settings(redis_url: str) -> Settings:
    return stub_settings(
        redis_url,
        api_keys={
            REVIEWER: ApiKey.of(API_KEY, ALL_SCOPES),
            "jobs-only": ApiKey.of(JOBS_ONLY, [Scope.JOBS_SUBMIT, Scope.JOBS_READ]),
            "beta-desk": ApiKey.of(BETA_KEY, [Scope.REVIEW, Scope.JOBS_SUBMIT, Scope.JOBS_READ], tenant=BETA),
        },
        webhook_allowed_hosts={"default": ["127.0.0.1", "hooks.acme.example"]},
        webhook_allow_private=["127.0.0.1"],
    )


@pytest.fixture()
def app_client(settings: Settings) -> Iterator[tuple[TestClient, Producer]]:
    producer = Producer(settings)
    with TestClient(create_app(settings, producer), follow_redirects=False) as c:
        yield c, producer
    producer.close()


def finished_verify(
    producer: Producer, settings: Settings, job_id: str, confidence: float, tenant: Tenant = DEFAULT_TENANT
) -> JobDocument:
    """A verify job's terminal document, stored as a worker stores it, and queued if borderline."""
    result: dict[str, Any] = {
        "code": "SUCCESS", "verified": confidence >= settings.verify_confidence, "confidence": confidence,
        "selfie_face": None, "document_face": None, "document_other_faces": [], "liveness": None,
        "selfie": {"code": "SUCCESS", "faces": [], "partial_faces": []},
        "document": {"code": "SUCCESS", "faces": [], "partial_faces": []},
    }  # fmt: skip
    doc = JobDocument.new("verify", {"selfie": SELFIE, "document": DOCUMENT}, job_id, tenant).succeeded(result)
    producer.jobs.redis.set(keys.job_key(doc.address), doc.to_json(), ex=600)
    review.consider(producer.jobs.redis, settings, doc)
    return doc


def login(c: TestClient, key: str) -> Any:
    """Log in as a browser does: the form first (its token and cookie), then the POST."""
    token = csrf_of(c.get("/review/login").text)
    return c.post("/review/login", data={"key": key, "csrf": token})


def csrf_of(html: str) -> str:
    return html.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_login_sets_a_strict_httponly_session_only_for_the_scope(app_client: tuple[TestClient, Producer]) -> None:
    c, _ = app_client
    assert c.get("/review").headers["location"] == "/review/login"
    assert login(c, "no-such-key").status_code == 401
    refused = login(c, JOBS_ONLY)
    assert refused.status_code == 403 and "lacks the review scope" in refused.text
    assert "kyc_review=" not in refused.headers.get("set-cookie", "")  # no session (a fresh login form only)
    answer = login(c, API_KEY)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/review" in cookie
    assert API_KEY not in answer.headers["set-cookie"]  # a random token, never the key
    page = c.get("/review")
    assert page.status_code == 200 and f"<span>{REVIEWER}</span>" in page.text
    assert (
        "no-store" in page.headers["cache-control"] and "default-src 'none'" in page.headers["content-security-policy"]
    )


def test_the_queue_holds_the_band_and_a_decision_is_recorded_once(
    app_client: tuple[TestClient, Producer], settings: Settings
) -> None:
    c, producer = app_client
    client: redis.Redis = producer.jobs.redis
    borderline = finished_verify(producer, settings, "case-1:verify", 0.7)
    finished_verify(producer, settings, "case-2:verify", 0.99)  # sure: not queued
    assert review.pending(client, DEFAULT_TENANT) == [borderline.job_id]
    login(c, API_KEY)
    assert "case-1:verify" in c.get("/review").text and "case-2:verify" not in c.get("/review").text
    case = c.get("/review/jobs/case-1:verify")
    assert case.status_code == 200 and "0.700" in case.text and "below the operating point 0.76" in case.text
    url = "/review/jobs/case-1:verify/decision"
    assert c.post(url, data={"decision": "approved"}).status_code == 403  # no token: a forged form
    assert c.post(url, data={"decision": "approved", "csrf": "guess"}).status_code == 403
    token = csrf_of(case.text)
    done = c.post(url, data={"decision": "rejected", "note": "different person", "csrf": token})
    assert done.status_code == 303
    doc = producer.get_job("case-1:verify")
    assert doc is not None and doc.review is not None and doc.result == borderline.result
    assert (doc.review.decision, doc.review.note, doc.review.reviewer) == ("rejected", "different person", REVIEWER)
    assert c.post(url, data={"decision": "approved", "csrf": token}).status_code == 409  # decided once
    events = [{k.decode(): v.decode() for k, v in f.items()} for _, f in client.xrange(settings.review_stream)]
    assert [(e["job_id"], e["tenant"], e["decision"]) for e in events] == [("case-1:verify", "default", "rejected")]
    assert review.pending(client, DEFAULT_TENANT) == [] and "rejected by" in c.get("/review/jobs/case-1:verify").text


def test_images_and_posts_need_the_session(app_client: tuple[TestClient, Producer], settings: Settings) -> None:
    c, producer = app_client
    finished_verify(producer, settings, "case-3:verify", 0.7)
    # An API key in a header opens no page: the browser's session does.
    headers = {"X-API-Key": API_KEY}
    assert c.get("/review/jobs/case-3:verify/selfie/image.jpg", headers=headers).status_code == 401
    assert c.post("/review/jobs/case-3:verify/decision", data={"decision": "approved"}).status_code == 401


def test_a_reviewer_sees_and_decides_only_its_tenants_cases(
    app_client: tuple[TestClient, Producer], settings: Settings
) -> None:
    c, producer = app_client
    client: redis.Redis = producer.jobs.redis
    finished_verify(producer, settings, "case-4:verify", 0.7)  # the default tenant's
    finished_verify(producer, settings, "case-5:verify", 0.72, tenant=BETA)
    assert review.pending(client, DEFAULT_TENANT) == ["case-4:verify"]
    assert review.pending(client, BETA) == ["case-5:verify"]
    login(c, BETA_KEY)
    listed = c.get("/review").text
    assert "case-5:verify" in listed and "case-4:verify" not in listed
    token = csrf_of(c.get("/review/jobs/case-5:verify").text)
    # The other tenant's case does not exist for this reviewer: the page, its pictures, its decision.
    assert c.get("/review/jobs/case-4:verify").status_code == 404
    assert c.get("/review/jobs/case-4:verify/selfie/image.jpg").status_code == 404
    assert c.get("/review/jobs/case-4:verify/document/crop.jpg").status_code == 404
    assert (
        c.post("/review/jobs/case-4:verify/decision", data={"decision": "approved", "csrf": token}).status_code == 404
    )
    other = producer.get_job("case-4:verify")
    assert other is not None and other.review is None and review.pending(client, DEFAULT_TENANT) == ["case-4:verify"]
    done = c.post("/review/jobs/case-5:verify/decision", data={"decision": "approved", "csrf": token})
    assert done.status_code == 303
    mine = producer.get_job("case-5:verify", BETA)
    assert mine is not None and mine.review is not None and mine.review.reviewer == "beta-desk"
    events = [{k.decode(): v.decode() for k, v in f.items()} for _, f in client.xrange(settings.review_stream)]
    assert [(e["job_id"], e["tenant"]) for e in events] == [("case-5:verify", "beta")]
    assert review.pending(client, BETA) == []


def test_a_callback_is_checked_at_submit(app_client: tuple[TestClient, Producer], redis_url: str) -> None:
    c, producer = app_client
    body = {"kind": "verify", "selfie": SELFIE, "document": DOCUMENT}
    headers = {"X-API-Key": API_KEY}
    for url, why in [
        ("https://evil.example/hook", "allow-list"),
        ("http://hooks.acme.example/hook", "https"),
        ("ftp://127.0.0.1/hook", "http(s)"),
    ]:
        answer = c.post("/v1/jobs", json={**body, "job_id": "cb-refused", "callback_url": url}, headers=headers)
        assert answer.status_code == 422 and why in answer.json()["detail"][0]["msg"], url
    assert producer.get_job("cb-refused") is None
    client = redis.Redis.from_url(redis_url)
    assert client.get(keys.job_meta_key("cb-refused")) is None
    accepted = c.post("/v1/jobs", json={**body, "callback_url": "http://127.0.0.1:9/kyc"}, headers=headers)
    assert accepted.status_code == 202
    meta = recall(client, accepted.json()["job_id"])
    assert (meta.tenant, meta.callback_url) == ("default", "http://127.0.0.1:9/kyc")
    # The allow-list is the caller's tenant's: beta lists no host, so the same URL is refused.
    beta = {**body, "job_id": "cb-beta", "callback_url": "http://127.0.0.1:9/kyc"}
    refused = c.post("/v1/jobs", json=beta, headers={"X-API-Key": BETA_KEY})
    assert refused.status_code == 422 and "allow-list" in refused.json()["detail"][0]["msg"]
    assert producer.get_job("cb-beta", BETA) is None and client.get(keys.job_meta_key("beta/cb-beta")) is None
    client.close()
