"""HAProxy ACL grants: the principal's CIDR in an ACL over the runtime API, its leases in a Redis lease book.

An HAProxy ACL entry is a bare pattern: it cannot carry a request id or an end time. So the leases
live in Redis, one hash per entry (`<book>:lease:<pattern>`, request id -> end time) and one set of
the entries the book knows (`<book>:entries`), where `<book>` is `jit:haproxy:<runtime_api>:<acl>`
(`haproxy_book_key` in the store).
The ACL itself belongs to jit-lb: an entry the book holds no lease for is listed with none, and the
sweep removes it (fail closed). Entries HAProxy lost (a reload keeps only the file's) but the book
still leases are put back by `restore`.

HAProxy 2.6's runtime API, as this module relies on it (one command per connection, the answer
ending with an empty line; or, after `prompt`, many on one connection, each answer then ending with `\n> `):

- `show acl <acl>` lists `0x<ref> <pattern>` per entry, patterns spelled exactly as added;
  an unknown name answers `Unknown ACL identifier. Please use #<id> or <file>.`
- `add acl <acl> <pattern>` answers nothing; it adds duplicates; a bad address is refused in words.
- `del acl <acl> <pattern>` compares the pattern as a string and answers nothing, or `Key not found.`
- `show sess` lists `0x<id>: proto=tcpv4 src=<ip>:<port> fe=<frontend> …` per stream; an idle
  keep-alive HTTP connection has no stream between requests (HAProxy re-checks `http-request`
  rules on its next request), but a request in flight, a tunnel or a TCP-mode connection does.
- `shutdown session 0x<id>` answers nothing, or `No such session (use 'show sess').`; it needs
  `level admin` (`Permission denied` otherwise).
- `show stat -1 6 -1` answers CSV (`# pxname,svname,…` then a line a backend or server; `type` 1 is a
  backend, 2 a server; `status` is UP, DOWN, MAINT, DRAIN, `no check`…).
- `show table` lists `# table: <name>, type: <ip|ipv6|…>, size:<n>, used:<n>` per stick table;
  `show table <name> key <key>` answers that header and `0x<ref>: key=<key> use=0 exp=<ms> conn_cnt=<n> …`
  (one `<data type>=<value>` per type the table stores), nothing at all for a key it does not hold,
  `No such table` or `Invalid key` (an IPv4 key in a `type ipv6` table is written `::ffff:a.b.c.d`).
"""

from __future__ import annotations

import contextlib
import csv
import ipaddress
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime

from redis import Redis
from redis.exceptions import LockNotOwnedError, RedisError

from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import HaproxyAclGrant
from jit_lb.access.requests import Use
from jit_lb.access.store import haproxy_book_key
from workers.providers import markers
from workers.providers.base import Entries, GrantOrder, Lease, ManagedObject

