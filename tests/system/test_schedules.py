"""Scheduled windows with the Procfile's processes: applied at the start and not before, or never applied."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from devtools.moto_server import Network
from devtools.stack import Stack
from tests.helpers import ask, click, rules_of, stack_policy

pytestmark = pytest.mark.slow

LEAD = timedelta(seconds=12)  # how far ahead the windows start: time to ask and approve first


def schedule_policy(network: Network) -> dict[str, Any]:
    policy = stack_policy(network)
    policy["admins"] = ["U0ADMIN"]
    return policy


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=schedule_policy, sweep_interval=2.0) as stack:
        yield stack


def approved_ahead(stack: Stack, user: str = "U0DEV1") -> tuple[str, datetime]:
    """A request for lb-prod starting LEAD from now, approved; its id and start."""
    start = (datetime.now(UTC) + LEAD).replace(microsecond=0)
    request_id, _ = ask(stack, user, f"request lb-prod 1m --at {start:%Y-%m-%dT%H:%M:%SZ} OPS-5 change window")
    assert click(stack, "U0APPROVER1", "jit_approve", request_id) == 200
    stack.wait_for(lambda: "request.approved" in stack.events(request_id), what="the approval")
    return request_id, start


def record(stack: Stack, request_id: str, event: str) -> dict[str, Any]:
    return next(r for r in stack.audit(request_id) if r["event"] == event)


def after(start: datetime, seconds: float) -> None:
    """Sleep until `seconds` past `start`."""
    time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds() + seconds))


def test_a_scheduled_request_is_applied_at_its_start_and_not_before(stack: Stack) -> None:
    """Approved ahead, nothing is at moto before the start; at the start the grant is applied, ending a duration
    after the start."""
    request_id, start = approved_ahead(stack)
    assert datetime.now(UTC) < start  # what follows looks before the start
    assert rules_of(stack, request_id) == []
    assert "grant.applied" not in stack.events(request_id)
    assert record(stack, request_id, "request.approved")["starts_at"] == start.isoformat()

    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), timeout=LEAD.seconds + 15, what="the grant")

    applied = record(stack, request_id, "grant.applied")
    assert datetime.fromisoformat(applied["granted_at"]) >= start
    assert datetime.fromisoformat(applied["ends_at"]) == start + timedelta(minutes=1)
    assert len(rules_of(stack, request_id)) == 2


def test_a_start_that_falls_in_a_lockdown_is_never_applied(stack: Stack) -> None:
    """A lockdown turned on before the start and still on at it cancels the scheduled request, naming the lockdown:
    nothing is applied at the start, nor once the lockdown is lifted after it (a sweep later)."""
    request_id, start = approved_ahead(stack)
    try:
        assert "lockdown" in stack.client().command("U0ADMIN", "lockdown on incident drill").json()["text"].lower()
        stack.wait_for(lambda: "request.cancelled" in stack.events(request_id), what="the cancellation")
        assert "lockdown" in record(stack, request_id, "request.cancelled")["why"]

        after(start, 4)

        assert "Lockdown on since" in stack.client().command("U0ADMIN", "lockdown status").json()["text"]
        assert "grant.applied" not in stack.events(request_id)
        assert rules_of(stack, request_id) == []
    finally:
        stack.client().command("U0ADMIN", "lockdown off")

    time.sleep(stack.sweep_interval + 1)  # a sweep after the lift: it brings back nothing

    assert "grant.applied" not in stack.events(request_id)
    assert rules_of(stack, request_id) == []


def test_a_requester_who_left_the_policy_before_the_start_gets_nothing(stack: Stack) -> None:
    """Removed from lb-prod's requesters (SIGHUP) before the start: at the start it ends `expired`, naming why."""
    request_id, _ = approved_ahead(stack)
    policy = yaml.safe_load(stack.policy_path.read_text())
    policy["targets"]["lb-prod"]["requesters"] = ["U0DEV2"]
    stack.policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    for process in stack.processes:
        assert process.popen is not None
        process.popen.send_signal(signal.SIGHUP)

    stack.wait_for(lambda: "request.expired" in stack.events(request_id), timeout=LEAD.seconds + 15, what="the expiry")

    assert "may no longer request `lb-prod`" in record(stack, request_id, "request.expired")["why"]
    assert "grant.applied" not in stack.events(request_id)
    assert rules_of(stack, request_id) == []
