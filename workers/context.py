"""The worker process's runtime and Slack poster: RQ calls jobs by name with ids, and each job finds them here."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from jit_lb.runtime import Runtime
from jit_lb.settings import load_settings
from slack_out.poster import Notifier, web_client
from slack_out.process import connect
from workers.homes import HomePublisher


@dataclass(frozen=True)
class WorkerContext:
    """What every job of this process shares."""

    rt: Runtime
    notifier: Notifier
    homes: HomePublisher = field(init=False)  # the App Homes' writer, whose client does not wait out a 429

    def __post_init__(self) -> None:
        client = web_client(self.rt.settings, wait_on_rate_limits=False)
        object.__setattr__(self, "homes", HomePublisher(self.rt, Notifier(client, lambda: self.rt.policy)))


_current: WorkerContext | None = None
_lock = threading.Lock()


def current() -> WorkerContext:
    """The process's context, made from the environment on first use (a job run outside `python -m workers`)."""
    global _current  # noqa: PLW0603 - one context per worker process, made once
    with _lock:
        if _current is None:
            _current = WorkerContext(*connect(load_settings()))
        return _current


def install(context: WorkerContext | None) -> None:
    """Install the context the process made at start (or clear it, for a benchmark that made its own)."""
    global _current  # noqa: PLW0603
    with _lock:
        _current = context
