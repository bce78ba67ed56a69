"""Auto-approval from on-call, pure: the policy's rules, the transition, the grant's end, and the card."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from devtools.slack_standin import block_kit_errors
from jit_lb.access import requests
from jit_lb.access.errors import PolicyError, TransitionError
from jit_lb.access.oncall import judge
from jit_lb.access.policy import parse_policy
from jit_lb.access.requests import AutoApproval, Status
from slack_out import cards
from tests.helpers import NOW, pending, valid


def with_auto(**auto: Any) -> dict[str, Any]:
    policy = valid()
    policy["targets"]["lb-prod"]["auto_approve"] = {"on_call": {"schedules": ["PSCHED01"]}, **auto}
    return policy


def approval(end_with_shift: bool = False, shift_end: timedelta = timedelta(hours=1)) -> AutoApproval:
    return AutoApproval(
        schedule="PSCHED01",
        escalation_level=1,
        shift_start=NOW - timedelta(hours=1),
        shift_end=NOW + shift_end,
        checked_at=NOW,
        end_with_shift=end_with_shift,
    )


def test_the_primary_is_the_default_and_the_target_max_the_limit() -> None:
    target = parse_policy(with_auto()).targets["lb-prod"]
    assert target.auto_approve is not None
    assert target.auto_approve.on_call.escalation_level == 1
    assert target.auto_approve_limit() == timedelta(hours=1)


@pytest.mark.parametrize(
    ("auto", "said"),
    [
        ({"on_call": {"schedules": ["not-a-schedule"]}}, "schedules"),
        ({"on_call": {"schedules": []}}, "schedules"),
        ({"on_call": {"schedules": ["PSCHED01"], "escalation_level": 0}}, "escalation_level"),
        ({"on_call": {"schedules": ["PSCHED01"]}, "max_duration": "10s"}, "nothing could be auto-approved"),
        ({"on_call": {"schedules": ["PSCHED01"]}, "also": True}, "also"),
    ],
)
def test_a_bad_auto_approve_is_refused_naming_the_field(auto: dict[str, Any], said: str) -> None:
    policy = valid()
    policy["targets"]["lb-prod"]["auto_approve"] = auto
    with pytest.raises(PolicyError, match=said):
        parse_policy(policy)


def test_auto_approve_is_by_system_and_keeps_the_entry() -> None:
    approved = requests.auto_approve(pending(), approval())
    assert approved.status is Status.APPROVED
    assert approved.decided_by == "system"
    assert approved.approvals == ()
    assert approved.auto_approval == approval()


def test_only_a_pending_request_is_auto_approved() -> None:
    approved = requests.auto_approve(pending(), approval())
    with pytest.raises(TransitionError):
        requests.auto_approve(approved, approval())


def test_a_grant_ends_with_its_shift_only_when_asked_and_only_if_sooner() -> None:
    request = pending()  # 10 minutes
    assert requests.grant_end(requests.auto_approve(request, approval()), NOW) == NOW + timedelta(minutes=10)
    short = approval(end_with_shift=True, shift_end=timedelta(minutes=3))
    assert requests.grant_end(requests.auto_approve(request, short), NOW) == NOW + timedelta(minutes=3)
    long = approval(end_with_shift=True, shift_end=timedelta(hours=3))
    assert requests.grant_end(requests.auto_approve(request, long), NOW) == NOW + timedelta(minutes=10)


ME = {"id": "PUSER01"}


def test_the_nearest_qualifying_level_wins() -> None:
    entries = [
        {"user": ME, "schedule": {"id": "PSCHED01"}, "escalation_level": 2, "start": None, "end": None},
        {"user": ME, "schedule": {"id": "PSCHED01"}, "escalation_level": 1, "start": "2026-11-23T11:00:00Z"},
        {"user": ME, "schedule": {"id": "POTHER1"}, "escalation_level": 1, "start": None, "end": None},
    ]
    answer = judge(entries, "PUSER01", ["PSCHED01"], 2)
    assert answer.shift is not None
    assert answer.shift.escalation_level == 1


def test_someone_elses_entry_never_counts() -> None:
    """Should PagerDuty ignore the user filter, the primary's entry is not the requester's."""
    entries = [{"user": {"id": "PUSER99"}, "schedule": {"id": "PSCHED01"}, "escalation_level": 1}]
    answer = judge(entries, "PUSER01", ["PSCHED01"], 1)
    assert answer.shift is None
    assert answer.why_not == "not on call now in PSCHED01"


def test_an_auto_approved_card_has_no_buttons_and_says_why() -> None:
    card = cards.approval_card(requests.auto_approve(pending(), approval(end_with_shift=True))).blocks
    assert [b for b in card if b.get("type") == "actions"] == []
    words = str(card)
    assert "Auto-approved" in words
    assert "PSCHED01" in words
    assert "ends with the shift" in words
    assert block_kit_errors(card) == []


def test_a_card_that_waits_says_why_it_was_not_auto_approved() -> None:
    request = pending().model_copy(update={"not_auto_approved": "PagerDuty could not be asked (HTTP 500)"})
    card = cards.approval_card(request).blocks
    assert [b for b in card if b.get("type") == "actions"]
    assert "Not auto-approved: PagerDuty could not be asked (HTTP 500)" in str(card)
    assert block_kit_errors(card) == []
