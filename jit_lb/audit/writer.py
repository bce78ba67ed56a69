"""The audit log: one JSON object a line, appended by one writer a process, failing closed (docs/auditors.md).

A record that cannot be written stops the act it records (`AuditUnavailableError`), except the
records of acts that take access away (`must=True`: revokes, expiries, refusals): those are kept
in a spool, in order, and written first once the file takes writes again. Each line is one
`write(2)` on a file opened with O_APPEND, so that web and workers can share one file; when
logrotate moves the file away, the next record reopens the path.

Every record is a link of this process's hash chain (jit_lb/audit/chain.py): `chain`, `seq`, `prev`,
`hash`. A seq belongs to a record only once it is accepted: written, or spooled with `must`; a record
that fails closed leaves its seq to the next one. A checkpoint (`audit.checkpoint`) every 5 minutes, at
stop, and a few seconds after each security-relevant record (WITNESSED: approvals, grants, break-glass,
lockdowns, MFA resets; at most one every SOON_SECONDS a process) is also handed to the process's witness,
which posts it to Slack, out of reach of whoever can edit the file. With a witness, the start of a chain is
such a checkpoint too (reason `start`): it names the head it continues from, or the chain it replaces, so
that a tail cut before a restart shows against what Slack holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import stat
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Protocol, TypeVar

import structlog
from pydantic import SecretStr

from jit_lb.access.errors import AuditUnavailableError
from jit_lb.access.requests import AccessRequest
from jit_lb.audit.chain import CHAIN_FIELDS, Hasher, Head, HeadFile, SavedHead, canonical, follow, new_chain_id
from jit_lb.clock import utcnow

log = structlog.get_logger("jit_lb.audit")

CHECKPOINT_SECONDS = 300.0  # docs/auditors.md: a checkpoint every 5 minutes, and one when the process stops
HEAD_SAVE_SECONDS = 1.0  # a chain's head is saved beside the log at most this often (and at rotation and stop)
SHORT_KEY = 16  # characters; a shorter JIT_AUDIT_KEY is accepted, with a warning
SOON_SECONDS = 3.0  # a witnessed record is checkpointed within this, and such checkpoints come at most this often
SOON_BATCH = 0.5  # seconds a checkpoint waits after a witnessed record, so that a burst of them shares one

_T = TypeVar("_T")

# Posts a checkpoint record where nobody with access to the log file can edit it (the processes post to Slack).
Witness = Callable[[dict[str, Any]], None]


class Observer(Protocol):
    """Who hears of each record accepted and each failed write (the process's metrics, jit_lb/metrics.py)."""

    def recorded(self, event: str, record: dict[str, Any]) -> None: ...

    def write_failed(self) -> None: ...


EVENTS = frozenset(
    {
        "request.created",
        "request.refused",
        "request.approved",
        "request.denied",
        "request.expired",
        "request.cancelled",
        "approval.refused",
        "grant.applied",
        "grant.failed",
        "grant.revoked",
        "grant.revoke_failed",
        "grant.extended",
        "grant.warned",
        "extension.requested",
        "extension.approved",
        "extension.denied",
        "extension.refused",
        "sweep.removed",
        "sweep.reported",
        "grant.activity",
        "grant.breakglass",
        "review.acknowledged",
        "review.flagged",
        "lockdown.started",
        "lockdown.ended",
        "mfa.enrolled",
        "mfa.verified",
        "mfa.failed",
        "mfa.reset",
        "mfa.cancelled",
        "policy.reloaded",
        "policy.refused",
        "audit.checkpoint",
    }
)


# Records after which a checkpoint follows soon (SOON_SECONDS): the acts that give access or take away the
# means to check it; a tail cut after one of them shows against the checkpoint posted to Slack.
WITNESSED = frozenset(
    {
        "request.approved",
        "grant.applied",
        "grant.extended",
        "extension.approved",
        "grant.breakglass",
        "lockdown.started",
        "lockdown.ended",
        "mfa.reset",
    }
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return int(value.total_seconds())
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | set | frozenset):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    return value


def _now() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


class _Chain:
    """The chain this process writes: its id, the head of what it accepted, and the slot that keeps the head."""

    def __init__(self, head: Head, hasher: Hasher, slot: HeadFile | None) -> None:
        self.id = head.chain
        self.seq = head.seq
        self.hash = head.hash
        self.hasher = hasher
        self.slot = slot
        self.saved_at = -HEAD_SAVE_SECONDS
        self._save_failed = False

    def seal(self, record: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """The record's line (its hash last) and the record as a reader parses it back, with its hash."""
        # Through JSON and back first: what is hashed is exactly what a reader parses (tuples, str()-ed values,
        # non-str keys); a lone surrogate, which UTF-8 cannot carry, becomes `?`.
        body = json.dumps(record, default=str, ensure_ascii=False).encode("utf-8", "replace")
        parsed: dict[str, Any] = json.loads(body)
        digest = self.hasher(canonical(parsed))
        parsed["hash"] = digest
        return body[:-1] + b', "hash": "' + digest.encode() + b'"}\n', parsed

    def accept(self, seq: int, digest: str) -> None:
        self.seq, self.hash = seq, digest

    def keep(self, seq: int, digest: str, file: tuple[int, int] | None, offset: int, clean: bool = False) -> None:
        """Save the head of what the log holds beside it; a failure is logged once, and a restart starts anew."""
        if self.slot is None:
            return
        self.saved_at = time.monotonic()
        saved = SavedHead(Head(self.id, seq, digest), self.hasher.key_id, file, offset, clean)
        try:
            self.slot.save(saved)
        except OSError as err:
            if not self._save_failed:
                log.warning("the audit chain's head cannot be saved; a restart may start a new chain", error=str(err))
            self._save_failed = True
        else:
            self._save_failed = False


@dataclass(frozen=True)
class _Start:
    """How a chain began: `how` in words, and the head it continues from (or the chain it replaces)."""

    how: str
    previous: Head | None

    def fields(self) -> dict[str, Any]:
        previous = self.previous
        if previous is None:
            return {"start": self.how}
        return {
            "start": self.how,
            "previous_chain": previous.chain,
            "previous_seq": previous.seq,
            "previous_hash": previous.hash,
        }


@dataclass(frozen=True)
class _Spooled:
    """A record accepted while the log failed: its seq is taken, and it is written before any later one."""

    line: bytes
    chain: _Chain
    seq: int
    prev: str
    digest: str


@dataclass(frozen=True)
class _Asked:
    """A write an event loop asked of the log's thread, and where to hand its outcome."""

    write: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _settle(outcomes: list[tuple[_Asked, bool, Any]]) -> None:
    """On the asking loop: each caller gets what its write returned or raised (unless it stopped waiting)."""
    for asked, ok, value in outcomes:
        if asked.future.done():
            continue
        if ok:
            asked.future.set_result(value)
        else:
            asked.future.set_exception(value)


_logs: weakref.WeakSet[AuditLog] = weakref.WeakSet()


class AuditLog:
    """Appends events as single JSON lines to a file (or stdout), one writer a process, safe across threads."""

    def __init__(self, destination: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.destination = destination
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._spool: deque[_Spooled] = deque()
        self._executor: ThreadPoolExecutor | None = None
        self._queue: list[_Asked] = []  # what event loops asked of the log's thread, not yet taken (_on_writer)
        self._queue_lock = threading.Lock()
        self._draining = False  # a job on the log's thread is taking the queue
        self._chain: _Chain | None = None
        self._witness: Witness | None = None
        self._witnesses: ThreadPoolExecutor | None = None
        self._clock = clock
        self._last_checkpoint = clock()
        self.observer: Observer | None = None  # the metrics, told of every record accepted and write failed
        self._soon: threading.Timer | None = None  # the checkpoint due after a witnessed record, once scheduled
        self._last_soon = -SOON_SECONDS
        _logs.add(self)

    @classmethod
    def open(cls, destination: str) -> AuditLog:
        """`-` is stdout; anything else a file opened for appending (created if missing)."""
        audit = cls(destination)
        try:
            with audit._lock:
                audit._ensure_open()
        except OSError as err:
            raise AuditUnavailableError(f"JIT_AUDIT_LOG: cannot open {destination} for appending ({err})") from None
        return audit

    # --- the chain ---------------------------------------------------------------------------------

    def start_chain(self, kind: str, key: SecretStr | None = None, witness: Witness | None = None) -> str:
        """Begin this process's chain, or continue the one its slot beside the log kept; return the chain's id.

        `kind` names the process (`web`, `worker`); `key` is JIT_AUDIT_KEY; `witness` posts checkpoints. With a
        witness, the start is itself a checkpoint (reason `start`) naming the head it continues from, or the
        chain it replaces and why, and is posted. Call it before the process writes its first record; a record
        written before starts a chain of kind `process` without a key.
        """
        secret = key.get_secret_value() if key is not None else ""
        _warn_about_key(secret)
        with self._lock:
            if self._chain is not None and self._chain.slot is not None:
                self._chain.slot.release()
            self._chain, start = self._open_chain(kind, Hasher(secret.encode() or None))
            self._witness = witness
            self._last_checkpoint = self._clock()
            chain = self._chain
            log.info("audit chain", chain=chain.id, seq=chain.seq, keyed=chain.hasher.keyed, start=start.how)
        if witness is not None:
            self._checkpoint("start", background=True, **start.fields())
        return chain.id

    def close(self) -> None:
        """Let go of the file and of the chain's slot, so another writer may continue the chain (a process's exit
        does this by itself; a test or a tool that opens the log twice calls it)."""
        with self._lock:
            if self._chain is not None and self._chain.slot is not None:
                self._chain.slot.release()
            self._chain = None
            self._close()

    @property
    def chain(self) -> Head | None:
        """The head of this process's chain (its last accepted record), once it has one."""
        with self._lock:
            return None if self._chain is None else Head(self._chain.id, self._chain.seq, self._chain.hash)

    def _open_chain(self, kind: str, hasher: Hasher) -> tuple[_Chain, _Start]:
        """Continue the chain kept in the lowest free slot of `kind`, unless the key changed or the log disagrees."""
        if self.destination == "-" or not _regular(self.destination):
            # stdout or a device (/dev/null): nothing to find the chain again by, and no folder beside it to make.
            return _Chain(Head(new_chain_id(kind, None)), hasher, None), _Start("new", None)
        try:
            slot = HeadFile.claim(self.destination, kind)
        except OSError as err:
            log.warning("the audit chain's head cannot be kept beside the log; a restart starts anew", error=str(err))
            return _Chain(Head(new_chain_id(kind, None)), hasher, None), _Start("new: no slot beside the log", None)
        saved = slot.load()
        head: Head | None = None
        start = _Start("new", None)
        if saved is not None and saved.key_id != hasher.key_id:
            log.info("the audit key changed: a new chain starts", old_chain=saved.head.chain, old_seq=saved.head.seq)
            start = _Start("new: the audit key changed", saved.head)
        elif saved is not None and not saved.clean and saved.file is not None:
            # The process died: records may follow the saved head. Read on from where it was saved; when the
            # file was rotated (or truncated) since, they may be gone: a new chain starts rather than a fork.
            same_file = saved.file == _identity(self.destination) and saved.offset <= _size(self.destination)
            head = follow(saved.head, hasher, self.destination, saved.offset) if same_file else None
            if head is None:
                log.warning("the audit chain's saved head cannot be trusted; a new chain starts", old=saved.head.chain)
                start = _Start("new: the log disagrees with the head kept beside it", saved.head)
            else:
                start = _Start("continued after a stop without a checkpoint", head)
        elif saved is not None:
            head = saved.head
            start = _Start("continued", head)
        chain = _Chain(head or Head(new_chain_id(kind, slot.number)), hasher, slot)
        chain.keep(chain.seq, chain.hash, _identity(self.destination), _size(self.destination))
        chain.saved_at = -HEAD_SAVE_SECONDS  # and the first record written saves it again at once
        return chain, start

    def _current_chain(self) -> _Chain:
        if self._chain is None:
            _warn_about_key("")
            self._chain, _ = self._open_chain("process", Hasher(None))
        return self._chain

    # --- writing -----------------------------------------------------------------------------------

    def record(
        self,
        event: str,
        *,
        actor: str,
        target: str | None = None,
        request_id: str | None = None,
        must: bool = False,
        **fields: Any,
    ) -> dict[str, Any]:
        """Write one event and return it as written (with its chain fields), or raise AuditUnavailableError;
        with `must`, keep it in the spool instead of raising."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event}")
        if CHAIN_FIELDS & fields.keys():
            raise ValueError(f"{', '.join(sorted(CHAIN_FIELDS & fields.keys()))}: the chain's own fields")
        values = {key: _jsonable(value) for key, value in fields.items() if value is not None}
        with self._lock:
            chain = self._current_chain()
            seq = chain.seq + 1
            record = {"ts": _now(), "event": event, "request_id": request_id, "target": target, "actor": actor}
            line, written = chain.seal({**record, **values, "chain": chain.id, "seq": seq, "prev": chain.hash})
            try:
                self._drain()
                self._write(_Spooled(line, chain, seq, chain.hash, written["hash"]))
            except OSError as err:
                if self.observer is not None:
                    self.observer.write_failed()
                if not must:
                    # Failed closed: the seq stays free for the next record.
                    raise AuditUnavailableError(
                        f"the audit log cannot be written ({err.strerror or err}), so nothing was done"
                    ) from None
                self._spool.append(_Spooled(line, chain, seq, chain.hash, written["hash"]))
                # The process log keeps a copy too, in case the process dies before the log takes it.
                log.error("audit record spooled: the audit log cannot be written", error=str(err), record=written)
            chain.accept(seq, written["hash"])
        if self.observer is not None:
            self.observer.recorded(event, written)
        if event in WITNESSED:
            self._checkpoint_soon()
        return written

    def request_event(self, event: str, request: AccessRequest, *, actor: str, **fields: Any) -> None:
        """An event about a request, with the fields an auditor reads it by.

        A part of a request of several targets is recorded under the id people saw (`request_id`), with its
        own stored id as `part` (docs/auditors.md).
        """
        self.record(
            event,
            actor=actor,
            target=request.target,
            request_id=request.visible_id,
            part=request.id if request.group else None,
            **_request_fields(request),
            **fields,
        )

    async def request_event_async(self, event: str, request: AccessRequest, *, actor: str, **fields: Any) -> None:
        """`request_event` from an event loop: the write runs on the log's own thread, so the loop never blocks."""
        await self._on_writer(functools.partial(self.request_event, event, request, actor=actor, **fields))

    async def _on_writer(self, write: Callable[[], _T]) -> _T:
        """Run `write` on the log's own thread and return what it returns (or raise what it raised) once it is done.

        Group commit: what the loop asks for while that thread is busy waits in a queue, and the thread takes the
        whole queue at once, writes each in the order asked (each record still its own write(2), failing closed on
        its own), then wakes the loop once for all of them. Each caller resumes only after its own write returned.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        with self._queue_lock:
            self._queue.append(_Asked(write, loop, future))
            start, self._draining = not self._draining, True
        if start:
            self._writer().submit(self._write_queued)
        return await future

    def _write_queued(self) -> None:
        """On the log's thread: write what is queued, batch after batch, until the queue is empty."""
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._draining = False
                    return
            done: dict[asyncio.AbstractEventLoop, list[tuple[_Asked, bool, Any]]] = {}
            for asked in batch:
                try:
                    outcome: tuple[_Asked, bool, Any] = (asked, True, asked.write())
                except Exception as err:  # handed to the caller, who sees it as if it had written itself
                    outcome = (asked, False, err)
                done.setdefault(asked.loop, []).append(outcome)
            for loop, outcomes in done.items():
                with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: nobody waits for the answer
                    loop.call_soon_threadsafe(_settle, outcomes)

    def flush(self) -> bool:
        """Write what the spool holds; True when nothing is left in it."""
        with self._lock:
            try:
                self._drain()
            except OSError:
                return False
            return True

    @property
    def spooled(self) -> int:
        """How many records wait for the log to take writes again."""
        return len(self._spool)

    # --- checkpoints -------------------------------------------------------------------------------

    def checkpoint(self, reason: str = "interval", *, background: bool = True) -> dict[str, Any] | None:
        """Write an `audit.checkpoint` and hand it to the witness; None when the log cannot take it.

        Its own `chain`, `seq` and `hash` are what the witness posts: they cover every record before it.
        With `background`, the witness posts from a thread of its own, so a slow Slack holds up nothing;
        at stop, it posts before this returns.
        """
        return self._checkpoint(reason, background=background)

    def _checkpoint(self, reason: str, *, background: bool, **fields: Any) -> dict[str, Any] | None:
        self._last_checkpoint = self._clock()
        if reason == "stop":
            with self._lock:  # the stop checkpoint covers what a pending one would: none comes after it
                if self._soon is not None:
                    self._soon.cancel()
                    self._soon = None
        try:
            written = self.record("audit.checkpoint", actor="system", reason=reason, **fields)
        except AuditUnavailableError as err:
            log.error("audit checkpoint not written", reason=reason, error=str(err))
            return None
        if reason == "stop":
            self._keep_clean()
        witness = self._witness
        if witness is not None:
            if background:
                self._witness_pool().submit(_post, witness, written)
            else:
                _post(witness, written)
        return written

    def _checkpoint_soon(self) -> None:
        """After a witnessed record: a checkpoint within SOON_SECONDS, one for every such record in between."""
        with self._lock:
            if self._witness is None or self._soon is not None:
                return
            delay = max(SOON_BATCH, self._last_soon + SOON_SECONDS - time.monotonic())
            self._soon = threading.Timer(delay, self._soon_due)
            self._soon.name = "jit-audit-soon"
            self._soon.daemon = True
            self._soon.start()

    def _soon_due(self) -> None:
        with self._lock:
            self._soon = None
            self._last_soon = time.monotonic()
        self._checkpoint("security", background=True)

    def checkpoint_if_due(self, now: float | None = None) -> dict[str, Any] | None:
        """A checkpoint when CHECKPOINT_SECONDS have passed since the last (a loop calls this every second)."""
        now = self._clock() if now is None else now
        if now - self._last_checkpoint < CHECKPOINT_SECONDS:
            return None
        return self.checkpoint()

    async def checkpoint_async(self, reason: str = "interval", *, background: bool = True) -> dict[str, Any] | None:
        """`checkpoint` from an event loop, on the log's own thread."""
        return await self._on_writer(functools.partial(self.checkpoint, reason, background=background))

    async def keep_checkpoints(self) -> None:
        """For an event loop (the web): a checkpoint every CHECKPOINT_SECONDS until cancelled."""
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            await self.checkpoint_async()

    def _keep_clean(self) -> None:
        """At stop, once the log holds every accepted record: mark the head clean, so a restart need not look."""
        with self._lock:
            chain = self._chain
            if chain is None or self._spool or self._fd is None:
                return
            offset = os.lseek(self._fd, 0, os.SEEK_CUR) if self.destination != "-" else 0
            chain.keep(chain.seq, chain.hash, self._inode, offset, clean=True)

    # --- the file ----------------------------------------------------------------------------------

    def _writer(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jit-audit")
            return self._executor

    def _witness_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._witnesses is None:
                self._witnesses = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jit-audit-witness")
            return self._witnesses

    def _drain(self) -> None:
        """Write the spool's records in order; raises OSError, leaving the rest spooled, when the log fails."""
        while self._spool:
            self._write(self._spool[0])
            self._spool.popleft()

    def _write(self, item: _Spooled) -> None:
        """Append one record's line; keep its chain's head beside the log at most every HEAD_SAVE_SECONDS.

        Between saves, a process that dies leaves records after the saved offset: the next process reads
        them there (chain.follow). A new file (logrotate) is noted before the first line goes into it.
        """
        if self._ensure_open():
            item.chain.keep(item.seq - 1, item.prev, self._inode, 0)
        offset = self._append(item.line)
        if offset is not None and time.monotonic() - item.chain.saved_at >= HEAD_SAVE_SECONDS:
            item.chain.keep(item.seq, item.digest, self._inode, offset)

    def _append(self, line: bytes) -> int | None:
        """One write(2) of the line on the open file; the file's offset just past it (None on stdout)."""
        assert self._fd is not None
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                self._cut_back(written)
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            # With O_APPEND the offset is the end of this write, whatever other processes appended meanwhile.
            return os.lseek(self._fd, 0, os.SEEK_CUR) if self.destination != "-" else None
        except OSError:
            self._close()  # opened again, and checked, by the next write
            raise

    def _cut_back(self, written: int) -> None:
        """After a short write (a full disk, a file size limit): the part that was written is cut off again, so that
        the next line does not land on the fragment's line and end unreadable with it. Only while the fragment is
        still the end of the file: another process's line after it is never cut (the next write then fails too).
        """
        if not written or self.destination == "-":
            return
        assert self._fd is not None
        with contextlib.suppress(OSError):
            end = os.lseek(self._fd, 0, os.SEEK_CUR)
            if os.fstat(self._fd).st_size == end:
                os.ftruncate(self._fd, end - written)

    def _ensure_open(self) -> bool:
        """Open the file, or open it again when logrotate moved it away since the last write; True when opened."""
        if self.destination == "-":
            self._fd = sys.stdout.fileno()
            return False
        if self._fd is not None:
            try:
                now = os.stat(self.destination)
                moved = (now.st_dev, now.st_ino) != self._inode
            except FileNotFoundError:
                moved = True
            if not moved:
                return False
            self._close()
        self._fd = os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        opened = os.fstat(self._fd)
        self._inode = (opened.st_dev, opened.st_ino)
        return True

    def _close(self) -> None:
        if self._fd is not None and self.destination != "-":
            os.close(self._fd)
        self._fd = None
        self._inode = None

    def _forked(self) -> None:
        """In a forked child (RQ's scheduler): let go of the parent's slot and chain; a record here starts its own."""
        self._lock = threading.Lock()
        if self._chain is not None and self._chain.slot is not None:
            self._chain.slot.release()
        self._chain = None
        self._spool.clear()
        self._executor = self._witnesses = None
        self._queue_lock = threading.Lock()
        self._queue, self._draining = [], False
        self._soon = None  # its thread did not come along


def _regular(path: str) -> bool:
    """A regular file, or none yet (the first record creates one)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _identity(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino)


def _post(witness: Witness, record: dict[str, Any]) -> None:
    try:
        witness(record)
    except Exception:  # the witness is a second copy: the checkpoint is in the log whatever Slack does
        log.exception("posting the audit checkpoint failed", chain=record.get("chain"), seq=record.get("seq"))


_warned: set[str] = set()


def _warn_about_key(secret: str) -> None:
    """Once a process: no JIT_AUDIT_KEY (anyone who can edit the log can recompute SHA-256), or a short one."""
    if not secret and "unset" not in _warned:
        _warned.add("unset")
        log.warning(
            "JIT_AUDIT_KEY is not set: the audit log is chained with plain SHA-256, which whoever can edit the "
            "file can recompute; set it to chain with HMAC-SHA256"
        )
    elif secret and len(secret) < SHORT_KEY and "short" not in _warned:
        _warned.add("short")
        log.warning("JIT_AUDIT_KEY is short; use at least 32 random characters", length=len(secret))


def _after_fork_in_child() -> None:
    for audit in list(_logs):
        audit._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _request_fields(request: AccessRequest) -> dict[str, Any]:
    return {
        "requester": request.requester,
        "status": request.status,
        "request_reason": request.reason,
        "duration_seconds": request.duration_seconds,
        "source_cidr": request.cidr,
        "role_name": request.role_name,
        "approvers": request.approvers or None,
        **({"starts_at": request.starts_at} if request.starts_at is not None else {}),
    }
