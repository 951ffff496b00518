"""Fixtures of the event tests: settings on the test's Redis and S3, the producer behind the
consumers' seams, and functions that count what reached the job system."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared import keys
from shared.config import EventRule, Settings
from shared.events.consumer import Consumer, default_routes
from shared.events.wiring import producer_submit, validator
from shared.producer import Producer
from tests.conftest import S3Endpoint, need

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
    validate = validator(ev_settings, producer.images.validate)
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


@dataclass
class Receiver:
    """A webhook receiver on loopback that checks every signature; answers 500 ``fail_first`` times."""

    secret: str
    fail_first: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                try:
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers))
                    valid = True
                except WebhookVerificationError:
                    payload, valid = None, False
                receiver.calls.append({"valid": valid, "payload": payload, "id": self.headers["webhook-id"]})
                status = 500 if len(receiver.calls) <= receiver.fail_first else (204 if valid else 401)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def serving(receiver: Receiver, url: str, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """Run ``receiver`` on a free port of 127.0.0.1; ``url`` is a template with ``{port}``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver.handler())
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    receiver.url = url.format(port=server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def receiver(request: pytest.FixtureRequest, ev_settings: Settings) -> Iterator[Receiver]:
    """A plain-http receiver; ``indirect`` parametrisation sets how many requests it fails first."""
    r = Receiver(ev_settings.webhook_secrets["acme"].get_secret_value(), getattr(request, "param", 0))
    with serving(r, "http://127.0.0.1:{port}/kyc/hook?src=kyc") as served:
        yield served


@pytest.fixture()
def tls_ca(tmp_path: Path) -> Path:
    """A self-signed certificate for ``localhost`` (key beside it), made with openssl."""
    need(shutil.which("openssl") is not None, "openssl is not installed")
    cert = tmp_path / "localhost.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(tmp_path / "localhost.key"), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert


@pytest.fixture()
def tls_receiver(ev_settings: Settings, tls_ca: Path) -> Iterator[Receiver]:
    """The receiver over HTTPS on 127.0.0.1, its certificate issued to ``localhost``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_ca, tls_ca.with_suffix(".key"))
    r = Receiver(ev_settings.webhook_secrets["acme"].get_secret_value())
    with serving(r, "https://localhost:{port}/kyc/hook", context) as served:
        yield served
