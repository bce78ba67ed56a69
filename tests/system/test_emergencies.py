"""Emergencies with the Procfile's processes: break-glass and its review, a lockdown of every kind, a freeze."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools.moto_server import Network
from devtools.stack import Stack
from tests.helpers import APPROVALS, DEVS, ask, click, listener_rules_of, rules_of, stack_policy

pytestmark = pytest.mark.slow
HAPROXY = shutil.which("haproxy") is not None


def emergency_policy(network: Network) -> dict[str, Any]:
    policy = stack_policy(network)
    policy["admins"] = ["U0ADMIN"]
    policy["break_glass"] = {"users": ["U0DEV2"], "targets": ["lb-prod"], "max_duration": "1h", "review_within": "1h"}
    now = datetime.now(UTC)
    policy["freezes"] = [
        {"from": (now - timedelta(days=1)).isoformat(), "to": (now + timedelta(days=1)).isoformat()}
        | {"targets": ["lb-two"], "reason": "quarter-end freeze"}
    ]
    return policy


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=emergency_policy, sweep_interval=2.0, workers=2, with_haproxy=HAPROXY) as stack:
        yield stack


def text(answer: Any) -> str:
    return str(answer.json()["text"])


def granted(stack: Stack, user: str, command: str) -> str:
    request_id, _ = ask(stack, user, command)
    assert click(stack, "U0APPROVER1", "jit_approve", request_id) == 200
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what=f"the grant of {request_id}")
    return request_id


def test_break_glass_refused_then_granted_without_a_click_and_reviewed(stack: Stack) -> None:
    """Not listed: refused. Listed: granted at once, announced, and an approver's flag reaches the admins."""
    assert "you may not use break-glass" in text(stack.client().command("U0DEV1", "breakglass lb-prod 30m outage"))
    answer = text(stack.client().command("U0DEV2", "breakglass lb-prod 30m INC-9 outage", channel=DEVS))
    request_id = answer[answer.index("jit-") : answer.index("jit-") + 10]
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="the break-glass grant")
    assert "request.approved" not in stack.events(request_id)
    assert len(rules_of(stack, request_id)) == 2
    card = stack.wait_for(
        lambda: next((m for m in stack.slack.messages(APPROVALS) if "Break-glass" in m.get("text", "")), None),
        what="the break-glass card",
    )
    assert "<@U0APPROVER1>" in json.dumps(card["blocks"])
    stack.client().click("U0APPROVER2", "jit_review_flag", request_id, APPROVALS, card["ts"])
    stack.wait_for(lambda: "review.flagged" in stack.events(request_id), what="the flag")
    assert "flagged break-glass" in json.dumps(stack.wait_for(lambda: stack.slack.dms("U0ADMIN")))


def test_a_frozen_target_is_refused_naming_the_freeze(stack: Stack) -> None:
    """lb-two is inside a freeze: the request is refused with the freeze's reason."""
    answer = text(stack.client().command("U0DEV1", "request lb-two 30m during the freeze"))
    assert "frozen until" in answer
    assert "quarter-end freeze" in answer


def test_lockdown_of_every_kind_refuses_and_lifts(stack: Stack) -> None:
    """Grants of every kind end (reason lockdown), a pending card is cancelled, requests are refused, then it lifts."""
    grants = [
        granted(stack, "U0DEV1", "request lb-prod 30m sg grant"),
        granted(stack, "U0DEV2", "request lb-alb 30m alb grant"),
        granted(stack, "U0DEV1", "request lb-iam 30m iam grant"),
    ]
    if HAPROXY:
        grants.append(granted(stack, "U0DEV3", "request edge-haproxy 30m haproxy grant"))
    pending, card = ask(stack, "U0DEV1", "request lb-alb 30m pending one")

    assert "Lockdown on" in text(stack.client().command("U0ADMIN", "lockdown on suspected leak"))
    for request_id in grants:
        ended_yet = lambda rid=request_id: "grant.revoked" in stack.events(rid)  # noqa: E731
        stack.wait_for(ended_yet, timeout=20, what=f"{request_id} ended")
        ended = next(r for r in stack.audit(request_id) if r["event"] == "grant.revoked")
        assert (ended["reason"], ended["verified"]) == ("lockdown", True)
    assert rules_of(stack, grants[0]) == []
    assert listener_rules_of(stack, grants[1]) == []
    iam = stack.moto.client("iam")
    assert grants[2] not in iam.list_role_policies(RoleName="dev1-admin")["PolicyNames"]
    stack.wait_for(lambda: "request.cancelled" in stack.events(pending), what="the pending request cancelled")
    stack.wait_for(lambda: "Cancelled" in json.dumps(stack.slack.updates(APPROVALS, card["ts"])), what="its card")

    assert "locked down" in text(stack.client().command("U0DEV1", "request lb-prod 30m now"))
    assert "locked down" in text(stack.client().command("U0DEV2", "breakglass lb-prod 30m now"))
    assert "suspected leak" in text(stack.client().command("U0DEV1", "lockdown status"))
    assert "lifted" in text(stack.client().command("U0ADMIN", "lockdown off"))
    assert "waiting for approval" in text(stack.client().command("U0DEV1", "request lb-prod 30m after"))
