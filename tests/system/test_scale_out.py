"""Two web and two worker processes on one Redis: a burst with concurrent clicks grants each request once, each card
and each summary is posted once, and the sweeps of the two workers never overlap."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest

from devtools.faults import NO_SWEEP_LOCK, SLOW_SWEEP
from devtools.moto_server import Network
from devtools.slack_client import app_home_opened_event, click_payload, command_payload, event_payload
from devtools.stack import Stack
from tests.helpers import APPROVALS, DEVS, card_ts, granted, rules_of, stack_policy

pytestmark = pytest.mark.slow

REQUESTS = 30


def burst_policy(network: Network) -> dict[str, Any]:
    """The stack's policy with room for a burst: each of two people has 15 requests pending at once."""
    return {**stack_policy(network), "limits": {"pending_per_user": REQUESTS, "commands_per_minute": 100}}


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    # A sweep interval shorter than a sweep under this load: the turn comes round while the last sweep still runs.
    with Stack(policy=burst_policy, sweep_interval=0.3, webs=2, workers=2) as stack:
        yield stack


def test_burst_through_two_webs_and_two_workers(stack: Stack) -> None:
    """30 requests through both webs, each approved by two approvers at once through both webs: one grant each."""
    users = ["U0DEV1", "U0DEV2"]

    def submit(index: int) -> str:
        answer = stack.client(index % 2).command(users[index % 2], f"request lb-prod 6s burst {index}")
        assert answer.status == 200
        match = re.search(r"jit-[a-z0-9]{6}", answer.json()["text"])
        assert match, answer.body
        return match.group(0)

    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = list(pool.map(submit, range(REQUESTS)))
    assert len(set(ids)) == REQUESTS

    cards = {request_id: card_ts(stack, request_id) for request_id in ids}
    barrier = threading.Barrier(2 * REQUESTS)

    def press(job: tuple[int, str, str]) -> int:
        web, user, request_id = job
        barrier.wait()
        return stack.client(web).click(user, "jit_approve", request_id, APPROVALS, cards[request_id]).status

    jobs = [(0, "U0APPROVER1", rid) for rid in ids] + [(1, "U0APPROVER2", rid) for rid in ids]
    with ThreadPoolExecutor(max_workers=2 * REQUESTS) as pool:
        assert set(pool.map(press, jobs)) == {200}

    stack.wait_for(lambda: all("grant.revoked" in stack.events(rid) for rid in ids), timeout=90, what="all revoked")
    for request_id in ids:
        counts = Counter(stack.events(request_id))
        assert counts["request.approved"] == 1, (request_id, counts)
        assert counts["approval.refused"] == 1, (request_id, counts)
        assert counts["grant.applied"] == 1, (request_id, counts)
        assert counts["grant.revoked"] == 1, (request_id, counts)
    assert stack.sg_rules() == []
    for request_id, ts in cards.items():
        posted = [
            m for m in stack.slack.messages(APPROVALS) if request_id in m.get("text", "") and "thread_ts" not in m
        ]
        assert len(posted) == 1, request_id
        summaries = stack.wait_for(
            lambda ts=ts: [m for m in stack.slack.thread(APPROVALS, ts) if "Summary of" in str(m)], what="summary"
        )
        assert len(summaries) == 1, request_id


def test_one_revoke_asked_through_both_webs_at_once(stack: Stack) -> None:
    """`/jit revoke` by the requester through one web and by an approver through the other at the same moment: the
    grant ends once (one grant.revoked, one summary under its card), and both are answered."""
    request_id = granted(stack, "U0DEV1", "request lb-prod 10m revoked twice at once")
    ts = card_ts(stack, request_id)
    barrier = threading.Barrier(2)

    def revoke(job: tuple[int, str]) -> str:
        web, user = job
        barrier.wait()
        answer = stack.client(web).command(user, f"revoke {request_id}")
        assert answer.status == 200
        return str(answer.json()["text"])

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(revoke, [(0, "U0DEV1"), (1, "U0APPROVER1")]))
    assert any(f"Revoking `{request_id}`" in text for text in answers), answers
    stack.wait_for(lambda: not rules_of(stack, request_id), timeout=30, what=f"the rules of {request_id} gone")
    summaries = stack.wait_for(
        lambda: [m for m in stack.slack.thread(APPROVALS, ts) if "Summary of" in str(m)], what="the summary"
    )
    assert len(summaries) == 1
    counts = Counter(stack.events(request_id))
    assert (counts["grant.applied"], counts["grant.revoked"]) == (1, 1), counts
    assert len([r for r in stack.audit(request_id) if r["event"] == "grant.revoked" and r["reason"] == "revoked"]) == 1


