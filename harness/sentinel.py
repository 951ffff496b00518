"""A Sentinel-managed Redis on loopback: one primary, its replicas and three Sentinels, each a
``redis-server`` of its own on a free port, for failover tests and benchmarks.

:meth:`SentinelSet.kill_primary` is the crash (SIGKILL of whichever node is primary now) and
:meth:`SentinelSet.wait_failover` waits until the Sentinels have promoted a replica and it
answers as primary. Sentinels judge a primary down after ``down_after_ms`` without a reply: small
here, so a failover takes seconds, not the production default's 30 s.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from harness.net import free_port, wait_port
from harness.redis_server import RedisServer
from harness.service import Service

MASTER_NAME = "kyc"


class SentinelSet(Service):
    """One primary, ``replicas`` replicas of it and ``sentinels`` Sentinels (quorum: a majority).

    Args:
        workdir: where the nodes keep their files and the Sentinels their configuration.
        replicas: replicas of the first primary.
        sentinels: Sentinel processes (three: a majority survives one lost Sentinel).
        master_name: the name the Sentinels monitor the primary under.
        down_after_ms: how long a primary may not answer before a Sentinel thinks it down.
        failover_timeout_ms: Sentinel's ``failover-timeout`` (also the wait before a retry).
    """

    def __init__(
        self,
        workdir: Path,
        replicas: int = 1,
        sentinels: int = 3,
        master_name: str = MASTER_NAME,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        self.workdir = workdir
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.nodes = [RedisServer(workdir / "node-0")]
        primary = self.nodes[0].port
        self.nodes += [
            RedisServer(workdir / f"node-{n + 1}", extra_args=["--replicaof", "127.0.0.1", str(primary)])
            for n in range(replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def sentinels(self) -> list[str]:
        """The Sentinels as ``host:port`` (what ``KYC_REDIS_SENTINELS`` lists)."""
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def broker_url(self, db: int = 0) -> str:
        """kombu's form of the set: ``sentinel://...;sentinel://.../db``."""
        return ";".join(f"sentinel://{entry}" for entry in self.sentinels) + f"/{db}"

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every node and Sentinel; return once the replicas are in sync and each Sentinel
        knows them and the other Sentinels (a failover needs both).

        Raises:
            TimeoutError: the set did not form within ``timeout_s``.
        """
        try:
            for node in self.nodes:
                node.start()
            for n, port in enumerate(self.sentinel_ports):
                self._sentinels.append(self._start_sentinel(n, port))
            self._wait_formed(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start_sentinel(self, n: int, port: int) -> subprocess.Popen[bytes]:
        conf = self.workdir / f"sentinel-{n}.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        name = self.master_name
        conf.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {self.workdir}",
                    f"sentinel monitor {name} 127.0.0.1 {self.nodes[0].port} {len(self.sentinel_ports) // 2 + 1}",
                    f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                    f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {name} 1",
                    "loglevel warning",
                    f"logfile {self.workdir / f'sentinel-{n}.log'}",
                    "",
                ]
            )
        )
        proc = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(port)
        return proc

    def _wait_formed(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        replicas, others = len(self.nodes) - 1, len(self.sentinel_ports) - 1
        while True:
            formed = all(
                self._link_up(node) for node in self.nodes[1:]
            ) and all(
                len(self._ask(port, "SENTINEL", "REPLICAS", self.master_name)) >= replicas
                and len(self._ask(port, "SENTINEL", "SENTINELS", self.master_name)) >= others
                for port in self.sentinel_ports
            )  # fmt: skip
            if formed:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Sentinel set did not form within {timeout_s}s")
            time.sleep(0.2)

    @staticmethod
    def _link_up(node: RedisServer) -> bool:
        with redis.Redis(port=node.port, socket_timeout=2) as client:
            info = client.info("replication")
        return bool(info.get("master_link_status") == "up")

    @staticmethod
    def _ask(port: int, *command: str) -> list[object]:
        with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
            return list(client.execute_command(*command))

    def primary_port(self) -> int | None:
        """The primary's port as a majority of the Sentinels that answer report it (None: no
        majority yet)."""
        votes: dict[int, int] = {}
        for port in self.sentinel_ports:
            try:
                _, found = self._ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
            except (redis.exceptions.RedisError, ValueError):
                continue
            votes[int(str(found))] = votes.get(int(str(found)), 0) + 1
        best = max(votes.items(), key=lambda item: item[1], default=None)
        return best[0] if best is not None and best[1] > len(self.sentinel_ports) // 2 else None

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def kill_primary(self) -> int:
        """SIGKILL the node that is primary now; returns its port."""
        port = self.primary_port()
        if port is None:
            raise RuntimeError("the Sentinels agree on no primary")
        self.node(port).stop(hard=True)
        return port

    def wait_failover(self, old_port: int, timeout_s: float = 60.0) -> int:
        """Wait until the Sentinels name another primary and it answers as one; returns its port.

        Raises:
            TimeoutError: no replica was promoted within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port is not None and port != old_port:
                try:
                    with redis.Redis(port=port, socket_timeout=2) as client:
                        if client.execute_command("ROLE")[0] in (b"master", "master"):
                            return port
                except redis.exceptions.RedisError:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"no replica promoted within {timeout_s}s after the primary on {old_port} was lost")

    def rejoin(self, port: int, timeout_s: float = 60.0) -> None:
        """Start the lost node on ``port`` again, as a replica of the primary now (what Sentinel
        would make of it anyway), and wait until it is in sync.

        Raises:
            TimeoutError: not in sync within ``timeout_s``.
        """
        primary = self.primary_port()
        if primary is None or primary == port:
            raise RuntimeError("no other primary to rejoin")
        node = self.node(port)
        node.extra_args = ["--replicaof", "127.0.0.1", str(primary)]
        node.start()
        deadline = time.monotonic() + timeout_s
        while not self._link_up(node):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the node on {port} did not sync with {primary} within {timeout_s}s")
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in self._sentinels:
            proc.kill()
            proc.wait(timeout=10)
        self._sentinels = []
        for node in self.nodes:
            node.stop(hard=True)
