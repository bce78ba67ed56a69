"""Free loopback ports, waiting for a port to answer, and asking it over HTTP from a loopback address."""

from __future__ import annotations

import http.client
import random
import socket
import time
from pathlib import Path

LOWEST = 20000  # free_port's ports lie between this and the ephemeral range


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the kernel's ephemeral range.

    Not the port bind(0) hands out: that one is from the ephemeral range, which every outgoing connection draws
    its local port from, so one of the suite's many clients could take it before the server meant for it binds
    (CI saw a web fail to bind, "address already in use"). A random port below that range is one no connection
    takes; two callers drawing the same one is as unlikely as one in twelve thousand allows.
    """
    highest = _ephemeral_start() - 1
    for _ in range(100):
        port = random.randint(LOWEST, highest)  # a port to try, not a secret
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded machine: what the kernel gives
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_start() -> int:
    """The lowest port of the kernel's ephemeral range (Linux's default when it cannot be read)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
    return low if low > LOWEST + 1000 else 32768


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """Block until something accepts connections on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered on {host}:{port} within {timeout}s")


def connect(port: int, source: str, timeout: float = 10) -> http.client.HTTPConnection:
    """An HTTP connection to 127.0.0.1:port from the loopback address `source` (opened at its first request)."""
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))


def ask(conn: http.client.HTTPConnection, path: str = "/") -> int:
    """GET `path` on the connection, read whole; its status."""
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status
