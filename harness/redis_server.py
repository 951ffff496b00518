"""A private ``redis-server`` on a free port, for one test session, one test or one benchmark."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from harness.net import free_port, wait_port
from harness.service import Service


class RedisServer(Service):
    """``redis-server`` on 127.0.0.1 with its files in ``workdir``.

    ``stop(hard=True)`` is a crash (SIGKILL) and ``start()`` brings it back on the same port, so
    with ``appendonly`` only what the AOF holds survives, as after a real crash.

    Args:
        workdir: where Redis keeps its AOF (nothing is written there without ``appendonly``).
        appendonly: keep an append-only file.
        appendfsync: ``always`` makes every acknowledged write survive a SIGKILL; ``everysec``
            is Redis's production default.
        databases: how many numbered databases (``SELECT n``) the server has.
        extra_args: more ``redis-server`` options (``--replicaof 127.0.0.1 <port>``).
    """

    def __init__(
        self,
        workdir: Path,
        appendonly: bool = False,
        appendfsync: Literal["always", "everysec", "no"] = "always",
        databases: int = 16,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.databases = databases
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.db_url(0)

    def db_url(self, db: int) -> str:
        """The URL of database ``db`` on this server."""
        if not 0 <= db < self.databases:
            raise ValueError(f"database {db} out of range: this server has {self.databases}")
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("redis-server is not running")
        return self.proc.pid

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
            "--databases", str(self.databases), "--maxmemory-policy", "noeviction", "--loglevel", "warning",
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    def stop(self, hard: bool = True) -> None:
        """SIGKILL (``hard``, a crash) or SIGTERM (a clean shutdown) and wait for the exit."""
        if self.proc is not None:
            if hard:
                self.proc.kill()
            else:
                self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self, hard: bool = True) -> None:
        """Stop (a crash when ``hard``) and start again on the same port."""
        self.stop(hard=hard)
        self.start()
