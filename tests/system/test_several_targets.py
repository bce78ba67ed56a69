"""A request of several targets end to end: one card, one click granting both, one command revoking both, through
the Procfile's processes, signed HTTP, moto and a real HAProxy (docs/approvals.md)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from devtools.haproxy import http_status
from devtools.stack import Stack
from tests.helpers import APPROVALS, DEVS, ask, card_ts, click, rules_of, stack_policy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.haproxy,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)"),
]

SOURCE = "127.0.0.7"  # U0DEV3's source: the security group's rules name it, and HAProxy sees it


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=stack_policy, sweep_interval=2.0, with_haproxy=True) as stack:
        yield stack


def through_haproxy(stack: Stack) -> int:
    assert stack.haproxy is not None
    return http_status(stack.haproxy.port, SOURCE, None)


def test_two_targets_granted_from_one_card_and_revoked_with_one_command(stack: Stack) -> None:
    """One click on the one card grants both targets (rules at moto, an ACL entry in HAProxy); one `/jit revoke`
    of the request's id ends both; the audit log holds each target's grant and revoke under that id, and the
    thread a summary of each target."""
    assert through_haproxy(stack) == 403
    group, card = ask(stack, "U0DEV3", "request lb-prod,edge-haproxy 10m OPS-7 rotate the edge certificates")
    blocks = str(card["blocks"])
    assert "`lb-prod`" in blocks and "`edge-haproxy`" in blocks and "security group" in blocks and "HAProxy" in blocks
    buttons = [e for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert {b["value"] for b in buttons} == {group}
    sg_part, haproxy_part = f"{group}-1", f"{group}-2"

    assert click(stack, "U0APPROVER1", "jit_approve", group) == 200
    stack.wait_for(lambda: stack.events(group).count("grant.applied") == 2, what="both grants applied")
    assert len(rules_of(stack, sg_part)) == 2
    assert through_haproxy(stack) == 200

    answer = stack.client().command("U0DEV3", f"revoke {group}", channel=DEVS)
    assert answer.status == 200 and "lb-prod" in answer.json()["text"] and "edge-haproxy" in answer.json()["text"]
    stack.wait_for(lambda: stack.events(group).count("grant.revoked") == 2, timeout=20, what="both revokes")
    assert rules_of(stack, sg_part) == []
    assert through_haproxy(stack) == 403

    records = stack.audit(group)
    for event in ("request.created", "request.approved", "grant.applied", "grant.revoked"):
        assert sorted((r["target"], r["part"]) for r in records if r["event"] == event) == [
            ("edge-haproxy", haproxy_part),
            ("lb-prod", sg_part),
        ], event
    assert {r["reason"] for r in records if r["event"] == "grant.revoked"} == {"revoked"}

    ts = card_ts(stack, group)
    summaries = stack.wait_for(
        lambda: (
            (found := [m for m in stack.slack.thread(APPROVALS, ts) if "Summary of" in str(m)])
            and len(found) == 2
            and found
        ),
        what="a summary of each target in the thread",
    )
    assert any("edge-haproxy" in str(m) for m in summaries) and any("lb-prod" in str(m) for m in summaries)
    ended = stack.wait_for(
        lambda: next(
            (u for u in reversed(stack.slack.updates(APPROVALS, ts)) if str(u["blocks"]).count(":lock: Ended") == 2),
            None,
        ),
        what="the card showing both targets ended",
    )
    assert not [b for b in ended["blocks"] if b["type"] == "actions"]
