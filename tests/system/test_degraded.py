"""Slack answering 429 or 5xx, and requests nobody decides: state is never lost for a message."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devtools.moto_server import Network
from devtools.stack import Stack
from tests.helpers import APPROVALS, ask, card_ts, click, rules_of, stack_policy

pytestmark = pytest.mark.slow


def short_pending(network: Network) -> dict[str, Any]:
    return {**stack_policy(network), "pending_ttl": "4s"}


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=short_pending, sweep_interval=2.0) as stack:
        yield stack


def test_rate_limited_card_is_posted_after_retry_after(stack: Stack) -> None:
    """Two 429s with Retry-After on chat.postMessage delay the card; it is still posted, once."""
    stack.slack.fail_next("chat.postMessage", times=2, status=429, retry_after=1)
    request_id, _ = ask(stack, "U0DEV1", "request lb-prod 2m slack is rate limiting")
    cards = [m for m in stack.slack.messages(APPROVALS) if request_id in m.get("text", "") and "thread_ts" not in m]
    assert len(cards) == 1
    assert len([c for c in stack.slack.calls("chat.postMessage") if c.response.get("error") == "ratelimited"]) >= 2


def test_slack_down_does_not_lose_the_grant(stack: Stack) -> None:
    """chat.update failing with 5xx every time: the approval and the grant still happen and are audited."""
    request_id, _ = ask(stack, "U0DEV1", "request lb-prod 2m slack is failing")
    stack.slack.fail_next("chat.update", times=50, status=503)
    assert click(stack, "U0APPROVER1", "jit_approve", request_id) == 200
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), timeout=30)
    assert rules_of(stack, request_id)
    stack.client().command("U0DEV1", f"revoke {request_id}")
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=30)
    assert not rules_of(stack, request_id)
    assert not [c for c in stack.slack.calls("chat.update") if c.response.get("ok")]
    stack.slack.reset()


def test_unanswered_request_expires(stack: Stack) -> None:
    """Nobody decides within pending_ttl: the request expires, the card and requester say so, later clicks count not."""
    request_id, _ = ask(stack, "U0DEV2", "request lb-prod 2m nobody answers")
    stack.wait_for(lambda: "request.expired" in stack.events(request_id), timeout=20, what="request.expired")
    update = stack.wait_for(lambda: stack.slack.updates(APPROVALS, card_ts(stack, request_id)))
    assert "Expired" in str(update[-1]["blocks"])
    stack.wait_for(lambda: any("expired" in str(m.get("text", "")) for m in stack.slack.dms("U0DEV2")))
    assert click(stack, "U0APPROVER1", "jit_approve", request_id) == 200
    stack.wait_for(lambda: "approval.refused" in stack.events(request_id))
    assert "request.approved" not in stack.events(request_id)


def test_requester_is_warned_before_the_end() -> None:
    """JIT_WARN_BEFORE before the end, the requester gets a DM naming the extend command; the audit says so."""
    with Stack(policy=stack_policy, sweep_interval=2.0, extra_env={"JIT_WARN_BEFORE": "3"}) as stack:
        request_id, _ = ask(stack, "U0DEV1", "request lb-prod 7s warn me")
        assert click(stack, "U0APPROVER1", "jit_approve", request_id) == 200
        stack.wait_for(lambda: "grant.warned" in stack.events(request_id), timeout=20, what="grant.warned")
        warning = next(m for m in stack.slack.dms("U0DEV1") if "ends in about" in str(m.get("text")))
        assert f"/jit extend {request_id} 30m" in warning["text"]
        events = stack.wait_for(lambda: "grant.revoked" in stack.events(request_id) and stack.events(request_id))
        assert events.index("grant.warned") < events.index("grant.revoked")
