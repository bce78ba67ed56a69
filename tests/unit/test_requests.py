"""Request transitions: pure functions, time as a parameter."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jit_lb.access import requests
from jit_lb.access.errors import ApprovalError, TransitionError
from jit_lb.access.requests import EndReason, Status
from tests.helpers import NOW, pending


def test_one_approval_approves_when_one_is_required() -> None:
    """With approvals_required 1, the first approver's click approves and records who decided."""
    after = requests.approve(pending(), "U0APPROVER1", NOW)
    assert (after.status, after.decided_by, after.approvers) == (Status.APPROVED, "U0APPROVER1", ["U0APPROVER1"])


def test_two_required_needs_two_distinct_approvers() -> None:
    """The same approver twice does not make two approvals."""
    once = requests.approve(pending(required=2), "U0APPROVER1", NOW)
    assert once.status is Status.PENDING
    with pytest.raises(ApprovalError, match="already approved"):
        requests.approve(once, "U0APPROVER1", NOW)
    assert requests.approve(once, "U0APPROVER2", NOW).status is Status.APPROVED


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda r: requests.deny(r, "U0APPROVER2", NOW), "already denied"),
        (lambda r: requests.approve(r, "U0APPROVER2", NOW), "already approved"),
    ],
)
def test_no_approval_after_a_decision(setup: object, expected: str) -> None:
    """An approval after a denial (or a second approval) counts for nothing."""
    decided = setup(pending())  # type: ignore[operator]
    with pytest.raises(TransitionError, match=expected):
        requests.approve(decided, "U0APPROVER1", NOW)


def test_requester_cannot_approve_and_late_approval_is_refused() -> None:
    """The requester's own click and a click after the pending window are refused."""
    with pytest.raises(ApprovalError, match="own request"):
        requests.approve(pending(), "U0DEV1", NOW)
    with pytest.raises(TransitionError, match="expired"):
        requests.approve(pending(), "U0APPROVER1", NOW + timedelta(minutes=16))


def test_life_cycle_to_the_end() -> None:
    """approved → granted → revoked records when, how long, and what was removed."""
    approved = requests.approve(pending(), "U0APPROVER1", NOW)
    granted = requests.grant(approved, NOW, NOW + timedelta(minutes=10), ["sgr-1"], verified=True)
    ended = requests.end(granted, NOW + timedelta(minutes=10), EndReason.EXPIRED, "system", ["sgr-1"], verified=True)
    assert ended.status is Status.REVOKED
    assert timedelta(minutes=10) == ended.lasted()
    with pytest.raises(TransitionError):
        requests.end(ended, NOW, EndReason.REVOKED, "U0DEV1", [], verified=True)


def test_expire_only_after_the_window() -> None:
    """A pending request expires only once its pending window has passed."""
    with pytest.raises(TransitionError, match="still within"):
        requests.expire(pending(), NOW)
    assert requests.expire(pending(), NOW + timedelta(minutes=15)).status is Status.EXPIRED
