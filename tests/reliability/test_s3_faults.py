"""S3 down or stalling mid-run: the worker retries with backoff a bounded number of times, then
fails the job with a clear message; no worker process dies; once S3 is back new jobs succeed.

The worker reaches moto through a small TCP proxy on loopback that the test switches between
forwarding, refusing connections (listener closed: the endpoint is down) and stalling them
(accepts, never answers: a hung or overloaded endpoint).
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from harness import RedisServer, S3Endpoint, free_port
from shared.engine import KYCDeepFace
from shared.jobs import JobStatus
from shared.schemas import to_dict
from tests.reliability.conftest import fault_env, producer_for, ref, wait_terminal, worker_running

pytestmark = [pytest.mark.services, pytest.mark.slow]

MAX_ATTEMPTS = 3


class _Handler(socketserver.BaseRequestHandler):
    server: FaultProxy

    def handle(self) -> None:
        if self.server.mode == "stall":
            # Read and drop whatever arrives; never answer. The client's read timeout fires.
            self.request.settimeout(0.2)
            while not self.server.closing.is_set():
                try:
                    if not self.request.recv(65536):
                        return
                except TimeoutError:
                    continue
                except OSError:
                    return
            return
        with socket.create_connection(self.server.target, timeout=5) as upstream:
            pump = threading.Thread(target=_pipe, args=(upstream, self.request), daemon=True)
            pump.start()
            _pipe(self.request, upstream)
            pump.join(timeout=5)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class FaultProxy(socketserver.ThreadingTCPServer):
    """TCP proxy to ``target`` on a fixed loopback port: ``up()``/``down()``, mode pass|stall."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "pass"
        self.closing = threading.Event()
        self.port = port
        super().__init__(("127.0.0.1", port), _Handler, bind_and_activate=False)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self.socket.close()  # the previous listener (or the unbound one from __init__)
        self.socket = socket.socket(self.address_family, self.socket_type)
        self.closing.clear()
        self.server_bind()
        self.server_activate()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Close the listener: new connections are refused, as with a stopped endpoint."""
        if self._thread is None:
            return
        self.closing.set()
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
        self._thread = None


@pytest.fixture()
def proxy(photo_bucket: S3Endpoint) -> Iterator[FaultProxy]:
    target = urlsplit(photo_bucket.url)
    server = FaultProxy(free_port(), (str(target.hostname), int(target.port or 80)))
    server.up()
    try:
        yield server
    finally:
        server.down()


def test_s3_down_or_stalled_fails_jobs_cleanly_and_recovers(
    aof_redis: RedisServer,
    photo_bucket: S3Endpoint,
    proxy: FaultProxy,
    small_photos: dict[str, bytes],
    engine: KYCDeepFace,
    tmp_path: Path,
) -> None:
    env = fault_env(
        aof_redis.url,
        photo_bucket,
        KYC_S3_ENDPOINT_URL=proxy.url,
        KYC_S3_CONNECT_TIMEOUT_S="0.5",
        KYC_S3_READ_TIMEOUT_S="0.5",
        KYC_S3_MAX_ATTEMPTS="2",
        KYC_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
    )
    client = redis.Redis.from_url(aof_redis.url)
    producer = producer_for(aof_redis.url, photo_bucket)
    key = "small/fr_obama.jpg.jpg"
    try:
        with worker_running(env, tmp_path / "worker.log") as worker:
            assert worker.proc is not None
            pids = (worker.proc.pid, worker.pool_pids())
            outcomes = {}
            for phase in ("down", "stall"):
                if phase == "down":
                    proxy.down()
                else:
                    proxy.mode = "stall"
                    proxy.up()
                started = time.monotonic()
                ids = [producer.submit_faces(ref(key), job_id=f"{phase}-{i}").job_id for i in range(3)]
                outcomes[phase] = (wait_terminal(client, ids, timeout_s=60), time.monotonic() - started)
                proxy.down()

            proxy.mode = "pass"
            proxy.up()
            back = [
                producer.submit_faces(ref(k), job_id=f"back-{i}").job_id for i, k in enumerate(sorted(small_photos))
            ]
            recovered = wait_terminal(client, back, timeout_s=60)
            assert worker.proc.poll() is None
            after = (worker.proc.pid, worker.pool_pids())
            log = worker.log()
    finally:
        producer.close()

    for phase, (docs, took_s) in outcomes.items():
        for job_id, doc in docs.items():
            assert doc.status is JobStatus.FAILED, (phase, job_id, doc)
            assert doc.error is not None and doc.error.type == "StorageUnavailableError", doc.error
            assert doc.error.code == "ERROR"
            assert "S3 unreachable" in doc.error.message and key in doc.error.message, doc.error.message
            assert f"gave up after {MAX_ATTEMPTS} attempts" in doc.error.message
            assert doc.attempts == MAX_ATTEMPTS and doc.result is None
        # Bounded: attempts x (botocore's own tries x timeouts + backoff), not a retry storm.
        assert took_s < 45, (phase, took_s)
    # No worker death: the same main and pool processes throughout, no lost-worker event.
    assert after == pids
    assert "WorkerLostError" not in log and "exited with" not in log
    assert all(d.status is JobStatus.SUCCEEDED for d in recovered.values())
    for i, k in enumerate(sorted(small_photos)):
        assert recovered[f"back-{i}"].result == to_dict(engine.get_faces(small_photos[k]))
