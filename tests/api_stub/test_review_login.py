"""Login CSRF on the reviewer page: the login form's token must match the cookie set with the
form, and a form POSTed from another origin is refused, the login's as every other."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_stub.app import create_app
from shared.config import ApiKey, Settings
from shared.producer import Producer
from tests.api_stub.conftest import ALL_SCOPES, API_KEY, stub_settings

pytestmark = pytest.mark.services

ATTACKER_KEY = "attacker-review-key-9e1d"  # a key of the attacker's own, with the review scope
SESSION = "kyc_review="


@contextmanager
def browser(redis_url: str, **overrides: Any) -> Iterator[TestClient]:
    """A browser of the reviewer page (TestClient keeps cookies; its Host is ``testserver``)."""
    keys = {"desk": ApiKey.of(API_KEY, ALL_SCOPES), "attacker": ApiKey.of(ATTACKER_KEY, ALL_SCOPES)}
    settings: Settings = stub_settings(redis_url, api_keys=keys, **overrides)
    producer = Producer(settings)
    with TestClient(create_app(settings, producer), follow_redirects=False) as client:
        yield client
    producer.close()


def form_token(c: TestClient) -> str:
    return c.get("/review/login").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_a_login_without_the_forms_token_is_refused(redis_url: str) -> None:
    with browser(redis_url) as victim, browser(redis_url) as attacker:
        refused = victim.post("/review/login", data={"key": ATTACKER_KEY})  # a forged form: no token
        assert refused.status_code == 403 and SESSION not in refused.headers.get("set-cookie", "")
        # The attacker's own form token is worthless in the victim's browser: its cookie differs.
        stolen = form_token(attacker)
        form_token(victim)
        forged = victim.post("/review/login", data={"key": ATTACKER_KEY, "csrf": stolen})
        assert forged.status_code == 403 and SESSION not in forged.headers.get("set-cookie", "")
        assert victim.get("/review").status_code == 303  # still logged out
        # The form answered with a fresh token: the real login goes through.
        token = form_token(victim)
        assert victim.post("/review/login", data={"key": API_KEY, "csrf": token}).status_code == 303
        assert victim.get("/review").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # a sandboxed frame or a data: URL
        {"Origin": "http://testserver.evil.example"},
        {"Referer": "https://evil.example/login.html"},
    ],
)
def test_a_form_from_another_origin_is_refused(redis_url: str, headers: dict[str, str]) -> None:
    with browser(redis_url) as c:
        token = form_token(c)
        refused = c.post("/review/login", data={"key": API_KEY, "csrf": token}, headers=headers)
        assert refused.status_code == 403 and "another origin" in refused.text
        assert SESSION not in refused.headers.get("set-cookie", "")
        assert c.post("/review/login", data={"key": API_KEY, "csrf": token}).status_code == 303
        csrf = c.get("/review").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        assert c.post("/review/logout", data={"csrf": csrf}, headers=headers).status_code == 403
        assert c.get("/review").status_code == 200  # the forged logout did nothing


def test_the_pages_own_origin_passes(redis_url: str) -> None:
    with browser(redis_url) as c:
        same = {"Origin": "http://testserver", "Referer": "http://testserver/review/login"}
        assert c.post("/review/login", data={"key": API_KEY, "csrf": form_token(c)}, headers=same).status_code == 303
    with browser(redis_url, review_origins=["https://review.example.com"]) as c:
        # Behind a proxy the configured origins are the page's, and the Host no longer decides.
        public = {"Origin": "https://review.example.com"}
        assert c.post("/review/login", data={"key": API_KEY, "csrf": form_token(c)}, headers=public).status_code == 303
        host = {"Origin": "http://testserver"}
        assert c.post("/review/login", data={"key": API_KEY, "csrf": form_token(c)}, headers=host).status_code == 403
