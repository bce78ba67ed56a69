"""Auto-approval from on-call, through the Procfile's processes, the Slack stand-in and the PagerDuty stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools.moto_server import Network
from devtools.stack import Stack
from tests.helpers import ask, card_of, rules_of, stack_policy

pytestmark = pytest.mark.slow

HOUR = timedelta(hours=1)


def oncall_policy(network: Network) -> dict[str, Any]:
    """lb-prod's security group, auto-approved for the primary of PSCHED01 for up to 10m, ending with the shift."""
    policy = stack_policy(network)
    policy["principals"]["U0DEV1"]["email"] = "dev1@example.com"  # U0DEV2 is found through Slack's users.info
    policy["targets"]["lb-oncall"] = {
        **policy["targets"]["lb-prod"],
        "description": "Production ALB, auto-approved for the primary on call",
        "auto_approve": {"on_call": {"schedules": ["PSCHED01"]}, "max_duration": "10m", "end_with_shift": True},
    }
    return policy


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=oncall_policy, with_pagerduty=True, sweep_interval=2.0) as stack:
        assert stack.pagerduty is not None
        stack.pagerduty.add_user("PDEV0001", "dev1@example.com", "Dev One")
        stack.pagerduty.add_user("PDEV0002", "dev2@example.com", "Dev Two")
        stack.slack.set_email("U0DEV2", "dev2@example.com")
        yield stack


@pytest.fixture(autouse=True, name="fresh")
def fixture_fresh(stack: Stack) -> Iterator[None]:
    assert stack.pagerduty is not None
    stack.pagerduty.reset()
    yield
    stack.pagerduty.reset()


def card_words(card: dict[str, Any]) -> str:
    return card.get("text", "") + json.dumps(card.get("blocks", []))


def buttons(card: dict[str, Any]) -> list[str]:
    return [
        element["action_id"]
        for block in card.get("blocks", [])
        if block.get("type") == "actions"
        for element in block.get("elements", [])
    ]


def approvals(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    return [record for record in stack.audit(request_id) if record["event"] == "request.approved"]


def on_call_this_hour(stack: Stack, person: str, level: int) -> None:
    """`person` on call at `level` of PSCHED01, from an hour ago to an hour from now."""
    assert stack.pagerduty is not None
    now = datetime.now(UTC)
    stack.pagerduty.put_on_call(person, "PSCHED01", level=level, start=now - HOUR, end=now + HOUR)


def waits_for_a_human(stack: Stack, user: str, text: str) -> str:
    """`/jit <text>` by `user`: its card keeps the buttons and nobody approved it; the card's words."""
    request_id, card = ask(stack, user, text)
    assert "jit_approve" in buttons(card)
    assert approvals(stack, request_id) == []
    return card_words(card)


def test_the_primary_on_call_is_approved_without_a_click(stack: Stack) -> None:
    """On call as the primary: approved by `system` with the shift on record, granted, and the card says why."""
    assert stack.pagerduty is not None
    now = datetime.now(UTC).replace(microsecond=0)
    stack.pagerduty.put_on_call("PDEV0001", "PSCHED01", level=1, start=now - HOUR, end=now + 2 * HOUR)
    request_id, _ = ask(stack, "U0DEV1", "request lb-oncall 5m paged for 502s")
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="grant.applied")
    [approved] = approvals(stack, request_id)
    assert approved["actor"] == "system"
    assert approved["auto_approve"]["schedule"] == "PSCHED01"
    assert approved["auto_approve"]["escalation_level"] == 1
    assert approved["auto_approve"]["end"] == (now + 2 * HOUR).isoformat()
    assert rules_of(stack, request_id)
    card = card_of(stack, request_id)
    assert "jit_approve" not in buttons(card)
    assert "Auto-approved" in card_words(card)
    assert "PSCHED01" in card_words(card)
    asked = stack.pagerduty.calls("/oncalls")[-1]
    assert ("user_ids[]", "PDEV0001") in asked.query
    assert ("schedule_ids[]", "PSCHED01") in asked.query


def test_a_secondary_waits_for_a_human(stack: Stack) -> None:
    """Level 2 is not the primary: the card keeps its buttons and says why it was not auto-approved."""
    on_call_this_hour(stack, "PDEV0002", level=2)
    words = waits_for_a_human(stack, "U0DEV2", "request lb-oncall 5m second line")
    assert "Not auto-approved" in words
    assert "escalation level 2" in words
    # Found through Slack's users.info, as the policy names no e-mail for U0DEV2.
    assert any(call.method == "users.info" for call in stack.slack.calls())


def test_pagerduty_down_falls_back_to_approvers(stack: Stack) -> None:
    """PagerDuty answering 500: the request waits for approvers, and the card says PagerDuty could not be asked."""
    on_call_this_hour(stack, "PDEV0001", level=1)
    assert stack.pagerduty is not None
    stack.pagerduty.fail_next(500)
    assert "PagerDuty could not be asked" in waits_for_a_human(
        stack, "U0DEV1", "request lb-oncall 5m pagerduty is down"
    )


def test_longer_than_auto_approval_allows_waits(stack: Stack) -> None:
    """On call, but asking for 20m where auto-approval gives at most 10m: a human decides."""
    on_call_this_hour(stack, "PDEV0001", level=1)
    words = waits_for_a_human(stack, "U0DEV1", "request lb-oncall 20m long one")
    assert "longer than the 10m auto-approval allows" in words


def test_a_grant_ends_with_its_shift(stack: Stack) -> None:
    """end_with_shift: a 10m grant on a shift ending in a few seconds is gone from the security group by then."""
    assert stack.pagerduty is not None
    now = datetime.now(UTC).replace(microsecond=0)
    shift_end = now + timedelta(seconds=8)
    stack.pagerduty.put_on_call("PDEV0001", "PSCHED01", level=1, start=now - HOUR, end=shift_end)
    request_id, _ = ask(stack, "U0DEV1", "request lb-oncall 10m end of shift")
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="grant.applied")
    applied = next(r for r in stack.audit(request_id) if r["event"] == "grant.applied")
    assert datetime.fromisoformat(applied["ends_at"]) == shift_end
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="grant.revoked")
    revoked = next(r for r in stack.audit(request_id) if r["event"] == "grant.revoked")
    assert revoked["reason"] == "expired"
    assert datetime.fromisoformat(revoked["ts"]) <= shift_end
    assert rules_of(stack, request_id) == []
