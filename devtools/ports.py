"""Free loopback ports, waiting for a port to answer, and asking it over HTTP from a loopback address."""

from __future__ import annotations

import http.client
import socket
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
