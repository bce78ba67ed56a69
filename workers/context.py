"""The worker process's runtime and Slack poster: RQ calls jobs by name with ids, and each job finds them here."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from jit_lb.runtime import Runtime
from jit_lb.settings import load_settings
from slack_out.poster import Notifier
from slack_out.process import connect


@dataclass(frozen=True)
class WorkerContext:
    """What every job of this process shares."""

    rt: Runtime
    notifier: Notifier


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
