"""Hostile HTTP at the stub over a real socket (uvicorn), below what a test client can send:
broken framing, parser abuse, JSON bombs, odd encodings and paths. Every answer is a 4xx, never
a 5xx or a dropped server, and the stub stays healthy afterwards.

The request-level rules (401 on a missing or wrong key, 422 naming the field, foreign buckets,
path-traversal keys, 413 on declared and chunked bodies) and the schemathesis run are in
tests/api_stub/test_api.py and tests/api_stub/test_api_fuzz.py; docs/OPERATIONS.md lists which
test covers what.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from api_stub.app import create_app
from harness import free_port, wait_port
from shared.config import ApiKey, Settings
from shared.producer import Producer

pytestmark = pytest.mark.services

KEY = "hostile-requests-key"
GOOD = b'{"kind": "faces", "image": "s3://kyc-images/a.jpg"}'


@pytest.fixture()
def stub_port(redis_url: str) -> Iterator[int]:
    settings = Settings(
        broker_url=redis_url, api_keys={"k": ApiKey.of(KEY, ["jobs:submit", "jobs:read"])}, api_max_body_bytes=64 * 1024
    )
    producer = Producer(settings)
    port = free_port()
    config = uvicorn.Config(create_app(settings, producer), host="127.0.0.1", port=port, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_port(port)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        producer.close()


def raw(port: int, request: bytes, timeout_s: float = 5.0) -> int:
    """Send raw bytes; the HTTP status of the answer, or 0 if the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        with contextlib.suppress(OSError):  # the server may stop reading a huge request
            sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout_s
        while b"\r\n" not in data and time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"HTTP/1.1 "):
        return 0
    return int(data.split(b" ", 2)[1])


def post(body: bytes, *headers: bytes, key: bytes = KEY.encode()) -> bytes:
    head = [b"POST /v1/jobs HTTP/1.1", b"Host: stub", b"X-API-Key: " + key, b"Connection: close", *headers]
    if not any(h.lower().startswith((b"content-length", b"transfer-encoding")) for h in headers):
        head.append(b"Content-Length: " + str(len(body)).encode())
    if not any(h.lower().startswith(b"content-type") for h in headers):
        head.append(b"Content-Type: application/json")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def get(path: bytes, key: bytes = KEY.encode()) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: stub\r\nX-API-Key: " + key + b"\r\nConnection: close\r\n\r\n"


HOSTILE: dict[str, bytes] = {
    "json_bomb_nested_lists": post(b"[" * 30000 + b"]" * 30000),
    "json_bomb_nested_objects": post(b'{"a":' * 10000 + b"1" + b"}" * 10000),
    "huge_integer": post(b'{"kind": "faces", "image": "s3://kyc-images/a.jpg", "job_id": ' + b"9" * 20000 + b"}"),
    "float_overflow": post(b'{"kind": "faces", "image": "s3://kyc-images/a.jpg", "job_id": 1e999999}'),
    "invalid_utf8": post(b'{"kind": "faces", "image": "s3://kyc-images/\xff\xfe.jpg"}'),
    "lone_surrogate": post(b'{"kind": "faces", "image": "s3://kyc-images/\\ud800.jpg"}'),
    "nul_in_key": post(b'{"kind": "faces", "image": "s3://kyc-images/a\\u0000.jpg"}'),
    "duplicate_kind": post(b'{"kind": "faces", "kind": "match", "image": "s3://kyc-images/a.jpg"}'),
    "json_null": post(b"null"),
    "form_encoded": post(b"kind=faces&image=s3://kyc-images/a.jpg", b"Content-Type: application/x-www-form-urlencoded"),
    "content_length_lies_short": post(GOOD, b"Content-Length: 5"),
    "content_length_not_a_number": post(GOOD, b"Content-Length: abc"),
    "content_length_negative": post(GOOD, b"Content-Length: -1"),
    "content_length_huge": post(GOOD, b"Content-Length: 99999999999999999999"),
    "length_and_chunked": post(b"5\r\nhello\r\n0\r\n\r\n", b"Content-Length: 4", b"Transfer-Encoding: chunked"),
    "chunked_oversized": post(
        (b"8001\r\n" + b"x" * 0x8001 + b"\r\n") * 2 + b"0\r\n\r\n", b"Transfer-Encoding: chunked"
    ),
    "bad_chunk_size": post(b"zz\r\nhello\r\n0\r\n\r\n", b"Transfer-Encoding: chunked"),
    "header_100kb": post(GOOD, b"X-Pad: " + b"a" * 100_000),
    "no_key": post(GOOD, key=b""),
    "wrong_key_same_length": post(GOOD, key=b"x" * len(KEY)),
    "key_with_trailing_space": post(GOOD, key=KEY.encode() + b" x"),
    "path_traversal_encoded": get(b"/v1/jobs/..%2f..%2fetc%2fpasswd"),
    "path_traversal_dots": get(b"/v1/jobs/../../etc/passwd"),
    "path_nul": get(b"/v1/jobs/%00"),
    "path_crlf_injection": get(b"/v1/jobs/a%0d%0aSet-Cookie:%20x=1"),
    "path_2k": get(b"/v1/jobs/" + b"a" * 2000),
    "get_without_key": get(b"/v1/jobs/some-job", key=b""),
    "unknown_method": b"BREW /v1/jobs HTTP/1.1\r\nHost: stub\r\nConnection: close\r\n\r\n",
    "not_http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS hello
    "http_0_9": b"GET /healthz\r\n\r\n",
}


def test_hostile_http_gets_4xx_and_the_stub_survives(stub_port: int) -> None:
    statuses = {name: raw(stub_port, request) for name, request in HOSTILE.items()}
    server_errors = {name: code for name, code in statuses.items() if code >= 500}
    assert not server_errors, server_errors
    # An answer for everything the HTTP parser accepts; a bare close only for what it cannot parse.
    silent = {name for name, code in statuses.items() if code == 0}
    assert silent <= {"not_http", "http_0_9", "header_100kb", "length_and_chunked", "bad_chunk_size"}, statuses
    assert statuses["no_key"] == statuses["wrong_key_same_length"] == statuses["key_with_trailing_space"] == 401
    assert statuses["get_without_key"] == 401
    assert statuses["content_length_huge"] == statuses["chunked_oversized"] == 413
    assert statuses["json_bomb_nested_lists"] == statuses["invalid_utf8"] == 400  # unparseable body
    assert statuses["lone_surrogate"] == statuses["nul_in_key"] == statuses["duplicate_kind"] == 422
    # uvicorn puts no small cap on header size (a 100 kB header is served): the reverse proxy in
    # front must (docs/OPERATIONS.md). What matters here is that it does not break the stub.
    assert statuses["header_100kb"] in (202, 400, 413, 431)
    refused = {name: code for name, code in statuses.items() if name != "header_100kb" and code}
    assert all(400 <= code < 500 for code in refused.values()), statuses
    # Still healthy, and still doing its job.
    assert raw(stub_port, get(b"/healthz")) == 200
    assert raw(stub_port, post(GOOD)) == 202
