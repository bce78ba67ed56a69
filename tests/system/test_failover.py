"""Redis Sentinel failover mid-flow (master SIGKILLed, a replica promoted): every process follows the new master by
itself, nothing acknowledged is lost, and every grant still ends by its end."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from devtools.stack import Stack
from tests.helpers import APPROVALS, ask, card_ts, click, granted, lease_end, rules_of, stack_policy

pytestmark = pytest.mark.slow

SWEEP = 3.0


@pytest.fixture(name="stack")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=stack_policy, sweep_interval=SWEEP, webs=2, workers=2, sentinel=True) as stack:
        yield stack


def test_failover_mid_flow_loses_nothing_acknowledged(stack: Stack) -> None:
    """Requests and a grant made before the master dies survive it; commands meanwhile say to try again or are
    done whole; once Sentinel promotes the replica, both webs take requests and the workers grant and revoke."""
    assert stack.topology is not None
    pending = [ask(stack, "U0DEV2", f"request lb-prod 20s before the failover {n}")[0] for n in range(3)]
    active = granted(stack, "U0DEV1", "request lb-prod 14s granted before the failover")
    end = lease_end(stack, active)

    old = stack.topology.kill_master()
    # A click that meets the failover is answered at once; it counts whole, or the approver is told to try again.
    assert click(stack, "U0APPROVER2", "jit_approve", pending[0]) == 200
    answers: list[str] = []
    while not answers or "jit-lb is unavailable" in answers[-1]:
        answer = stack.client(len(answers) % 2).command("U0DEV1", f"request lb-prod 20s during failover {len(answers)}")
        assert answer.status == 200
        answers.append(answer.json()["text"])
        time.sleep(0.2)
    stack.topology.wait_promoted(old)
    accepted = re.findall(r"jit-[a-z0-9]{6}", answers[-1])
    assert accepted, answers[-1]
    assert all("jit-lb is unavailable" in text and "try again" in text.lower() for text in answers[:-1])

    # What was acknowledged before the kill is all there: each pending request is approved and granted now.
    for request_id in [*pending, *accepted]:
        assert click(stack, "U0APPROVER1", "jit_approve", request_id) == 200
    for request_id in [*pending, *accepted]:
        stack.wait_for(lambda rid=request_id: "grant.applied" in stack.events(rid), timeout=30, what="grant.applied")
    stack.wait_for(lambda: not rules_of(stack, active), timeout=30, what="the grant from before the failover ended")
    assert (datetime.now(UTC) - end).total_seconds() <= SWEEP
    # Through the other web too, and each card posted once.
    other = stack.client(1).command("U0DEV2", "request lb-prod 20s through the second web after the failover")
    assert re.search(r"jit-[a-z0-9]{6}", other.json()["text"]), other.body
    assert Counter(stack.events(pending[0]))["request.approved"] == 1
    for request_id in [*pending, *accepted]:
        cards = [m for m in stack.slack.messages(APPROVALS) if request_id in m.get("text", "") and "thread_ts" not in m]
        assert len(cards) == 1, request_id
        assert Counter(stack.events(request_id))["grant.applied"] == 1
    assert card_ts(stack, pending[0])
