"""A private, throw-away HAProxy on loopback whose frontend admits only sources in a runtime-managed ACL."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

from devtools.ports import ask, connect, free_port, wait_for_port
from devtools.processes import Closing, stop_process

# How long /stream keeps a response open: long enough that only a shut session ends it early.
STREAM_SECONDS = 30.0
# The stick table the frontend counts each admitted source's use in (a grant spec's `stick_table`).
STICK_TABLE = "jit_use"

CONFIG = """\
global
    stats socket {unix_socket} mode 600 level admin
    stats socket ipv4@127.0.0.1:{stats_port} level admin

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    # Idle client connections must stay open between requests: that is what a revoke has to deal with.
    option http-keep-alive
    timeout http-keep-alive 30s

frontend jit
    bind 127.0.0.1:{port}
    http-request deny deny_status 403 unless {{ src -f {acl_file} }}
    # After the deny: only admitted requests are counted, per source address.
    http-request track-sc0 src table {stick_table}
    default_backend app

backend app
    server app 127.0.0.1:{backend_port}

# Holds no servers: the table a grant's use is read from. `type ipv6` holds IPv4 sources too (as ::ffff:a.b.c.d).
backend {stick_table}
    stick-table type ipv6 size 100k expire 24h store conn_cnt,conn_cur,http_req_cnt,bytes_in_cnt,bytes_out_cnt,gpc0
"""


class _Handler(BaseHTTPRequestHandler):
    """`/stream` sends a line every 0.1s for STREAM_SECONDS; anything else is 200 `ok`."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/stream":
            self._stream()
            return
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + STREAM_SECONDS
        try:
            while time.monotonic() < deadline:
                self.wfile.write(b"6\r\ntick.\n\r\n")
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            # HAProxy shut the session this stream belonged to: exactly what a revoke does.
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: tests read their own output."""


class _Backend:
    """A threaded HTTP server on a free 127.0.0.1 port, answering for HAProxy's one backend server."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        # Streams still open at stop would otherwise hold server_close() until they end.
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, name="haproxy-backend", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class HaproxyServer(Closing):
    """Run `haproxy -db` on 127.0.0.1 with an admin runtime API (unix and tcp) and an empty JIT allow ACL."""

    def __init__(self, port: int | None = None, stats_port: int | None = None) -> None:
        self.port = port or free_port()
        self.stats_port = stats_port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="jitlb-haproxy-"))
        self._backend: _Backend | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def unix_socket(self) -> Path:
        return self._dir / "admin.sock"

    @property
    def runtime_api_unix(self) -> str:
        return f"unix:{self.unix_socket}"

    @property
    def runtime_api_tcp(self) -> str:
        return f"tcp:127.0.0.1:{self.stats_port}"

    @property
    def acl_file(self) -> str:
        """The ACL's name on the runtime API: the file path exactly as the configuration names it."""
        return str(self._dir / "jit-allow.acl")

    @property
    def stick_table(self) -> str:
        """The stick table the frontend tracks sources in: a grant spec's `stick_table`."""
        return STICK_TABLE

    @property
    def config_file(self) -> Path:
        return self._dir / "haproxy.cfg"

    @property
    def log_file(self) -> Path:
        return self._dir / "haproxy.log"

    def start(self) -> Self:
        binary = shutil.which("haproxy")
        if binary is None:
            raise RuntimeError("haproxy is not installed (apt-get install -y haproxy)")
        if self._backend is None:
            self._backend = _Backend()
            self._backend.start()
        acl = Path(self.acl_file)
        if not acl.exists():
            acl.write_text("", encoding="utf-8")
        self.config_file.write_text(
            CONFIG.format(
                unix_socket=self.unix_socket,
                stats_port=self.stats_port,
                port=self.port,
                acl_file=self.acl_file,
                backend_port=self._backend.port,
                stick_table=STICK_TABLE,
            ),
            encoding="utf-8",
        )
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, "-f", str(self.config_file), "-db"], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port(self.port, timeout=10)
            wait_for_port(self.stats_port, timeout=10)
            self._wait_for_socket()
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"haproxy did not start: {self.log_file.read_text(errors='replace')[-2000:]}") from None
        return self

    def _wait_for_socket(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.unix_socket.is_socket():
            if self._process is not None and self._process.poll() is not None:
                raise TimeoutError("haproxy exited")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no runtime API socket at {self.unix_socket}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop haproxy at once (SIGTERM is HAProxy's hard stop); open connections are cut."""
        stop_process(self._process)
        self._process = None
        # A stale socket file would pass for the next start's before that haproxy has bound it.
        self.unix_socket.unlink(missing_ok=True)

    def reload(self) -> None:
        """Restart haproxy on the same ports: entries added over the runtime API vanish, the file's stay."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._backend is not None:
            self._backend.stop()
            self._backend = None
        shutil.rmtree(self._dir, ignore_errors=True)


def http_status(
    port: int, source: str, connection: http.client.HTTPConnection | None = None, timeout: float = 5
) -> int:
    """GET / on 127.0.0.1:port from the loopback address `source`; a fresh connection unless one is given."""
    conn = connection or connect(port, source, timeout)
    try:
        return ask(conn)
    finally:
        if connection is None:
            conn.close()
