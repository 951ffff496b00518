"""Hostile webhook receivers on loopback: one that trickles its answer a byte at a time, one
whose answer never ends. Each connection is served on a thread of its own."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

MODES = ("trickle", "endless")


class Tarpit:
    """A receiver on 127.0.0.1 that reads each request's headers, then either sends
    ``HTTP/1.1 200 OK`` one byte every ``interval_s`` (``trickle``: never done within a minute)
    or a 200 with a body that never ends, as fast as the socket takes it (``endless``).

    ``started`` counts the connections accepted, ``active`` those still being served.
    """

    def __init__(self, mode: str = "trickle", interval_s: float = 1.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode, self.interval_s = mode, interval_s
        self.started = 0
        self.active = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Tarpit:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.started += 1
                self.active += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 1 << 20:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                if self.mode == "endless":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
                    block = bytes(1 << 16)
                    while not self._stop.is_set():
                        conn.sendall(block)
                else:
                    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 10:
                        if self._stop.is_set():
                            return
                        conn.sendall(bytes([byte]))
                        time.sleep(self.interval_s)
        except OSError:
            pass  # the client hung up: what a deadline does
        finally:
            with self._lock:
                self.active -= 1
