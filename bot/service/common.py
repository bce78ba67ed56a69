"""What the web's services share: the answer to a command, and queueing a worker job by its name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from redis.exceptions import RedisError
from rq import Queue

from jit_lb.access.requests import ID_PATTERN

log = structlog.get_logger("jit_lb.service")

# The web reaches the workers only through the queue, by job name: it never imports them.
JOBS = "workers.jobs."


@dataclass(frozen=True)
class Reply:
    """The ephemeral answer to a command."""

    text: str


def utcnow() -> datetime:
    return datetime.now(UTC)


def enqueue(queue: Queue, job: str, *args: str, job_id: str) -> bool:
    """Queue a worker job; False when Redis refused, which the caller's fallback covers."""
    try:
        queue.enqueue(JOBS + job, *args, job_id=job_id)
    except RedisError as err:
        log.error("could not queue a job", job=job, job_id=job_id, error=str(err))
        return False
    return True


def looks_like_id(value: str) -> bool:
    return bool(re.fullmatch(ID_PATTERN, value))
