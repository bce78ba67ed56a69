"""HAProxy grants end to end: real HTTP from a distinct loopback source through a real HAProxy."""

from __future__ import annotations

import http.client
import shutil
import time
from collections.abc import Iterator

import pytest

from devtools.haproxy import http_status
from devtools.stack import Stack
from tests.helpers import APPROVALS, DEVS, ask, card_ts, click, granted, rules_of, stack_policy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.haproxy,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)"),
]

SOURCE = "127.0.0.7"


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=stack_policy, sweep_interval=2.0, with_haproxy=True) as stack:
        yield stack


def status(stack: Stack, connection: http.client.HTTPConnection | None = None) -> int:
    """GET / through HAProxy from 127.0.0.7; a fresh connection unless one is given."""
    assert stack.haproxy is not None
    return http_status(stack.haproxy.port, SOURCE, connection)


def test_haproxy_grant_opens_and_closes_real_access(stack: Stack) -> None:
    """403 before, 200 during the grant, and 403 after, also on a keep-alive connection opened during it."""
    assert status(stack) == 403
    request_id = granted(stack, "U0DEV3", "request edge-haproxy 5s check the edge")
    assert status(stack) == 200
    keep_alive = http.client.HTTPConnection(
        "127.0.0.1", stack.haproxy.port if stack.haproxy else 0, timeout=5, source_address=(SOURCE, 0)
    )
    try:
        assert status(stack, keep_alive) == 200
        stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="the revoke")
        assert status(stack) == 403
        try:
            after = status(stack, keep_alive)
        except (OSError, http.client.HTTPException):
            after = 0  # the connection was cut: as good as a refusal
        assert after != 200
    finally:
        keep_alive.close()
    revoked = next(r for r in stack.audit(request_id) if r["event"] == "grant.revoked")
    assert revoked["verified"] is True


def test_haproxy_reload_puts_active_grants_back(stack: Stack) -> None:
    """After an HAProxy reload drops runtime entries, the sweep restores the active grant within its interval."""
    assert stack.haproxy is not None
    request_id = granted(stack, "U0DEV3", "request edge-haproxy 30s survive a reload")
    assert status(stack) == 200
    stack.haproxy.reload()
    deadline = time.monotonic() + 10
    while status(stack) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status(stack) == 200
    stack.client().command("U0DEV3", f"revoke {request_id}")
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="the revoke")
    assert status(stack) == 403


def test_two_targets_granted_from_one_card_and_revoked_with_one_command(stack: Stack) -> None:
    """One click on the one card grants both targets (rules at moto, an ACL entry in HAProxy); one `/jit revoke`
    of the request's id ends both; the audit log holds each target's grant and revoke under that id, and the
    thread one closing summary with a section for each target."""
    assert status(stack) == 403
    group, card = ask(stack, "U0DEV3", "request lb-prod,edge-haproxy 10m OPS-7 rotate the edge certificates")
    blocks = str(card["blocks"])
    assert "`lb-prod`" in blocks and "`edge-haproxy`" in blocks and "security group" in blocks and "HAProxy" in blocks
    buttons = [e for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert {b["value"] for b in buttons} == {group}
    sg_part, haproxy_part = f"{group}-1", f"{group}-2"

    assert click(stack, "U0APPROVER1", "jit_approve", group) == 200
    stack.wait_for(lambda: stack.events(group).count("grant.applied") == 2, what="both grants applied")
    assert len(rules_of(stack, sg_part)) == 2
    assert status(stack) == 200

    answer = stack.client().command("U0DEV3", f"revoke {group}", channel=DEVS)
    assert answer.status == 200 and "lb-prod" in answer.json()["text"] and "edge-haproxy" in answer.json()["text"]
    stack.wait_for(lambda: stack.events(group).count("grant.revoked") == 2, timeout=20, what="both revokes")
    assert rules_of(stack, sg_part) == []
    assert status(stack) == 403

    records = stack.audit(group)
    for event in ("request.created", "request.approved", "grant.applied", "grant.revoked"):
        assert sorted((r["target"], r["part"]) for r in records if r["event"] == event) == [
            ("edge-haproxy", haproxy_part),
            ("lb-prod", sg_part),
        ], event
    assert {r["reason"] for r in records if r["event"] == "grant.revoked"} == {"revoked"}

    ts = card_ts(stack, group)
    summary = stack.wait_for(
        lambda: next((m for m in stack.slack.thread(APPROVALS, ts) if "Summary of" in str(m)), None),
        what="the closing summary in the thread",
    )
    blocks = str(summary["blocks"])
    assert "Target: `lb-prod`" in blocks and "Target: `edge-haproxy`" in blocks and "sgr-" in blocks
    assert [m for m in stack.slack.thread(APPROVALS, ts) if "Summary of" in str(m)] == [summary]
    ended = stack.wait_for(
        lambda: next(
            (u for u in reversed(stack.slack.updates(APPROVALS, ts)) if str(u["blocks"]).count(":lock: Ended") == 2),
            None,
        ),
        what="the card showing both targets ended",
    )
    assert not [b for b in ended["blocks"] if b["type"] == "actions"]
