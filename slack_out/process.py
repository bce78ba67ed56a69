"""What each process opens at start: its runtime and its Slack poster, sharing one WebClient (usergroups too)."""

from __future__ import annotations

from jit_lb.access.connections import WORKER, Timeouts
from jit_lb.runtime import Runtime, build_runtime
from jit_lb.settings import Settings
from slack_out.directory import UsergroupDirectory
from slack_out.poster import Notifier, web_client


def connect(
    settings: Settings, timeouts: Timeouts = WORKER, *, wait_on_rate_limits: bool = True
) -> tuple[Runtime, Notifier]:
    """A process's runtime and its Slack poster, sharing one WebClient (usergroups are read through it too).

    `wait_on_rate_limits` False (the web): a 429 is not waited out on the caller's thread (see poster.Defer)."""
    client = web_client(settings, wait_on_rate_limits=wait_on_rate_limits)
    runtime = build_runtime(settings, UsergroupDirectory(client), timeouts)
    return runtime, Notifier(client, lambda: runtime.policy)
