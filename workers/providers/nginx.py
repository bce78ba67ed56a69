"""NGINX allow-list grants: one `allow <cidr>;` line a source, its leases in a comment on the line, NGINX reloaded.

The allow file is included inside the protected `server` or `location`, before its `deny all;`. A
line jit-lb writes reads

    allow 203.0.113.7/32; # jit-lb: jit-4k7m2q until 2026-12-02T23:30:00Z, jit-8p9q3r until 2026-12-02T23:45:00Z

one lease a request (overlapping grants from one source share the line), so that the sweep judges
it from the file alone. Each change is written whole to a temporary file beside it and renamed over
it, under an flock on LOCK_NAME in the same directory (every jit-lb worker on the host and every
allow file of that directory take their turn); then `nginx -T` tests the configuration and dumps it
(the files it includes, `worker_shutdown_timeout`), and only a configuration that tests is loaded,
by SIGHUP to the master named in the pid file. A change that does not test, or that NGINX does not
load, puts the file back as it was.

What a reload does to connections, as NGINX 1.22 does it (measured by tests/providers/test_nginx.py):

- On SIGHUP the master reads the configuration, starts new workers, and only then, 100 ms later,
  tells the old workers to shut down. Until then the old workers accept connections and answer
  requests under the old configuration: a revoked source kept getting 200 on a kept-alive
  connection (over a hundred answers) after the new workers were up.
- An old worker told to shut down stops accepting, closes its idle keep-alive connections at once,
  and closes every other connection when the request in progress on it ends (a pipelined request
  behind it is not answered). A request in progress (a download, a long poll, a WebSocket, an
  HTTP/2 stream) runs on until it ends or `worker_shutdown_timeout` passes; then the worker closes
  what is left and exits.

So a revoke is done only when every worker that ran before its reload has exited: `drop` waits for
that, bounded by the configuration's `worker_shutdown_timeout` (a grant is refused on a configuration
without one, or with one longer than MAX_SHUTDOWN_SECONDS), and ends an old worker still there after
it (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import NginxAllowlistGrant
from jit_lb.access.requests import Use
from workers.providers import markers
from workers.providers.base import Entries, GrantOrder, Lease, ManagedObject

KIND = "nginx_allowlist"
# The flock every change takes, in the allow file's directory: one change at a time, reload included.
LOCK_NAME = ".jit-lb-nginx.lock"
LOCK_SECONDS = 120.0
# `nginx -T`: testing and dumping even a large configuration takes well under this.
TEST_SECONDS = 30.0
# After SIGHUP, new workers appear within this (NGINX parses the configuration first); none: the reload failed.
RELOAD_SECONDS = 10.0
# The master waits this long after starting new workers before it tells the old ones to shut down.
MASTER_PAUSE_SECONDS = 0.1
# Beyond worker_shutdown_timeout, how long old workers get to exit, then again after SIGTERM.
EXIT_MARGIN_SECONDS = 3.0
# The longest worker_shutdown_timeout a grant accepts: a revoke holds its lock (and its job) that long.
MAX_SHUTDOWN_SECONDS = 60.0
POLL_SECONDS = 0.01

MARK = "jit-lb:"
ALLOW_LINE = re.compile(r"^\s*allow\s+(?P<source>[^\s;#]+)\s*;\s*(?:#\s?(?P<comment>.*))?$")
LEASE_TEXT = re.compile(r"^(?P<id>\S+)\s+until\s+(?P<end>\S+)$")
DUMP_HEADER = re.compile(r"^# configuration file (?P<path>.+):$")
SHUTDOWN_TIMEOUT = re.compile(r"(?:^|[;{}\s])worker_shutdown_timeout\s+(?P<value>[^;\s]+)\s*;")
UPSTREAM_BLOCK = re.compile(r"(?:^|[;{}\s])upstream\s+(?P<name>[^\s{]+)\s*\{(?P<body>[^}]*)\}")
UPSTREAM_SERVER = re.compile(r"(?:^|[;{\s])server\s+(?P<address>[^\s;]+)(?P<params>[^;]*);")
# `2026/12/02 23:07:37 [emerg] 4164#4164: `: the time and process of an error-log line, noise in a message.
LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(?P<level>\w+)\] \d+#\d+: ")
NGINX_TIME = re.compile(r"(\d+)(ms|s|m|h|d|w|M|y)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000}


# --- the allow file -------------------------------------------------------------------------------


@dataclass
class AllowLine:
    """One `allow` line: its source as written, and its leases when it carries jit-lb's marker."""

    source: str
    marked: bool
    leases: list[Lease] = field(default_factory=list)
    # The line as read: a line without the marker is someone else's and is written back word for word.
    original: str = ""
    # Lease texts that do not read `<request id> until <time>`: the line is not of jit-lb's making.
    unreadable: list[str] = field(default_factory=list)

    def request_ids(self) -> set[str]:
        return {lease.request_id for lease in self.leases}

    def render(self) -> str:
        if not self.marked:
            return self.original
        held = ", ".join(f"{lease.request_id} until {markers.format_time(lease.ends_at)}" for lease in self.leases)
        return f"allow {self.source}; # {MARK} {held}".rstrip()


