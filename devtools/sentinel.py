"""A private Redis Sentinel topology on loopback: a master, a replica and three Sentinels, for failover tests.

Every server is a real `redis-server` (a Sentinel is `redis-server <conf> --sentinel`) on a free port
of 127.0.0.1, each in a temporary directory; `kill_master()` sends SIGKILL to whichever server is
master now, as a crash would, and `wait_promoted()` waits for the Sentinels to name another one.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

import redis

from devtools.ports import free_port, wait_for_port
from devtools.processes import Stopping, poll, redis_server_binary
from devtools.redis_server import RedisServer

MASTER_NAME = "mymaster"
T = TypeVar("T")


class SentinelTopology(Stopping):
    """Start with `with SentinelTopology() as topology:`; `sentinels` is what REDIS_SENTINELS takes."""

    def __init__(self, down_after_ms: int = 1000, failover_timeout_ms: int = 5000, durable: bool = True) -> None:
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.durable = durable
        self.servers: list[RedisServer] = []
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._dir = Path(tempfile.mkdtemp(prefix="jitlb-sentinel-"))
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def sentinels(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    @property
    def url(self) -> str:
        """A REDIS_URL for the database number; with REDIS_SENTINELS set its host and port are not used."""
        return f"redis://127.0.0.1:{self.master_port()}/0"

    def start(self) -> Self:
        binary = redis_server_binary()
        # A replica's first sync starts at once (Redis waits 5 s by default, for other replicas to share it).
        master = RedisServer(durable=self.durable, extra=["--repl-diskless-sync-delay", "0"]).start()
        replica = RedisServer(
            durable=self.durable,
            extra=["--replicaof", "127.0.0.1", str(master.port), "--repl-diskless-sync-delay", "0"],
        )
        self.servers = [master, replica.start()]
        self._wait(lambda: self._client(replica.port).info("replication").get("master_link_status") == "up", "sync")
        # Each Sentinel is told the others and the replica up front (known-sentinel, known-replica), so that they can
        # agree on a failover at once rather than after meeting through the master's hello channel.
        ids = [secrets.token_hex(20) for _ in self.sentinel_ports]
        for index, port in enumerate(self.sentinel_ports):
            conf = self._dir / f"sentinel-{index}.conf"  # Sentinel rewrites its file: one each, writable
            known = "".join(
                f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {other} {ids[j]}\n"
                for j, other in enumerate(self.sentinel_ports)
                if j != index
            )
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self._dir}\nsentinel myid {ids[index]}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
                f"sentinel known-replica {MASTER_NAME} 127.0.0.1 {replica.port}\n{known}"
            )
            self._sentinels.append(
                subprocess.Popen(
                    [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        for port in self.sentinel_ports:
            wait_for_port(port)
        # Ready when each Sentinel knows the replica and the two other Sentinels: a failover can be agreed.
        self._wait(lambda: all(self._sees_everyone(port) for port in self.sentinel_ports), "the Sentinels to meet")
        return self

    def master_port(self) -> int:
        """The master's port as the first Sentinel that answers names it."""
        for port in self.sentinel_ports:
            try:
                host_port = self._client(port).sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if host_port:
                return int(host_port[1])
        raise RuntimeError("no Sentinel names a master")

    def kill_master(self) -> int:
        """SIGKILL the master now; returns its port."""
        port = self.master_port()
        next(server for server in self.servers if server.port == port).kill()
        return port

    def wait_promoted(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until every Sentinel names a master other than `old_port` that answers as master; its port."""

        def promoted() -> int | None:
            ports = set()
            for port in self.sentinel_ports:
                try:
                    ports.add(int(self._client(port).sentinel_get_master_addr_by_name(MASTER_NAME)[1]))
                except (redis.RedisError, TypeError):
                    return None
            if len(ports) != 1 or old_port in ports:
                return None
            (new,) = ports
            try:
                return new if self._client(new).info("replication").get("role") == "master" else None
            except redis.RedisError:
                return None

        port = self._wait(promoted, "a promotion", timeout)
        assert port is not None
        return port

    def stop(self) -> None:
        for process in self._sentinels:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        self._sentinels = []
        for server in self.servers:
            server.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _sees_everyone(self, port: int) -> bool:
        try:
            client = self._client(port)
            replicas = client.sentinel_slaves(MASTER_NAME)
            others = client.sentinel_sentinels(MASTER_NAME)
        except redis.RedisError:
            return False
        return len(replicas) >= 1 and len(others) >= len(self.sentinel_ports) - 1

    @staticmethod
    def _client(port: int) -> redis.Redis:
        # One connection a call, closed when the client is collected: these are a test's occasional questions.
        return redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True, retry=None
        )

    @staticmethod
    def _wait(predicate: Callable[[], T], what: str, timeout: float = 30.0) -> T:
        value = poll(predicate, timeout)
        if value is None:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        return value
