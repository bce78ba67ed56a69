"""A private, throw-away NGINX on loopback whose server admits only the sources its allow file lists.

Its own prefix, configuration, pid file and logs in a temporary directory; never the system's
service. The protected server proxies `/` to an upstream (a second server of the same NGINX, so
that the snapshot has an upstream to read) and serves `/stream` slowly (20 KB/s), so that a request
can be in progress across a reload.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from devtools.ports import free_port, wait_for_port
from devtools.processes import Closing, stop_process

# Where Debian's package puts it; /usr/sbin is often not on a user's PATH.
DEFAULT_BINARY = "/usr/sbin/nginx"
STREAM_BYTES = 2_000_000  # at 20 KB/s: 100 s, longer than any test waits

CONFIG = """\
{user}
worker_processes 1;
pid {pid_file};
error_log {prefix}/error.log notice;
{shutdown}
events {{ worker_connections 256; }}

http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    # Idle client connections stay open between requests: that is what a revoke has to deal with.
    keepalive_timeout 60s;
    include {extra_file};

    upstream app {{
        server 127.0.0.1:{backend_port};
    }}

    server {{
        listen 127.0.0.1:{port};
        include {allow_file};
        deny all;
        location / {{ proxy_pass http://app; }}
        location = /stream {{ limit_rate 20k; default_type application/octet-stream; alias {prefix}/stream.bin; }}
    }}

    server {{
        listen 127.0.0.1:{backend_port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def nginx_binary() -> str | None:
    """The nginx binary to run: on the PATH, else Debian's /usr/sbin/nginx; None when neither exists."""
    found = shutil.which("nginx")
    if found:
        return found
    return DEFAULT_BINARY if os.access(DEFAULT_BINARY, os.X_OK) else None


class NginxServer(Closing):
    """Run `nginx -p <prefix> -c <conf> -g 'daemon off;'` on 127.0.0.1 with an empty allow file.

    `shutdown_timeout`: the `worker_shutdown_timeout` the configuration sets (None: the directive
    is left out, as a configuration jit-lb refuses to grant on).
    """

    def __init__(self, port: int | None = None, shutdown_timeout: str | None = "5s") -> None:
        self.port = port or free_port()
        self.backend_port = free_port()
        self.shutdown_timeout = shutdown_timeout
        self.prefix = Path(tempfile.mkdtemp(prefix="jitlb-nginx-"))
        self.prefix.chmod(0o755)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def binary(self) -> str:
        found = nginx_binary()
        if found is None:
            raise RuntimeError("nginx is not installed (apt-get install -y nginx)")
        return found

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def allow_file(self) -> str:
        return str(self.prefix / "jit-allow.conf")

    @property
    def extra_file(self) -> Path:
        """Another file the configuration includes (in `http`): what someone else might edit."""
        return self.prefix / "extra.conf"

    @property
    def config_file(self) -> str:
        return str(self.prefix / "nginx.conf")

    @property
    def pid_file(self) -> str:
        return str(self.prefix / "nginx.pid")

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def grant_spec(self) -> dict[str, str]:
        """The `grant:` of a policy target on this NGINX."""
        return {
            "kind": "nginx_allowlist",
            "allow_file": self.allow_file,
            "pid_file": self.pid_file,
            "nginx": self.binary,
            "config": self.config_file,
        }

    def write_config(self) -> None:
        shutdown = f"worker_shutdown_timeout {self.shutdown_timeout};" if self.shutdown_timeout else ""
        # A master started as root runs its workers as `nobody`, who may not pass a private TMPDIR (mode 700, as
        # `mktemp -d` makes it) to read /stream: 403. This throw-away NGINX's workers run as the master's user.
        user = "user root;" if os.geteuid() == 0 else ""
        Path(self.config_file).write_text(
            CONFIG.format(
                user=user,
                prefix=self.prefix,
                pid_file=self.pid_file,
                shutdown=shutdown,
                extra_file=self.extra_file,
                backend_port=self.backend_port,
                port=self.port,
                allow_file=self.allow_file,
            ),
            encoding="utf-8",
        )

    def start(self) -> Self:
        (self.prefix / "tmp").mkdir(exist_ok=True)
        for name in (self.allow_file, self.extra_file):
            if not Path(name).exists():
                Path(name).write_text("", encoding="utf-8")
        stream = self.prefix / "stream.bin"
        if not stream.exists():
            stream.write_bytes(b"x" * STREAM_BYTES)
        self.write_config()
        command = [self.binary, "-p", str(self.prefix), "-c", self.config_file, "-g", "daemon off;"]
        with (self.prefix / "stderr.log").open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port, timeout=10)
            self._wait_for_workers()
        except TimeoutError:
            self.stop()
            said = (self.prefix / "stderr.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"nginx did not start: {said}") from None
        return self

    def master(self) -> int:
        assert self._process is not None, "nginx is not running"
        return self._process.pid

    def workers(self) -> set[int]:
        """The master's children now (its workers, and old workers still shutting down)."""
        pid = self.master()
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}

    def reload_by_hand(self) -> set[int]:
        """SIGHUP as an operator would, and wait for a new worker; returns the workers from before."""
        before = self.workers()
        os.kill(self.master(), signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not self.workers() - before:
            if time.monotonic() > deadline:
                raise TimeoutError("nginx started no new worker")
            time.sleep(0.01)
        return before

    def wait_gone(self, old: set[int], timeout: float = 30.0) -> None:
        """Wait until none of `old` (workers from before a reload) is left."""
        deadline = time.monotonic() + timeout
        while self.workers() & old:
            if time.monotonic() > deadline:
                raise TimeoutError(f"old nginx workers {sorted(self.workers() & old)} still run")
            time.sleep(0.01)

    def _wait_for_workers(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not (Path(self.pid_file).exists() and self.workers()):
            if self._process is not None and self._process.poll() is not None:
                raise TimeoutError("nginx exited")
            if time.monotonic() > deadline:
                raise TimeoutError("no nginx worker")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop nginx at once (SIGTERM is NGINX's fast shutdown); open connections are cut."""
        stop_process(self._process)
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.prefix, ignore_errors=True)