@dataclass
class AllowFile:
    """The allow file as lines: `allow` lines parsed, every other line (comments, blanks) kept as it is."""

    lines: list[str | AllowLine]

    @classmethod
    def parse(cls, text: str) -> AllowFile:
        return cls([_parse_line(line) for line in text.splitlines()])

    def render(self) -> str:
        return "".join(f"{line.render() if isinstance(line, AllowLine) else line}\n" for line in self.lines)

    def allowed(self) -> set[str]:
        """Every source an `allow` line admits, marked or not: what a reload changes."""
        return {line.source for line in self.lines if isinstance(line, AllowLine)}

    def marked(self, source: str) -> list[AllowLine]:
        return [line for line in self.lines if isinstance(line, AllowLine) and line.marked and line.source == source]

    def sources(self) -> list[str]:
        """The sources of marked lines, each once, in file order."""
        return list(dict.fromkeys(line.source for line in self.lines if isinstance(line, AllowLine) and line.marked))

    def unmarked(self) -> list[str]:
        return [line.source for line in self.lines if isinstance(line, AllowLine) and not line.marked]

    def hold(self, source: str, lease: Lease) -> None:
        """Give `source` a line holding `lease` (replacing that request's earlier lease); one line a source."""
        kept = self._merge(source)
        if kept is None:
            kept = AllowLine(source=source, marked=True)
            self.lines.append(kept)
        kept.leases = [held for held in kept.leases if held.request_id != lease.request_id] + [lease]

    def release(self, source: str, request_ids: set[str]) -> bool:
        """Drop those leases from `source`'s line and the line when none is left; True when it is gone."""
        kept = self._merge(source)
        if kept is None:
            return True
        kept.leases = [held for held in kept.leases if held.request_id not in request_ids]
        if kept.leases or kept.unreadable:
            return False
        self.lines.remove(kept)
        return True

    def remove(self, source: str) -> None:
        """Remove every marked line of `source`, whatever its leases (a lockdown)."""
        self.lines = [
            line for line in self.lines if not (isinstance(line, AllowLine) and line.marked and line.source == source)
        ]

    def _merge(self, source: str) -> AllowLine | None:
        """The first marked line of `source`, holding the leases of any duplicates (which are removed)."""
        found = self.marked(source)
        if not found:
            return None
        first, *others = found
        for other in others:
            first.leases += [lease for lease in other.leases if lease.request_id not in first.request_ids()]
            first.unreadable += other.unreadable
            self.lines.remove(other)
        return first


def _parse_line(text: str) -> str | AllowLine:
    match = ALLOW_LINE.match(text)
    if match is None:
        return text
    comment = (match["comment"] or "").strip()
    if not comment.startswith(MARK):
        return AllowLine(source=match["source"], marked=False, original=text)
    line = AllowLine(source=match["source"], marked=True)
    for part in filter(None, (piece.strip() for piece in comment.removeprefix(MARK).split(","))):
        lease = LEASE_TEXT.match(part)
        if lease is None:
            line.unreadable.append(part)
        else:
            line.leases.append(markers.read_lease(lease["id"], lease["end"]))
    return line


