"""What the programs the tests start on loopback share: finding the binary, stopping it, and `with` around it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self, TypeVar

from devtools.ports import wait_for_port

T = TypeVar("T")


def redis_server_binary() -> str:
    """The redis-server on PATH, or a RuntimeError saying how to install it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    return binary


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGTERM a process that still runs and wait for it; SIGKILL it if it has not exited within `timeout`."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """The first true value `predicate` gives, asked every `interval` seconds for `timeout` seconds; None after that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


@contextmanager
def serving(command: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`command` run in a subprocess for the block, entered once something answers on `port`; stopped at its end."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port)
        yield process
    finally:
        stop_process(process)
        if process.stderr is not None:
            process.stderr.close()


class Closing:
    """`with Server() as server:` starts it and closes it (stopped, its files removed) at the end."""

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()


class Stopping(Closing):
    """`with Several() as them:` starts them (stopping what started if that fails) and stops them at the end."""

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise
