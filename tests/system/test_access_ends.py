"""Access ends whatever changes, with the Procfile's processes: policy edits, SIGHUP, a full disk, a flood."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from devtools.stack import Stack
from tests.helpers import APPROVALS, ask, click, listener_rules_of, rules_of, stack_policy

pytestmark = pytest.mark.slow


@pytest.fixture(name="stack")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=stack_policy, sweep_interval=2.0) as stack:
        yield stack


def granted(stack: Stack, text: str, user: str = "U0DEV1") -> str:
    request_id, _ = ask(stack, user, text)
    assert click(stack, "U0APPROVER1", "jit_approve", request_id) == 200
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what=f"the grant of {request_id}")
    return request_id


def hang_up(stack: Stack) -> None:
    """SIGHUP to every process, once each is up (a worker says so when RQ listens)."""
    for process in stack.processes:
        stack.wait_for(lambda p=process: "Listening on" in p.log_path.read_text() or p.name.startswith("web"))
        assert process.popen is not None
        process.popen.send_signal(signal.SIGHUP)


def edit_policy(stack: Stack, change: Any) -> None:
    policy = yaml.safe_load(stack.policy_path.read_text())
    change(policy)
    stack.policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))


def revoked(stack: Stack, request_id: str) -> dict[str, Any]:
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what=f"{request_id} revoked")
    return next(r for r in stack.audit(request_id) if r["event"] == "grant.revoked")


def test_a_policy_edit_while_workers_are_down_orphans_nothing(stack: Stack) -> None:
    """Delete lb-alb and move lb-prod to a new group while no worker runs: a new worker ends both where applied."""
    alb = granted(stack, "request lb-alb 1h admin pages")
    sg = granted(stack, "request lb-prod 1h debugging 502s")
    assert listener_rules_of(stack, alb)
    assert len(rules_of(stack, sg)) == 2
    for worker in stack.by_prefix("worker"):
        worker.stop()
    ec2 = stack.moto.client("ec2")
    assert stack.network is not None
    moved_to = ec2.create_security_group(GroupName="lb-prod-v2", Description="migrated", VpcId=stack.network.vpc_id)

    def migrate(policy: dict[str, Any]) -> None:
        policy["targets"].pop("lb-alb")
        policy["targets"]["lb-prod"]["grant"]["security_group_id"] = moved_to["GroupId"]

    edit_policy(stack, migrate)
    stack.start_worker()

    for request_id in (alb, sg):
        record = revoked(stack, request_id)
        assert (record["reason"], record["verified"]) == ("policy", True)
    assert listener_rules_of(stack, alb) == []
    assert rules_of(stack, sg) == []


def test_sighup_reloads_the_policy_and_refuses_an_invalid_one(stack: Stack) -> None:
    """SIGHUP makes web and workers read the policy again; an invalid file is refused and the old one stays."""
    edit_policy(stack, lambda p: p["targets"]["lb-prod"].update(description="Renamed by SIGHUP"))
    hang_up(stack)
    stack.wait_for(
        lambda: "Renamed by SIGHUP" in stack.client().command("U0DEV1", "targets").json()["text"],
        what="the web to serve the new policy",
    )
    stack.wait_for(
        lambda: sum(r["event"] == "policy.reloaded" for r in stack.audit()) == 2, what="web and worker reloaded"
    )

    stack.policy_path.write_text("approver_channel: nope\n")
    hang_up(stack)
    stack.wait_for(lambda: sum(r["event"] == "policy.refused" for r in stack.audit()) == 2, what="both refused")
    assert all(process.alive() for process in stack.processes)
    ask(stack, "U0DEV1", "request lb-prod 30m still works")  # its card is posted under the policy in force


def test_a_full_audit_log_refuses_requests_and_posts_nothing() -> None:
    """With JIT_AUDIT_LOG=/dev/full the web refuses a request, says why, and no card is ever posted."""
    with Stack(policy=stack_policy, extra_env={"JIT_AUDIT_LOG": "/dev/full"}) as stack:
        answer = stack.client().command("U0DEV1", "request lb-prod 30m debugging 502s")
        assert answer.status == 200
        assert "audit log cannot be written" in answer.json()["text"]
        stack.client().command("U0DEV1", "list")
        assert stack.slack.messages(APPROVALS) == []


def test_a_flood_of_requests_is_bounded(stack: Stack) -> None:
    """150 `/jit request`s from one person: three are pending, the rest refused, and the log holds a handful."""
    answers = [stack.client().command("U0DEV2", f"request lb-prod 30m flood {n}").json()["text"] for n in range(150)]
    assert sum("waiting for approval" in answer for answer in answers) == 3
    assert sum("pending request" in answer or "this minute" in answer for answer in answers) == 147
    stack.wait_for(lambda: sum("flood" in m["text"] for m in stack.slack.messages(APPROVALS)) >= 3, what="three cards")
    refused = [r for r in stack.audit() if r["event"] == "request.refused"]
    assert len(refused) <= 2
    cards = [m for m in stack.slack.messages(APPROVALS) if "thread_ts" not in m and "Audit checkpoint" not in m["text"]]
    assert len(cards) == 3