# --- NGINX itself ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dump:
    """What `nginx -T` printed: each configuration file it read, by path, with its text."""

    files: dict[str, str]

    def directives(self) -> str:
        """Every file's text without comments, one after the other."""
        return "\n".join(_without_comments(text) for text in self.files.values())

    def shutdown_timeout(self) -> float | None:
        """`worker_shutdown_timeout` in seconds, or None when the configuration sets none."""
        found = SHUTDOWN_TIMEOUT.findall(self.directives())
        return _nginx_seconds(found[-1]) if found else None

    def upstream_servers(self) -> Entries:
        """Each `server` of each `upstream` block, by upstream and address, to its parameters."""
        entries: Entries = {}
        for block in UPSTREAM_BLOCK.finditer(self.directives()):
            for server in UPSTREAM_SERVER.finditer(block["body"]):
                params = " ".join(server["params"].split())
                entries[f"upstream {block['name']}: server {server['address']}"] = params or "(no parameters)"
        return entries


class Nginx:
    """One NGINX: the binary that tests its configuration, and the master process named by its pid file."""

    def __init__(self, binary: str, config: str | None, pid_file: str, reload_seconds: float = RELOAD_SECONDS) -> None:
        self.binary = binary
        self.config = config
        self.pid_file = pid_file
        self.reload_seconds = reload_seconds

    def dump(self) -> Dump:
        """`nginx -T`: test the configuration and read its files; a ProviderError in NGINX's words when it fails."""
        command = [self._binary(), "-T", *(["-c", self.config] if self.config else [])]
        try:
            done = subprocess.run(command, capture_output=True, timeout=TEST_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            raise ProviderError(f"`{' '.join(command)}` did not finish within {TEST_SECONDS:g}s") from None
        except OSError as err:
            raise ProviderError(f"`{' '.join(command)}` could not run: {err.strerror or err}") from None
        if done.returncode != 0:
            said = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
            why = "; ".join(
                LOG_PREFIX.sub("", line.removeprefix("nginx: ")) for line in said if "test failed" not in line
            )
            raise ProviderError(f"`nginx -T` refuses NGINX's configuration: {markers.shown(why or 'no reason given')}")
        return _parse_dump(done.stdout.decode(errors="replace"))

    def master(self) -> int:
        """The master's pid, from the pid file; a ProviderError unless it names a running NGINX master."""
        try:
            text = Path(self.pid_file).read_text(encoding="ascii", errors="replace").strip()
        except OSError as err:
            raise ProviderError(
                f"NGINX's pid file {self.pid_file} cannot be read ({err.strerror}): is NGINX running, and is this "
                "the `pid` its configuration names?"
            ) from None
        if not text.isdigit():
            raise ProviderError(f"NGINX's pid file {self.pid_file} holds `{markers.shown(text)}`, not a pid")
        pid = int(text)
        title = _cmdline(pid)
        if title is None:
            raise ProviderError(f"NGINX's pid file {self.pid_file} names pid {pid}, which is not running")
        if not title.startswith("nginx: master process"):
            raise ProviderError(
                f"NGINX's pid file {self.pid_file} names pid {pid}, which is `{markers.shown(title[:80])}`, not an "
                "NGINX master process"
            )
        return pid

    def reload(self) -> tuple[int, set[int]]:
        """SIGHUP to the master, then wait for its new workers; returns the master and the processes it had before.

        Raises ProviderError when the master cannot be signalled or starts no new worker in time (it
        refused the configuration, or a port could not be bound: its error log says which).
        """
        master = self.master()
        before = _children(master)
        try:
            os.kill(master, signal.SIGHUP)
        except PermissionError:
            raise ProviderError(
                f"jit-lb may not signal NGINX's master (pid {master}): run the worker as the user NGINX's master "
                "runs as (usually root)"
            ) from None
        except ProcessLookupError:
            raise ProviderError(f"NGINX's master (pid {master}) exited before it could be reloaded") from None
        deadline = time.monotonic() + self.reload_seconds
        while not _children(master) - before:
            if time.monotonic() > deadline:
                raise ProviderError(
                    f"NGINX (master pid {master}) started no new worker within {self.reload_seconds:g}s of SIGHUP: "
                    "it did not load the configuration (its error log says why) and still runs the one before"
                )
            time.sleep(POLL_SECONDS)
        return master, before

    def settle(self, master: int, old: set[int]) -> None:
        """Wait until no old worker takes new connections: each has exited or shows `worker process is shutting down`.

        Until then a new connection may land on an old worker and be judged by the old allow list.
        """
        deadline = time.monotonic() + self.reload_seconds
        while not all(_serves_no_new_connections(pid) for pid in _children(master) & old):
            if time.monotonic() > deadline:
                raise ProviderError(
                    f"NGINX (master pid {master}) did not tell its old workers to shut down within "
                    f"{self.reload_seconds:g}s of starting new ones"
                )
            time.sleep(POLL_SECONDS)

    def wait_exit(self, master: int, old: set[int], shutdown_timeout: float) -> list[int]:
        """Wait until every process in `old` has exited; end those left after `shutdown_timeout`, SIGTERM then SIGKILL.

        Returns the pids that had to be ended; raises ProviderError naming those that would not go.
        """
        ended: list[int] = []
        wait = MASTER_PAUSE_SECONDS + shutdown_timeout + EXIT_MARGIN_SECONDS
        for ending in (signal.SIGTERM, signal.SIGKILL, None):
            deadline = time.monotonic() + wait
            while _children(master) & old and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
            left = sorted(_children(master) & old)
            if not left:
                return ended
            if ending is None:
                break
            for pid in left:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, ending)
            ended = sorted(set(ended) | set(left))
            wait = EXIT_MARGIN_SECONDS
        raise ProviderError(
            f"NGINX's old workers {', '.join(map(str, left))} (master pid {master}) still run after the reload, "
            "SIGTERM and SIGKILL: they may still answer a revoked source on connections they hold; end them by hand "
            f"(`kill -KILL {' '.join(map(str, left))}` as root)"
        )

    def _binary(self) -> str:
        if "/" in self.binary:
            return self.binary
        found = shutil.which(self.binary) or shutil.which(self.binary, path="/usr/sbin:/usr/local/sbin:/sbin")
        if found is None:
            raise ProviderError(
                f"no `{self.binary}` on the worker's PATH to test NGINX's configuration with: name the binary in the "
                "grant spec's `nginx` field (e.g. /usr/sbin/nginx)"
            )
        return found


