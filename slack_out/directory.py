"""Usergroup members, read from Slack and kept a minute: the core's GroupDirectory, failing closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient

from slack_out.poster import call

_USERGROUP_TTL = 60.0  # seconds a group's members are used without asking Slack again
_USERGROUP_MAX_STALE = 300.0  # while Slack fails, members read longer ago than this count for nothing
_USERGROUP_RETRY = 5.0  # seconds between two calls for a group Slack just failed to answer


class UsergroupDirectory:
    """Usergroup members from usergroups.users.list, kept a minute (the core's GroupDirectory).

    While Slack fails, members read less than MAX_STALE ago still count; older ones do not (a person
    removed from a group must not keep approving through an outage), and one failure is remembered
    for a few seconds so that a burst of clicks does not become a burst of calls.
    """

    def __init__(
        self,
        client: WebClient,
        fresh: float = _USERGROUP_TTL,
        max_stale: float = _USERGROUP_MAX_STALE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.clock = clock
        self.fresh = fresh
        self.max_stale = max_stale
        self._groups: dict[str, tuple[float, list[str]]] = {}
        self._failed: dict[str, float] = {}
        self._groups_lock = threading.Lock()

    def members(self, group: str) -> list[str]:
        now = self.clock()
        with self._groups_lock:
            cached = self._groups.get(group)
            failed_at = self._failed.get(group)
        if cached and now - cached[0] < self.fresh:
            return cached[1]
        answer = None
        if failed_at is None or now - failed_at >= _USERGROUP_RETRY:
            answer = call(self.client, "usergroups.users.list", usergroup=group)
        if answer is None:
            with self._groups_lock:
                self._failed[group] = failed_at if failed_at is not None and now - failed_at < _USERGROUP_RETRY else now
            # Fail closed past the bound: members of a group we cannot read cannot approve.
            return cached[1] if cached and now - cached[0] < self.max_stale else []
        members = [str(user) for user in answer.get("users", [])]
        with self._groups_lock:
            self._groups[group] = (now, members)
            self._failed.pop(group, None)
        return members
