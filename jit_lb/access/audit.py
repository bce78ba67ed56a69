"""The audit log: one JSON object a line, written through structlog, one function per event."""

from __future__ import annotations

import sys
import threading
from collections.abc import MutableMapping
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, TextIO

import structlog

from jit_lb.access.requests import AccessRequest

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


_LEADING = ("ts", "event", "request_id", "target", "actor")


def _leading_fields(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Put the fields every record has first, so that a person can scan the log."""
    ordered = {key: event_dict.pop(key) for key in _LEADING if key in event_dict}
    ordered.update(event_dict)
    return ordered


class AuditLog:
    """Appends events to a file (or stdout) as single JSON lines, safe across threads."""

    def __init__(self, stream: TextIO) -> None:
        self._lock = threading.Lock()
        self._logger = structlog.wrap_logger(
            structlog.WriteLogger(stream),
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
                _leading_fields,
                structlog.processors.JSONRenderer(default=_jsonable, sort_keys=False),
            ],
        )

    @classmethod
    def open(cls, destination: str) -> AuditLog:
        """`-` is stdout; anything else a file opened for appending, line-buffered."""
        if destination == "-":
            return cls(sys.stdout)
        return cls(open(destination, "a", encoding="utf-8", buffering=1))

    def record(
        self,
        event: str,
        *,
        actor: str,
        target: str | None = None,
        request_id: str | None = None,
        **fields: Any,
    ) -> None:
        """Write one event; unknown event names are a programming error."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event}")
        values = {key: _jsonable(value) for key, value in fields.items() if value is not None}
        with self._lock:
            self._logger.msg(event=event, request_id=request_id, target=target, actor=actor, **values)

    def request_event(self, event: str, request: AccessRequest, *, actor: str, **fields: Any) -> None:
        """An event about a request, with the fields an auditor reads it by."""
        self.record(
            event,
            actor=actor,
            target=request.target,
            request_id=request.id,
            requester=request.requester,
            status=request.status,
            request_reason=request.reason,
            duration_seconds=request.duration_seconds,
            source_cidr=request.cidr,
            role_name=request.role_name,
            approvers=request.approvers or None,
            **fields,
        )
