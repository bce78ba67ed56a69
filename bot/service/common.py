"""What the web's services share: the answer to a command, and queueing a worker job by its name."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from redis.exceptions import RedisError
from rq import Queue

from jit_lb.access.errors import JitError
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


def enqueue(queue: Queue, job: str, *args: str, job_id: str, module: str = JOBS) -> bool:
    """Queue a worker job by its name; False when Redis refused, which the caller's fallback covers."""
    try:
        queue.enqueue(module + job, *args, job_id=job_id)
    except RedisError as err:
        log.error("could not queue a job", job=job, job_id=job_id, error=str(err))
        return False
    return True


def tell(rt: Runtime, request_id: str, notice: str, who: str = "", done: bool = False) -> None:
    """Queue a worker's Slack posts of an outcome the web recorded (card, thread, DMs, App Homes): the workers'
    notices are the one writer of every message about a request; the web answers only the person who acted."""
    try:
        rt.notices.enqueue(NOTICES + "tell", request_id, notice, who=who, done=done)
    except RedisError as err:
        log.error("could not queue a notice; the card shows the old state", request_id=request_id, error=str(err))


def show_home(rt: Runtime, user: str) -> None:
    """Queue the publish of `user`'s App Home: the workers are the one writer of every home, as of every card."""
    try:
        rt.notices.enqueue(NOTICES + "show_home", user)
    except RedisError as err:
        log.error("could not queue an App Home; it is published at its next change", user=user, error=str(err))
        with contextlib.suppress(JitError):
            rt.store.home_taken(user)  # the next open queues it


def defer_to_workers(rt: Runtime) -> Callable[[str, dict[str, Any], float], None]:
    """The web's answer to a Slack call rate-limited: a worker makes it after Retry-After (notices.call_slack), so
    that no thread of the web waits on Slack's rate limit."""

    def defer(method: str, arguments: dict[str, Any], retry_after: float) -> None:
        try:
            rt.notices.enqueue_in(timedelta(seconds=retry_after), NOTICES + "call_slack", method, arguments)
        except RedisError as err:
            log.error("a rate-limited Slack call could not be handed on; it is lost", method=method, error=str(err))

    return defer


def looks_like_id(value: str) -> bool:
    return bool(re.fullmatch(ID_PATTERN, value))


def issued(rt: Runtime, view: dict[str, Any], user: str) -> dict[str, Any]:
    """Remember that this modal (its callback_id and exact private_metadata) is opened for `user`; the view back."""
    rt.store.issue_form(str(view["callback_id"]), str(view.get("private_metadata", "")), user)
    return view


def altered(rt: Runtime, callback_id: str, metadata: str, user: str) -> str | None:
    """Why a submission may not be taken (its private_metadata is not what jit-lb opened for `user`); None: it may.

    Slack returns a view's private_metadata as the app wrote it, with the user who submits it; anything else
    (another request, another person's form) was made up, and is refused like a button naming what it may not.
    """
    if rt.store.form_issued(callback_id, metadata, user):
        return None
    return "this form is not one jit-lb opened for you (its hidden data names something else); open it again"