def test_one_sweep_at_a_time(stack: Stack) -> None:
    """Across both workers' logs, no sweep starts while another is running."""
    runs = sweep_runs(stack)
    assert len(runs) >= 2
    assert overlapping(runs) == []


@pytest.mark.parametrize(("hold", "overlap"), [(True, False), (False, True)], ids=["with-the-hold", "without-it"])
def test_sweeps_longer_than_their_turn(hold: bool, overlap: bool) -> None:
    """Two workers whose sweeps take longer than the turn that starts them: one sweep at a time while they hold
    `running`; taken out (devtools.faults), the same log check finds sweeps overlapping."""
    # A sweep outlasts the turn (0.3 s) and the 1 s between two looks at it: the other worker's look comes mid-sweep.
    faults = {SLOW_SWEEP: "1.5"} | ({} if hold else {NO_SWEEP_LOCK: "1"})
    with Stack(policy=stack_policy, sweep_interval=0.3, workers=2, extra_env=faults) as stack:
        stack.wait_for(lambda: len(sweep_runs(stack)) >= 4, timeout=60, what="four sweeps")
        assert bool(overlapping(sweep_runs(stack))) is overlap


def sweep_runs(stack: Stack) -> list[tuple[datetime, datetime]]:
    """Every sweep in the workers' logs, from `sweep started` to `sweep done`, in order of start."""
    runs = []
    for worker in stack.by_prefix("worker"):
        started = None
        for line in worker.log_path.read_text().splitlines():
            if "sweep started" in line:
                started = _at(line)
            elif "sweep done" in line and started is not None:
                runs.append((started, _at(line)))
                started = None
    return sorted(runs)


def overlapping(runs: list[tuple[datetime, datetime]]) -> list[tuple[tuple[datetime, datetime], ...]]:
    return [(a, b) for a, b in itertools.pairwise(runs) if b[0] < a[1]]


def _at(line: str) -> datetime:
    return datetime.fromisoformat(line.split(maxsplit=1)[0].replace("Z", "+00:00"))


def test_socket_mode_with_two_replicas_acts_on_each_event_once() -> None:
    """Two webs in Socket Mode: envelopes go to either connection; a request, two approvers' clicks (one on each
    connection) and one Events API event delivered to both are each acted on once."""
    with Stack(policy=stack_policy, sweep_interval=2.0, webs=2, workers=2, socket_mode=True) as stack:
        stack.wait_for(lambda: stack.slack.socket_count() == 2, what="both webs' Socket Mode connections")
        event = event_payload(app_home_opened_event("U0DEV2"), event_id="Ev0TWICE")
        for _ in range(2):  # Slack's retry of an event lands on the other connection
            stack.slack.send_envelope("events_api", event)
        stack.wait_for(lambda: stack.slack.calls("views.publish"), what="the Home published")
        time.sleep(1)  # a second publish, if the retry were acted on, would come now
        assert len(stack.slack.calls("views.publish")) == 1
        ack = stack.slack.send_envelope(
            "slash_commands", command_payload("U0DEV1", "request lb-prod 4s two replicas", DEVS)
        )
        match = re.search(r"jit-[a-z0-9]{6}", ack["payload"]["text"])
        assert match, ack
        request_id = match.group(0)
        card = stack.wait_for(
            lambda: next(
                (
                    m
                    for m in stack.slack.messages(APPROVALS)
                    if request_id in m.get("text", "") and "thread_ts" not in m
                ),
                None,
            )
        )
        for approver in ("U0APPROVER1", "U0APPROVER2"):  # consecutive envelopes go to the two connections
            stack.slack.send_envelope(
                "interactive", click_payload(approver, "jit_approve", request_id, APPROVALS, card["ts"])
            )
        stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=30, what="grant.revoked")
        counts = Counter(stack.events(request_id))
        assert (counts["request.created"], counts["request.approved"], counts["grant.applied"]) == (1, 1, 1), counts
        assert counts["grant.revoked"] == 1, counts
        cards = [m for m in stack.slack.messages(APPROVALS) if request_id in m.get("text", "") and "thread_ts" not in m]
        assert len(cards) == 1
