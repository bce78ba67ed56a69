"""What the web's services share: the answer to a command, and queueing a worker job by its name."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from redis.exceptions import RedisError
from rq import Queue

from jit_lb.access.errors import StoreUnavailableError
from jit_lb.access.requests import ID_PATTERN
from jit_lb.runtime import Runtime

log = structlog.get_logger("jit_lb.service")

# The web reaches the workers only through the queue, by job name: it never imports them.
JOBS = "workers.jobs."
NOTICES = "workers.notices."
LOCKDOWN = "workers.lockdown."
ENROLMENTS = "workers.enrolments."


@dataclass(frozen=True)
class Reply:
    """The ephemeral answer to a command, or a view for the listener to open with the command's trigger_id."""

    text: str
    view: dict[str, Any] | None = None
    then: Callable[[], None] | None = None  # slow work for after the answer (and after the view is open)


def utcnow() -> datetime:
    return datetime.now(UTC)


def enqueue(queue: Queue, job: str, *args: str, job_id: str, module: str = JOBS) -> bool:
    """Queue a worker job by its name; False when Redis refused, which the caller's fallback covers."""
    try:
        queue.enqueue(module + job, *args, job_id=job_id)
    except RedisError as err:
        log.error("could not queue a job", job=job, job_id=job_id, error=str(err))
        return False
    return True


def tell(rt: Runtime, request_id: str, notice: str) -> None:
    """Queue a worker's Slack posts of an outcome the web recorded (card, thread, DM, App Homes)."""
    try:
        rt.notices.enqueue(NOTICES + "tell", request_id, notice)
    except RedisError as err:
        log.error("could not queue a notice; the card shows the old state", request_id=request_id, error=str(err))


def refresh_homes(rt: Runtime, request_id: str) -> None:
    """Queue the App Home refresh of the people a request concerns (a worker publishes them), if anyone has a home."""
    try:
        if rt.store.any_home_users():
            rt.notices.enqueue(NOTICES + "refresh_homes", request_id)
    except (RedisError, StoreUnavailableError) as err:
        log.error("could not queue a home refresh", request_id=request_id, error=str(err))


def looks_like_id(value: str) -> bool:
    return bool(re.fullmatch(ID_PATTERN, value))