KIND = "haproxy_acl"
# Connecting, and each wait for the next bytes of an answer.
TIMEOUT_SECONDS = 5.0
# One whole command, sent and answered: a command whose answer never ends (interactive `prompt` mode
# keeps the connection open) fails after this instead of holding a job.
READ_TIMEOUT_SECONDS = 10.0
LOCK_SECONDS = 60.0
# `del acl` removes every duplicate of a pattern at once in 2.6; a few more tries cover other versions.
MAX_DELETES = 5
PROMPT = b"\n> "  # how every answer ends in interactive (`prompt`) mode
# The CLI ends a command at a newline or `;`, reads `\` as an escape and splits words at blanks: an
# argument holding one of these would be cut short or run a command of its own.
UNSAFE_LINE = re.compile(r"[;\\\x00-\x1f\x7f-\x9f]")
UNSAFE_NAME = re.compile(r"[\s;\\\x00-\x1f\x7f-\x9f]")
CIDR_CHARACTERS = re.compile(r"^[0-9A-Fa-f.:/]+$")
SESSION_ID = re.compile(r"^0x[0-9a-f]+$")
SESSION_LINE = re.compile(r"^(?P<id>0x[0-9a-f]+): proto=\S+ src=(?P<src>\S+) fe=(?P<fe>\S+)")
ACL_LIST_LINE = re.compile(r"^\d+ \((?P<file>[^)]*)\)")
TABLE_LINE = re.compile(r"^# table: (?P<name>[^,]+), type: (?P<type>[^,]+),")
TABLE_KEY = re.compile(r"^[0-9A-Fa-f.:]+$")
# A source read from a stick table is at most this many addresses, each one `show table … key` command.
MAX_USE_ADDRESSES = 16
# `show stat`'s types: 2 backends and 4 servers, for every proxy (-1) and server (-1).
STAT_COMMAND = "show stat -1 6 -1"
# The stick-table data types that make up a Use, and the Use field each one is.
USE_COUNTS = {
    "conn_cnt": "connections",
    "http_req_cnt": "http_requests",
    "bytes_in_cnt": "bytes_in",
    "bytes_out_cnt": "bytes_out",
    "conn_cur": "open_connections",
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RuntimeApi:
    """HAProxy's runtime API at `unix:/path` or `tcp:host:port`, one command per connection (or many, in `session`).

    The commands jit-lb sends have methods of their own that check each argument (an ACL name, a
    CIDR, a session id) against the characters it may hold, and refuse it in words before anything
    is sent; `run` refuses any line that holds a command separator or a control character.
    """

    def __init__(
        self, address: str, timeout: float = TIMEOUT_SECONDS, read_timeout: float = READ_TIMEOUT_SECONDS
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.read_timeout = read_timeout
        self._session: socket.socket | None = None  # the one connection while inside `session()`
        kind, _, rest = address.partition(":")
        if kind == "unix" and rest.startswith("/"):
            self._path: str | None = rest
            self._host_port: tuple[str, int] | None = None
            self._socket_line = f"stats socket {rest} mode 660 level admin"
        elif kind == "tcp" and ":" in rest:
            host, _, port = rest.rpartition(":")
            self._path = None
            self._host_port = (host, int(port))
            self._socket_line = f"stats socket ipv4@{host}:{port} level admin"
        else:
            raise ProviderError(f"HAProxy runtime API `{address}` is neither unix:/path nor tcp:host:port")

    def show_acl(self, acl: str | None = None) -> str:
        """`show acl`: the ACLs HAProxy loaded; with a name, that ACL's entries."""
        return self.run("show acl" if acl is None else f"show acl {acl_name(acl)}")

    def add_acl(self, acl: str, pattern: str) -> None:
        self.command(f"add acl {acl_name(acl)} {cidr_pattern(pattern)}")

    def del_acl(self, acl: str, pattern: str) -> None:
        self.command(f"del acl {acl_name(acl)} {cidr_pattern(pattern)}", harmless=("Key not found",))

    def show_sess(self) -> str:
        return self.run("show sess")

    def show_stat(self) -> str:
        """Backends and servers with their states, as CSV."""
        return self.run(STAT_COMMAND)

    def show_table(self, table: str | None = None, key: str | None = None) -> str:
        """`show table`: the stick tables; with a name and a key, that key's entry (nothing when there is none)."""
        if table is None:
            return self.run("show table")
        command = f"show table {table_name(table)}"
        return self.run(command if key is None else f"{command} key {table_key(key)}")

    def shutdown_session(self, session_id: str) -> None:
        if not SESSION_ID.match(session_id):
            raise _unsendable("session id", session_id, "a session id is `0x` and hex digits")
        self.command(f"shutdown session {session_id}", harmless=("No such session",))

    def run(self, command: str) -> str:
        """Send one command and return HAProxy's answer, without the empty line that ends it.

        The whole answer must arrive within `read_timeout` seconds and no wait for its next bytes may
        last longer than `timeout`; otherwise a ProviderError says so. Inside `session()` the command
        goes over the session's one connection; otherwise over a connection of its own.
        """
        if UNSAFE_LINE.search(command):
            raise _unsendable("the command", command, "`;`, `\\` and control characters would start another command")
        deadline = time.monotonic() + self.read_timeout
        if self._session is not None:
            answer = self._exchange(self._session, command, deadline, PROMPT)
        else:
            try:
                sock = self._connect()
            except OSError as err:
                raise ProviderError(self._explain(err)) from None
            with sock:
                answer = self._exchange(sock, command, deadline, None)
        return answer.decode("utf-8", errors="replace").rstrip("\n")

    @contextmanager
    def session(self) -> Iterator[None]:
        """Every command in the block over one connection in HAProxy's interactive `prompt` mode (each answer
        ends with the prompt `\\n> `), so that many entries cost one connection, not one each."""
        if self._session is not None:
            yield
            return
        try:
            sock = self._connect()
        except OSError as err:
            raise ProviderError(self._explain(err)) from None
        with sock:
            self._exchange(sock, "prompt", time.monotonic() + self.read_timeout, PROMPT)
            self._session = sock
            try:
                yield
            finally:
                self._session = None
                with suppress(OSError):
                    sock.sendall(b"quit\n")

    def _exchange(self, sock: socket.socket, command: str, deadline: float, until: bytes | None) -> bytes:
        try:
            sock.sendall(command.encode() + b"\n")
            answer = _read_answer(sock, deadline, self.timeout, until)
        except TimeoutError:
            raise ProviderError(self._slow(command, deadline)) from None
        except OSError as err:
            raise ProviderError(self._explain(err)) from None
        return answer[: -len(until)] if until else answer

    def command(self, command: str, harmless: tuple[str, ...] = ()) -> str:
        """Run a command that answers nothing when it works; an answer not in `harmless` is an error."""
        answer = self.run(command)
        if answer and not answer.startswith(harmless):
            raise self.refused(command, answer)
        return answer

    def refused(self, command: str, answer: str) -> ProviderError:
        first = answer.splitlines()[0].strip() if answer.strip() else "an unexpected answer"
        hint = ""
        if first.startswith("Permission denied"):
            hint = f": the socket's level is too low; HAProxy's global section needs `{self._socket_line}`"
        return ProviderError(f"HAProxy runtime API {self.address} refused `{command}`: {first}{hint}")

    def _connect(self) -> socket.socket:
        if self._host_port is not None:
            return socket.create_connection(self._host_port, timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        return sock

    def _slow(self, command: str, deadline: float) -> str:
        waited = (
            f"took longer than {self.read_timeout:g}s to answer"
            if time.monotonic() >= deadline
            else f"went silent for {self.timeout:g}s before its answer ended"
        )
        return (
            f"HAProxy runtime API {self.address} {waited} `{command}`: check that HAProxy is healthy "
            "(the command was sent; the job gave up waiting)"
        )

    def _explain(self, err: OSError) -> str:
        where = f"HAProxy runtime API {self.address}"
        setup = f"is HAProxy running, and does its global section have `{self._socket_line}`?"
        if isinstance(err, ConnectionRefusedError):
            return f"{where} refused the connection: {setup}"
        if isinstance(err, FileNotFoundError):
            return f"{where}: there is no socket at {self._path}: {setup}"
        if isinstance(err, PermissionError):
            return (
                f"{where}: permission denied on {self._path}: run the worker as a user the socket admits "
                "(`stats socket … mode 660 group <group>`)"
            )
        if isinstance(err, TimeoutError):
            return f"{where} did not answer within {self.timeout:g}s: check the address and that HAProxy is healthy"
        if isinstance(err, socket.gaierror):
            return f"{where}: the host name does not resolve ({err.strerror})"
        return f"{where} failed: {err.strerror or err}; {setup}"


def _read_answer(sock: socket.socket, deadline: float, silence: float, until: bytes | None = None) -> bytes:
    """Read until HAProxy closes the connection (or, in prompt mode, until the answer ends with `until`);
    TimeoutError past `deadline`, or after `silence` seconds of nothing."""
    answer = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(min(silence, left))
        chunk = sock.recv(65536)
        if not chunk:
            if until is not None:
                raise ConnectionResetError("HAProxy closed the runtime API session")
            return answer
        answer += chunk
        if until is not None and answer.endswith(until):
            return answer


def acl_name(text: str) -> str:
    """`text` as an ACL name; a ProviderError naming it if it holds a blank, `;`, `\\` or a control character."""
    if not text or UNSAFE_NAME.search(text):
        raise _unsendable(
            "ACL name", text, "blanks, `;`, `\\` and control characters would end it or start another command"
        )
    return text


def cidr_pattern(text: str) -> str:
    """`text` as an ACL pattern; a ProviderError naming it unless it holds only hex digits, `.`, `:` and `/`."""
    if not CIDR_CHARACTERS.match(text):
        raise _unsendable("ACL pattern", text, "a CIDR holds only hex digits, `.`, `:` and `/`")
    return text


def table_name(text: str) -> str:
    """`text` as a stick table's name; a ProviderError naming it if it holds a blank, `;`, `\\` or a control."""
    if not text or UNSAFE_NAME.search(text):
        raise _unsendable(
            "stick table name", text, "blanks, `;`, `\\` and control characters would end it or start another command"
        )
    return text


def table_key(text: str) -> str:
    """`text` as a stick table key; a ProviderError naming it unless it holds only hex digits, `.` and `:`."""
    if not TABLE_KEY.match(text):
        raise _unsendable("stick table key", text, "an address holds only hex digits, `.` and `:`")
    return text


def parse_table(answer: str) -> list[dict[str, str]]:
    """The entries of a `show table <name> [key <key>]` answer, each as its `name=value` fields; [] for none.

    The one reader of HAProxy's stick-table lines: a line that is neither the `# table:` header nor an
    entry (`No such table`, `Invalid key`, a refusal) raises ValueError with the line.
    """
    entries = []
    for line in answer.splitlines():
        if not line.strip() or line.startswith("# table:"):
            continue
        ref, _, rest = line.partition(": ")
        if not ref.startswith("0x") or not rest:
            raise ValueError(line.strip())
        entries.append(dict(field.split("=", 1) for field in rest.split() if "=" in field))
    return entries


def parse_stat(answer: str) -> list[dict[str, str]]:
    """The rows of a `show stat` answer (CSV under a `# pxname,svname,…` header); ValueError when it is not one."""
    header, _, body = answer.partition("\n")
    if not header.startswith("# pxname,"):
        raise ValueError(header.strip() or "an empty answer")
    names = header.removeprefix("# ").split(",")
    return [dict(zip(names, row, strict=False)) for row in csv.reader(body.splitlines()) if row]


def _unsendable(what: str, text: str, why: str) -> ProviderError:
    return ProviderError(f"{what} `{markers.shown(text)}` cannot be sent to HAProxy's runtime API: {why}")


class HaproxyAclProvider:
    """Entries of one HAProxy ACL; each entry's leases live in the Redis lease book."""

    owns_unleased = True  # the ACL is jit-lb's alone; after Redis lost its book, no entry has a lease

    def __init__(self, spec: HaproxyAclGrant, redis: Redis) -> None:
        self.spec = spec
        self.redis = redis
        self.api = RuntimeApi(spec.runtime_api)
        self._book = haproxy_book_key(spec.runtime_api, spec.acl)
        self._where = f"ACL {spec.acl} at HAProxy {spec.runtime_api}"

    @property
    def acl(self) -> str:
        """The ACL's name as a command argument; checked per command so that a bad name fails a job, not a sweep."""
        return acl_name(self.spec.acl)

    def scope(self, order: GrantOrder) -> str:
        return self._scope(markers.require_cidr(order))

    def _scope(self, pattern: str) -> str:
        return f"{KIND}:{self.spec.runtime_api}:{self.spec.acl}:{pattern}"

    def apply(self, order: GrantOrder) -> list[ManagedObject]:
        pattern = markers.require_cidr(order)
        with self._entry_lock(pattern):
            if pattern not in self._patterns():
                self.api.add_acl(self.acl, pattern)
                if pattern not in self._patterns():
                    raise ProviderError(f"HAProxy took `add acl` but {self._where} does not list {pattern} after it")
            # The lease is booked after the entry exists: a failure in between leaves an unleased entry,
            # which the sweep removes, never a lease that grants nothing.
            with self._book_errors():
                pipe = self.redis.pipeline()
                pipe.hset(self._lease_key(pattern), order.request_id, markers.format_time(order.ends_at))
                pipe.sadd(self._entries_key, pattern)
                pipe.execute()
        return [self._managed(pattern, present=True)]

    def list_managed(self) -> list[ManagedObject]:
        """Every entry in the ACL, leased or not; then booked entries HAProxy lost, so a revoke can clear them."""
        present = list(dict.fromkeys(self._patterns()))
        objects = [self._managed(pattern, present=True) for pattern in present]
        for pattern in sorted(self._booked() - set(present)):
            lost = self._managed(pattern, present=False)
            if lost.leases:
                objects.append(lost)
        return objects

    def read(self, ref: str) -> ManagedObject | None:
        present = ref in self._patterns()
        obj = self._managed(ref, present=present)
        return obj if present or obj.leases else None

    def objects_for(self, request_id: str) -> list[ManagedObject] | None:
        """No query of its own: the book is kept by entry, not by request, so the listing decides."""
        return None

    def snapshot(self, order: GrantOrder) -> Entries:
        """Every backend's state and every server's state, weight and address (`show stat`); ACLs are not in it."""
        answer = self.api.show_stat()
        try:
            rows = parse_stat(answer)
        except ValueError:
            raise self.api.refused(STAT_COMMAND, answer) from None
        entries: Entries = {}
        for row in rows:
            backend, status = row.get("pxname", ""), _status(row.get("status", ""))
            if row.get("type") == "1":
                entries[f"backend {backend}"] = status
            elif row.get("type") == "2":
                entries[f"backend {backend}: server {row.get('svname', '')}"] = (
                    f"{status}, weight {row.get('weight', '?')}, {row.get('addr') or 'no address'}"
                )
        return entries

    def use_of(self, cidr: str) -> Use | None:
        """The source's counts in the spec's stick table now, summed over its addresses; None without a stick table.

        HAProxy keeps one entry per address, so a CIDR of up to MAX_USE_ADDRESSES addresses is read
        address by address; a source never seen (or whose entry expired) counts nothing. A count the
        table does not store is None. Raises ProviderError when HAProxy cannot be read, has no such
        table, or cannot hold this source (a wider CIDR, an IPv6 source in a `type ip` table).
        """
        if self.spec.stick_table is None:
            return None
        table = table_name(self.spec.stick_table)
        network = _network(cidr)
        if network is None or network.num_addresses > MAX_USE_ADDRESSES:
            raise ProviderError(
                f"the use of `{markers.shown(cidr)}` cannot be read from stick table {table}: it keeps one entry "
                f"an address, and jit-lb reads at most {MAX_USE_ADDRESSES} of them"
            )
        key_type = self._table_type(table)
        entries = []
        for address in network:
            key = _table_key_of(address, key_type)
            if key is None:
                raise ProviderError(
                    f"stick table {table} at HAProxy {self.spec.runtime_api} is `type {key_type}`: it cannot "
                    f"hold {address}; use `type ipv6`, which holds IPv4 sources too"
                )
            answer = self.api.show_table(table, key)
            try:
                entries.extend(parse_table(answer))
            except ValueError:
                raise self.api.refused(f"show table {table} key {key}", answer) from None
        return _use(entries)

    def _table_type(self, table: str) -> str:
        """The key type of a stick table HAProxy has (`ip`, `ipv6`, …); a ProviderError naming those it has."""
        answer = self.api.show_table()
        tables = {m["name"]: m["type"] for m in map(TABLE_LINE.match, answer.splitlines()) if m}
        if table not in tables:
            have = f"it has {', '.join(sorted(tables))}" if tables else "it has none"
            raise ProviderError(
                f"HAProxy at {self.spec.runtime_api} has no stick table `{table}`: name the backend that holds "
                f"the `stick-table` the frontend tracks sources in (`http-request track-sc0 src table {table}`); {have}"
            )
        return tables[table].strip()

    def drop_all(self, objects: list[ManagedObject]) -> int:
        """Remove these entries outright, every lease on them, over one runtime API connection: each `del acl`,
        one `show acl` to check them gone, one `show sess` and the shutdown of their sources' open sessions."""
        patterns = sorted({cidr_pattern(obj.ref) for obj in objects})
        if not patterns:
            return 0
        with contextlib.ExitStack() as locks:
            for pattern in patterns:
                locks.enter_context(self._entry_lock(pattern))
            # The book first, as `drop` does: a failure after it leaves an unleased entry, which the sweep removes.
            with self._book_errors():
                pipe = self.redis.pipeline()
                for pattern in patterns:
                    pipe.delete(self._lease_key(pattern))
                    pipe.srem(self._entries_key, pattern)
                pipe.execute()
            with self.api.session():
                left = set(patterns)
                for _ in range(MAX_DELETES):
                    for pattern in sorted(left):
                        self.api.del_acl(self.acl, pattern)
                    left &= set(self._patterns())
                    if not left:
                        break
                if left:
                    raise ProviderError(f"{self._where} still lists {', '.join(sorted(left))} after `del acl`")
                self._shut_sessions(*patterns)
        return len(patterns)

    def drop(self, obj: ManagedObject, request_ids: set[str], fresh: bool = False) -> bool:
        pattern = cidr_pattern(obj.ref)
        with self._entry_lock(pattern):
            with self._book_errors():
                if request_ids:
                    self.redis.hdel(self._lease_key(pattern), *request_ids)
                if self.redis.hlen(self._lease_key(pattern)):
                    return False
            self._delete(pattern)
            with self._book_errors():
                self.redis.srem(self._entries_key, pattern)
        # Removing the entry stops new requests; a stream already open from that source runs on until shut.
        self._shut_sessions(pattern)
        return True

    def restore(self, now: datetime) -> list[str]:
        """Re-add every booked entry with a lease still running that the ACL lacks; return those patterns."""
        present = set(self._patterns())
        restored: list[str] = []
        for pattern in sorted(self._booked() - present):
            if markers.cidr_anomaly(pattern):
                # No grant makes such an entry (the book was edited by hand): listed with its anomaly, never put back.
                continue
            with self._entry_lock(pattern):
                held = self._leases(pattern)
                if not held:
                    with self._book_errors():
                        self.redis.srem(self._entries_key, pattern)
                    continue
                if all(lease.ends_at <= now for lease in held) or pattern in self._patterns():
                    continue
                self.api.add_acl(self.acl, pattern)
                restored.append(pattern)
        missing = set(restored) - set(self._patterns())
        if missing:
            raise ProviderError(f"HAProxy took `add acl` but {self._where} does not list {', '.join(sorted(missing))}")
        return restored

    def _shut_sessions(self, *patterns: str) -> list[str]:
        networks = [net for net in map(_network, patterns) if net is not None]
        if not networks:
            return []
        # A source still admitted by another entry (a wider CIDR someone else holds) keeps its sessions.
        others = [net for net in map(_network, self._patterns()) if net is not None]
        shut = []
        for session_id, source in self._sessions():
            gone = any(_inside(source, network) for network in networks)
            if gone and not any(_inside(source, other) for other in others):
                self.api.shutdown_session(session_id)
                shut.append(session_id)
        return shut

    def _sessions(self) -> list[tuple[str, Address]]:
        """Id and source of every stream from an IP address, leaving out the runtime API's own."""
        answer = self.api.show_sess()
        sessions = []
        for line in answer.splitlines():
            match = SESSION_LINE.match(line)
            if match is None:
                if line.strip() and not line.startswith("0x"):
                    raise self.api.refused("show sess", answer)
                continue
            source = _source_address(match["src"])
            # fe=GLOBAL is the runtime API itself: another worker's command must not be cut short.
            if source is not None and match["fe"] != "GLOBAL":
                sessions.append((match["id"], source))
        return sessions

    def _delete(self, pattern: str) -> None:
        for _ in range(MAX_DELETES):
            self.api.del_acl(self.acl, pattern)
            if pattern not in self._patterns():
                return
        raise ProviderError(f"{self._where} still lists {pattern} after {MAX_DELETES} `del acl` commands")

    def _patterns(self) -> list[str]:
        """The ACL's patterns as HAProxy lists them, duplicates included."""
        answer = self.api.show_acl(self.acl)
        patterns = []
        for line in answer.splitlines():
            ref, _, pattern = line.partition(" ")
            if not ref.startswith("0x") or not pattern:
                raise self._acl_error(answer)
            patterns.append(pattern.strip())
        return patterns

    def _acl_error(self, answer: str) -> ProviderError:
        if not answer.startswith("Unknown ACL identifier"):
            return self.api.refused(f"show acl {self.acl}", answer)
        known = [m["file"] for m in map(ACL_LIST_LINE.match, self.api.show_acl().splitlines()) if m and m["file"]]
        loaded = f"it loaded {', '.join(known)}" if known else "it loaded no ACL from a file"
        return ProviderError(
            f"HAProxy at {self.spec.runtime_api} has no ACL `{self.spec.acl}`: name the file exactly as HAProxy's "
            f"configuration does (`acl … -f <file>`); {loaded}"
        )

    def _managed(self, pattern: str, *, present: bool) -> ManagedObject:
        lost = "" if present else " (lost by HAProxy, as after a reload; restore puts it back)"
        held = tuple(self._leases(pattern))
        return ManagedObject(
            kind=KIND,
            ref=pattern,
            description=f"{markers.shown(pattern)} in {self._where}{lost}",
            leases=held,
            scope=self._scope(pattern),
            anomaly=markers.join_anomalies(markers.cidr_anomaly(pattern), markers.lease_anomaly(held)),
        )

    def _leases(self, pattern: str) -> list[Lease]:
        with self._book_errors():
            book = self.redis.hgetall(self._lease_key(pattern))
        return [markers.read_lease(_text(request_id), _text(end)) for request_id, end in book.items()]

    def _booked(self) -> set[str]:
        with self._book_errors():
            return {_text(member) for member in self.redis.smembers(self._entries_key)}

    @property
    def _entries_key(self) -> str:
        return f"{self._book}:entries"

    def _lease_key(self, pattern: str) -> str:
        return f"{self._book}:lease:{pattern}"

    @contextmanager
    def _book_errors(self) -> Iterator[None]:
        try:
            yield
        except RedisError as err:
            raise ProviderError(f"the lease book in Redis for {self._where} could not be used ({err})") from err

    @contextmanager
    def _entry_lock(self, pattern: str) -> Iterator[None]:
        """Serialise work on one entry: a sweep's drop and a grant's apply use different job locks."""
        with self._book_errors():
            lock = self.redis.lock(f"{self._book}:lock:{pattern}", timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS)
            acquired = lock.acquire()
        if not acquired:
            raise ProviderError(f"{pattern} in {self._where} stayed locked by another worker for {LOCK_SECONDS:g}s")
        try:
            yield
        finally:
            # The lock may have outlived its timeout and belong to another worker now: theirs to release.
            with suppress(LockNotOwnedError):
                lock.release()


def _status(status: str) -> str:
    """`show stat`'s status in words: a server HAProxy does not check is up as far as it knows."""
    return "UP (not health-checked)" if status == "no check" else status or "unknown"


def _table_key_of(address: Address, key_type: str) -> str | None:
    """How a stick table of `key_type` spells `address`; None when it cannot hold it."""
    if key_type == "ipv6":
        return f"::ffff:{address}" if address.version == 4 else str(address)
    if key_type == "ip" and address.version == 4:
        return str(address)
    return None


def _use(entries: list[dict[str, str]]) -> Use:
    """The counts of a source's entries, summed; a count some entry lacks is not stored, so None."""
    counts: dict[str, int | None] = {}
    for data_type, name in USE_COUNTS.items():
        values = [entry.get(data_type) for entry in entries]
        known = [int(value) for value in values if value is not None and value.isdigit()]
        counts[name] = sum(known) if len(known) == len(values) else None
    return Use(**counts)


def _network(pattern: str) -> Network | None:
    """The network an ACL pattern admits; None for a pattern that is not an address (a hand-made oddity)."""
    try:
        return ipaddress.ip_network(pattern, strict=False)
    except ValueError:
        return None


def _source_address(src: str) -> Address | None:
    """The address of `show sess`'s `src=` (`127.0.0.7:51234`, `::1:51234`); None for `unix:1` and the like."""
    host, _, _port = src.rpartition(":")
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _inside(address: Address, network: Network) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version == network.version and address in network


def _text(value: object) -> str:
    """A Redis value as text; bytes that are not UTF-8 (a book edited by hand) read with replacement characters."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