def _parse_dump(text: str) -> Dump:
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        header = DUMP_HEADER.match(line)
        if header is not None:
            current = files.setdefault(header["path"], [])
            continue
        if current is not None:
            current.append(line)
    # `nginx -T` ends each file with one blank line of its own.
    return Dump({path: "\n".join(lines).removesuffix("\n") for path, lines in files.items()})


def _without_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _nginx_seconds(value: str) -> float | None:
    """An NGINX time (`10s`, `500ms`, `1m30s`, `30`: seconds) in seconds; None when it is not one."""
    if not re.fullmatch(r"(\d+(ms|s|m|h|d|w|M|y)?)+", value):
        return None
    return float(sum(int(number) * _UNIT_SECONDS[unit or "s"] for number, unit in NGINX_TIME.findall(value)))


def _cmdline(pid: int) -> str | None:
    """A process's command line as `ps` shows it (NGINX rewrites its own: `nginx: master process …`); None when gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _serves_no_new_connections(pid: int) -> bool:
    """Whether a process of the master's no longer takes connections: gone, shutting down, or not a worker."""
    title = _cmdline(pid)
    return title is None or "worker process" not in title or "is shutting down" in title


def _children(pid: int) -> set[int]:
    """The pids of a process's children (NGINX's master: its workers, cache manager and loader)."""
    try:
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except FileNotFoundError:
        pass  # a kernel without CONFIG_PROC_CHILDREN: every process says who its parent is
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                # The fields after the command, which sits in parentheses and may hold blanks: state, then ppid.
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children.add(int(entry.name))
    return children


# --- the provider ---------------------------------------------------------------------------------


