"""The audit log: one JSON object a line, appended by one writer a process, failing closed (CONTRACT §7).

A record that cannot be written stops the act it records (`AuditUnavailableError`), except the
records of acts that take access away (`must=True`: revokes, expiries, refusals): those are kept
in a spool, in order, and written first once the file takes writes again. Each line is one
`write(2)` on a file opened with O_APPEND, so that web and workers can share one file; when
logrotate moves the file away, the next record reopens the path.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import structlog

from jit_lb.access.errors import AuditUnavailableError
from jit_lb.access.requests import AccessRequest

log = structlog.get_logger("jit_lb.audit")

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
        "policy.reloaded",
        "policy.refused",
        "audit.checkpoint",
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
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class AuditLog:
    """Appends events as single JSON lines to a file (or stdout), one writer a process, safe across threads."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._spool: deque[bytes] = deque()
        self._executor: ThreadPoolExecutor | None = None

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
    ) -> None:
        """Write one event, or raise AuditUnavailableError; with `must`, keep it in the spool instead of raising."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event}")
        values = {key: _jsonable(value) for key, value in fields.items() if value is not None}
        record = {"ts": _now(), "event": event, "request_id": request_id, "target": target, "actor": actor, **values}
        line = (json.dumps(record, default=str, ensure_ascii=False) + "\n").encode()
        with self._lock:
            try:
                self._drain()
                self._append(line)
            except OSError as err:
                if not must:
                    raise AuditUnavailableError(
                        f"the audit log cannot be written ({err.strerror or err}), so nothing was done"
                    ) from None
                self._spool.append(line)
                # The process log keeps a copy too, in case the process dies before the log takes it.
                log.error("audit record spooled: the audit log cannot be written", error=str(err), record=record)

    def request_event(self, event: str, request: AccessRequest, *, actor: str, **fields: Any) -> None:
        """An event about a request, with the fields an auditor reads it by."""
        self.record(
            event, actor=actor, target=request.target, request_id=request.id, **_request_fields(request), **fields
        )

    async def request_event_async(self, event: str, request: AccessRequest, *, actor: str, **fields: Any) -> None:
        """`request_event` from an event loop: the write runs on the log's own thread, so the loop never blocks."""
        write = functools.partial(self.request_event, event, request, actor=actor, **fields)
        await asyncio.get_running_loop().run_in_executor(self._writer(), write)

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

    def _writer(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jit-audit")
            return self._executor

    def _drain(self) -> None:
        """Write the spool's records in order; raises OSError, leaving the rest spooled, when the log fails."""
        while self._spool:
            self._append(self._spool[0])
            self._spool.popleft()

    def _append(self, line: bytes) -> None:
        self._ensure_open()
        assert self._fd is not None
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
        except OSError:
            self._close()  # opened again, and checked, by the next write
            raise

    def _ensure_open(self) -> None:
        """Open the file, or open it again when logrotate moved it away since the last write."""
        if self.destination == "-":
            self._fd = sys.stdout.fileno()
            return
        if self._fd is not None:
            try:
                now = os.stat(self.destination)
                moved = (now.st_dev, now.st_ino) != self._inode
            except FileNotFoundError:
                moved = True
            if not moved:
                return
            self._close()
        self._fd = os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        opened = os.fstat(self._fd)
        self._inode = (opened.st_dev, opened.st_ino)

    def _close(self) -> None:
        if self._fd is not None and self.destination != "-":
            os.close(self._fd)
        self._fd = None
        self._inode = None


def _request_fields(request: AccessRequest) -> dict[str, Any]:
    return {
        "requester": request.requester,
        "status": request.status,
        "request_reason": request.reason,
        "duration_seconds": request.duration_seconds,
        "source_cidr": request.cidr,
        "role_name": request.role_name,
        "approvers": request.approvers or None,
    }
