"""A private, throw-away redis-server on a free loopback port."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from typing import Self

from devtools.ports import free_port, wait_for_port
from devtools.processes import Closing, redis_server_binary


class RedisServer(Closing):
    """Start `redis-server` on 127.0.0.1, with no persistence unless `durable`; stop it on exit.

    `durable`: an append-only file synced at every write, so that a server killed (SIGKILL) and
    started again has every write it acknowledged, as a production Redis with persistence would.
    """

    def __init__(self, port: int | None = None, durable: bool = False, extra: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.durable = durable
        self.extra = extra or []
        self._dir = tempfile.mkdtemp(prefix="jitlb-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        self._process = subprocess.Popen(
            [
                redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                *(["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]),
                "--dir",
                self._dir,
                "--protected-mode",
                "yes",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed, and the port refuses connections until `start`."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    @property
    def pid(self) -> int:
        """The running server's process id (to SIGSTOP it: a Redis that hangs instead of refusing)."""
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process.pid

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