class NginxAllowlistProvider:
    """`allow` lines in one NGINX allow file; each line's comment holds a lease per request it serves."""

    owns_unleased = False  # a line in the file may be someone's own (written by hand): left alone, reported

    def __init__(self, spec: NginxAllowlistGrant, reload_seconds: float = RELOAD_SECONDS) -> None:
        self.spec = spec
        self.path = Path(spec.allow_file)
        self.nginx = Nginx(spec.nginx, spec.config, spec.pid_file, reload_seconds)
        self._where = f"NGINX allow file {spec.allow_file}"

    def scope(self, order: GrantOrder) -> str:
        return f"{KIND}:{self.spec.allow_file}:{markers.require_cidr(order)}"

    def apply(self, order: GrantOrder) -> list[ManagedObject]:
        source = markers.require_cidr(order)
        if not markers.REQUEST_ID.match(order.request_id):
            raise ProviderError(f"`{markers.shown(order.request_id)}` is not a request id a marker can carry")
        allow = self._change(lambda allow: allow.hold(source, Lease(order.request_id, order.ends_at)), grant=True)
        return [self._object(allow, source)]

    def list_managed(self) -> list[ManagedObject]:
        allow = AllowFile.parse(self._read())
        objects = [self._object(allow, source) for source in allow.sources()]
        objects += [self._unmarked(source) for source in dict.fromkeys(allow.unmarked())]
        return objects

    def read(self, ref: str) -> ManagedObject | None:
        allow = AllowFile.parse(self._read())
        return self._object(allow, ref) if allow.marked(ref) else None

    def objects_for(self, request_id: str) -> list[ManagedObject] | None:
        """No query of its own: reading the file is the listing."""
        return None

    def restore(self, now: datetime) -> list[str]:
        """Nothing to restore: the leases live in the file NGINX loads."""
        return []

    def drop(self, obj: ManagedObject, request_ids: set[str], fresh: bool = False) -> bool:
        gone: list[bool] = []
        self._change(lambda allow: gone.append(allow.release(obj.ref, request_ids)))
        return all(gone)

    def drop_all(self, objects: list[ManagedObject]) -> int:
        """Remove every line at once: one write, one test, one reload (a lockdown)."""
        sources = {obj.ref for obj in objects}

        def remove(allow: AllowFile) -> None:
            for source in sources:
                allow.remove(source)

        self._change(remove)
        return len(sources)

    def snapshot(self, order: GrantOrder) -> Entries:
        """The master's pid, a digest of each configuration file (the allow file aside), and each upstream server."""
        dump = self.nginx.dump()
        entries: Entries = {"nginx master": f"pid {self.nginx.master()}"}
        for path, text in dump.files.items():
            if not self._is_allow_file(path):
                digest = hashlib.sha256(text.encode()).hexdigest()[:16]
                entries[f"configuration file {path}"] = f"sha256 {digest}…, {len(text.splitlines())} lines"
        return entries | dump.upstream_servers()

    def use_of(self, cidr: str) -> Use | None:
        """Not counted: NGINX keeps no count of use per source that jit-lb could read."""
        return None

    # --- changing the file ----------------------------------------------------------------------

    def _change(self, edit: Callable[[AllowFile], object], grant: bool = False) -> AllowFile:
        """Edit the file under its lock; test and reload NGINX when a source comes or goes (always for a grant).

        A line removed is gone only once NGINX's old workers have exited. A configuration that does not
        test, or that NGINX does not load, is never left behind: the file is put back as it was.
        """
        with self._lock():
            before = self._read()
            allow = AllowFile.parse(before)
            admitted = allow.allowed()
            edit(allow)
            after = allow.render()
            removed = bool(admitted - allow.allowed())
            if after != before:
                self._write(after)
            if grant or allow.allowed() != admitted:
                self._load(before, after, grant=grant, removed=removed)
            if self._read() != after:
                raise ProviderError(f"{self._where} does not read back as jit-lb wrote it: another writer changed it")
        return allow

    def _load(self, before: str, after: str, *, grant: bool, removed: bool) -> None:
        signalled = False
        try:
            dump = self.nginx.dump()
            if grant:
                self._check_fit(dump)
            shutdown = dump.shutdown_timeout()
            signalled = True
            master, old = self.nginx.reload()
        except ProviderError as err:
            if after != before:
                self._write(before)
                if signalled:
                    # NGINX may still pick up the reload later: whatever it loads then is the file as it was.
                    with suppress(ProviderError, OSError):
                        os.kill(self.nginx.master(), signal.SIGHUP)
            if removed:
                raise ProviderError(
                    f"{err} (the line stays: NGINX admits the source until its configuration tests again; by hand: "
                    "remove the line, fix, reload)"
                ) from None
            raise
        if removed:
            # The line is gone from the new workers; the old ones answer what they hold until they exit.
            self.nginx.wait_exit(master, old, min(shutdown or MAX_SHUTDOWN_SECONDS, MAX_SHUTDOWN_SECONDS))
        else:
            # A new connection lands only on a new worker from here: the grant is in force for every one.
            self.nginx.settle(master, old)

    def _check_fit(self, dump: Dump) -> None:
        """Refuse to grant what a revoke could not take back: the file unused, or old workers unbounded."""
        if not any(map(self._is_allow_file, dump.files)):
            raise ProviderError(
                f"NGINX's configuration does not include {self.spec.allow_file}: add `include {self.spec.allow_file};` "
                "inside the protected server or location, before its `deny all;`"
            )
        shutdown = dump.shutdown_timeout()
        if shutdown is None or shutdown > MAX_SHUTDOWN_SECONDS:
            said = "sets none" if shutdown is None else f"sets {shutdown:g}s"
            raise ProviderError(
                f"NGINX's configuration {said} for worker_shutdown_timeout: old workers would serve a revoked source's "
                f"open connections without bound; set `worker_shutdown_timeout 10s;` (at most "
                f"{MAX_SHUTDOWN_SECONDS:g}s) in its main context"
            )

    def _is_allow_file(self, path: str) -> bool:
        """Whether a path `nginx -T` names is the allow file: the same file, however the configuration spells it."""
        return path == self.spec.allow_file or os.path.realpath(path) == os.path.realpath(self.spec.allow_file)

    def _read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            raise ProviderError(
                f"{self._where} does not exist: create it empty, and include it inside the protected server or "
                "location before its `deny all;`"
            ) from None
        except OSError as err:
            raise ProviderError(f"{self._where} cannot be read ({err.strerror})") from None

    def _write(self, text: str) -> None:
        """Replace the file whole: write a temporary file beside it, then rename it over the file."""
        target = Path(os.path.realpath(self.path))
        try:
            mode = target.stat()
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".jit-lb")
        except OSError as err:
            raise ProviderError(f"{self._where} cannot be written ({err.strerror})") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, mode.st_mode & 0o7777)
            with suppress(PermissionError):
                os.chown(temporary, mode.st_uid, mode.st_gid)
            os.replace(temporary, target)
        except OSError as err:
            with suppress(OSError):
                os.unlink(temporary)
            raise ProviderError(f"{self._where} cannot be written ({err.strerror})") from None
        with suppress(OSError):
            directory = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """An flock beside the allow file, so that one change (and its reload) happens at a time on this host."""
        path = self.path.parent / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise ProviderError(f"the lock file {path} cannot be opened ({err.strerror})") from None
        try:
            deadline = time.monotonic() + LOCK_SECONDS
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ProviderError(
                            f"{self._where} stayed locked ({path}) by another worker for {LOCK_SECONDS:g}s"
                        ) from None
                    time.sleep(POLL_SECONDS)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    # --- objects --------------------------------------------------------------------------------

    def _object(self, allow: AllowFile, source: str) -> ManagedObject:
        lines = allow.marked(source)
        held = [lease for line in lines for lease in line.leases]
        unreadable = [text for line in lines for text in line.unreadable]
        odd = f"a lease reads `{markers.shown(unreadable[0])}`, not `<request id> until <time>`" if unreadable else ""
        return ManagedObject(
            kind=KIND,
            ref=source,
            description=f"`allow {markers.shown(source)};` in {self._where}",
            leases=tuple(held),
            scope=f"{KIND}:{self.spec.allow_file}:{source}",
            anomaly=markers.join_anomalies(_source_anomaly(source), markers.lease_anomaly(held), odd),
        )

    def _unmarked(self, source: str) -> ManagedObject:
        return ManagedObject(
            kind=KIND,
            ref=f"unmarked:{source}",
            description=f"`allow {markers.shown(source)};` without jit-lb's marker in {self._where}",
            scope=f"{KIND}:{self.spec.allow_file}:{source}",
            anomaly="the line carries no jit-lb marker: someone's own, written by hand",
        )


def _source_anomaly(source: str) -> str:
    """Why an `allow` source is not one a grant writes (`all`, a bare address is fine)."""
    if source == "all":
        return "it allows `all`"
    try:
        ipaddress.ip_network(source, strict=False)
    except ValueError:
        return f"its source `{markers.shown(source)}` is not a network in CIDR form"
    return markers.cidr_anomaly(source if "/" in source else f"{source}/{128 if ':' in source else 32}")
