"""The product's main flow, end to end: real processes, signed HTTP, Redis, moto and the Slack stand-in."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from devtools.stack import Stack
from tests.helpers import (
    APPROVALS,
    DEV1_CIDR,
    DEVS,
    ask,
    card_ts,
    click,
    click_on,
    dm_text,
    granted,
    lease_tags,
    listener_rules_of,
    rules_of,
    stack_policy,
    web_decisions,
)

pytestmark = pytest.mark.slow


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=stack_policy, sweep_interval=2.0, usergroups={"S0NETOPS": ["U0NETOPS1"]}) as stack:
        yield stack


def clicked(stack: Stack, user: str, action: str, request_id: str, until: str) -> None:
    """A click on the request's card, answered 200, then the audit event `until` for the request."""
    assert click(stack, user, action, request_id) == 200
    stack.wait_for(lambda: until in stack.events(request_id))


def test_whole_life_of_a_grant(stack: Stack) -> None:
    """Request → card → refused clicks → approve → rules with markers → end → rules gone, summary, audit."""
    before = stack.sg_rules()
    request_id, card = ask(stack, "U0DEV1", "request lb-prod 6s debugging 502s from eu-west")

    buttons = next(b for b in card["blocks"] if b["type"] == "actions")["elements"]
    assert [b["action_id"] for b in buttons] == ["jit_approve", "jit_deny"]
    assert {b["value"] for b in buttons} == {request_id}
    card_text = str(card["blocks"])
    assert "U0DEV1" in card_text and "lb-prod" in card_text and "6s" in card_text
    assert "debugging 502s from eu-west" in card_text and DEV1_CIDR in card_text

    assert click(stack, "U0DEV1", "jit_approve", request_id) == 200
    assert click(stack, "U0INTRUDER", "jit_approve", request_id) == 200
    stack.wait_for(lambda: stack.events(request_id).count("approval.refused") == 2)
    assert rules_of(stack, request_id) == []
    # Refused on the card: ephemeral replies (docs/policy.md), not DMs.
    stack.wait_for(lambda: any("own request" in str(m.get("text")) for m in stack.slack.ephemerals("U0DEV1")))
    stack.wait_for(lambda: any("not an approver" in str(m.get("text")) for m in stack.slack.ephemerals("U0INTRUDER")))

    assert click(stack, "U0APPROVER1", "jit_approve", request_id) == 200
    rules = stack.wait_for(
        lambda: len(rules_of(stack, request_id)) == 2 and rules_of(stack, request_id), what="two rules at moto"
    )
    assert sorted(r["FromPort"] for r in rules) == [443, 8443]
    for rule in rules:
        assert rule["CidrIpv4"] == DEV1_CIDR
        assert request_id in rule["Description"] and "until" in rule["Description"]
        tags = {t["Key"]: t["Value"] for t in rule["Tags"]}
        assert tags["jit-lb:managed"] == "true"
        assert datetime.fromisoformat(tags[f"jit-lb:lease:{request_id}"].replace("Z", "+00:00"))

    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="the revoke")
    assert rules_of(stack, request_id) == []
    assert len(stack.sg_rules()) == len(before)

    events = stack.events(request_id)
    assert events[:1] == ["request.created"]
    assert events.count("approval.refused") == 2
    for expected in ["request.approved", "grant.applied", "grant.revoked"]:
        assert expected in events
    revoked = next(r for r in stack.audit(request_id) if r["event"] == "grant.revoked")
    assert revoked["reason"] == "expired" and revoked["actor"] == "system" and revoked["verified"] is True
    applied = next(r for r in stack.audit(request_id) if r["event"] == "grant.applied")
    assert applied["target"] == "lb-prod" and applied["requester"] == "U0DEV1"
    assert applied["approvers"] == ["U0APPROVER1"] and len(applied["objects"]) == 2
    for record in stack.audit(request_id):
        assert record["ts"].endswith("Z") and record["actor"]

    # The worker posts to Slack after it records the end: wait for each message rather than race it.
    ts = card_ts(stack, request_id)
    final_card = stack.wait_for(
        lambda: next((u for u in reversed(stack.slack.updates(APPROVALS, ts)) if "Ended" in str(u["blocks"])), None),
        what="the card edited to Ended",
    )
    assert not [b for b in final_card["blocks"] if b["type"] == "actions"]
    assert "U0APPROVER1" in str(final_card["blocks"])
    summary = str(
        stack.wait_for(
            lambda: next((m for m in stack.slack.thread(APPROVALS, ts) if "Summary of" in str(m)), None),
            what="the summary in the thread",
        )
    )
    for fact in ["U0DEV1", "U0APPROVER1", "debugging 502s", "Granted at", "Ended at", "Lasted", "expired", "sgr-"]:
        assert fact in summary, fact
    stack.wait_for(lambda: "ended" in dm_text(stack, "U0DEV1"), what="the DM that access ended")
    assert "approved" in dm_text(stack, "U0DEV1") and "granted" in dm_text(stack, "U0DEV1")


def test_deny_changes_nothing_at_the_load_balancer(stack: Stack) -> None:
    """A denied request edits the card, tells the requester, and creates nothing; approving later counts for nothing."""
    request_id, _ = ask(stack, "U0DEV2", "request lb-prod 10m checking headers")
    clicked(stack, "U0APPROVER2", "jit_deny", request_id, until="request.denied")
    clicked(stack, "U0APPROVER1", "jit_approve", request_id, until="approval.refused")
    assert "request.approved" not in stack.events(request_id)
    assert rules_of(stack, request_id) == []
    update = stack.wait_for(
        lambda: next(
            (u for u in stack.slack.updates(APPROVALS, card_ts(stack, request_id)) if "Denied" in str(u)), None
        ),
        what="the card edited to Denied",
    )
    assert "Denied" in str(update["blocks"]) and "U0APPROVER2" in str(update["blocks"])
    stack.wait_for(lambda: any("denied" in str(m.get("text", "")) for m in stack.slack.dms("U0DEV2")))


def test_usergroup_member_may_approve(stack: Stack) -> None:
    """An approver named through a usergroup (S…) is expanded with usergroups.users.list and counts."""
    request_id, _ = ask(stack, "U0DEV2", "request lb-prod 1m usergroup path")
    clicked(stack, "U0NETOPS1", "jit_approve", request_id, until="grant.applied")
    assert stack.slack.calls("usergroups.users.list")


def test_simultaneous_approvals_count_once(stack: Stack) -> None:
    """Two approve clicks at the same instant approve once and grant once."""
    request_id, _ = ask(stack, "U0DEV1", "request lb-prod 1m two clicks at once")
    ts = card_ts(stack, request_id)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def press(user: str) -> None:
        barrier.wait()
        statuses.append(stack.client().click(user, "jit_approve", request_id, APPROVALS, ts).status)

    threads = [threading.Thread(target=press, args=(user,)) for user in ("U0APPROVER1", "U0APPROVER2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200, 200]
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id))
    stack.wait_for(lambda: len(rules_of(stack, request_id)) == 2)
    stack.wait_for(lambda: "approval.refused" in stack.events(request_id), what="the second click judged")
    events = stack.events(request_id)
    assert events.count("request.approved") == 1
    assert events.count("approval.refused") == 1
    assert events.count("grant.applied") == 1


def test_two_approvals_required(stack: Stack) -> None:
    """With approvals_required 2, one approval leaves the request pending; a second distinct approver grants."""
    request_id, _ = ask(stack, "U0DEV1", "request lb-two 1m needs two")
    clicked(stack, "U0APPROVER1", "jit_approve", request_id, until="request.approved")
    clicked(stack, "U0APPROVER1", "jit_approve", request_id, until="approval.refused")
    assert "grant.applied" not in stack.events(request_id)
    clicked(stack, "U0APPROVER2", "jit_approve", request_id, until="grant.applied")
    assert stack.events(request_id).count("request.approved") == 2


def test_failed_grant_leaves_nothing_and_says_why(stack: Stack) -> None:
    """A grant on a missing security group ends `failed`, leaves no rule, and the thread names the group."""
    before = len(stack.sg_rules())
    request_id, _ = ask(stack, "U0DEV1", "request lb-broken 1m this group does not exist")
    clicked(stack, "U0APPROVER1", "jit_approve", request_id, until="grant.failed")
    failed = next(r for r in stack.audit(request_id) if r["event"] == "grant.failed")
    assert "sg-0123456789abcdef0" in failed["error"] and "not found" in failed["error"]
    assert len(stack.sg_rules()) == before
    ts = card_ts(stack, request_id)
    stack.wait_for(lambda: any("sg-0123456789abcdef0" in str(m.get("text")) for m in stack.slack.thread(APPROVALS, ts)))
    stack.wait_for(lambda: any("sg-0123456789abcdef0" in str(m.get("text", "")) for m in stack.slack.dms("U0DEV1")))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("request lb-nope 30m why", "unknown target `lb-nope`"),
        ("request lb-prod 2h too long", "longer than `lb-prod` allows"),
        ("request lb-prod 30n typo", "`30n` is not a duration"),
        ("request lb-prod 30m", "a reason is required"),
        ("request lb-prod 30m --ip 0.0.0.0 why", "not a host address"),
        ("request lb-prod 30m --ip 10.0.0.0/8 why", "not a single IPv4 or IPv6 host address"),
        ("request lb-two 30m not on the list", "not allowed to request `lb-two`"),
        ("request", "name a target"),
    ],
)
def test_refused_commands_store_and_post_nothing(stack: Stack, text: str, expected: str) -> None:
    """Each bad command gets an ephemeral reply naming the problem, a request.refused record, and nothing else."""
    before = web_decisions(stack)
    answer = stack.client().command("U0DEV2", text, channel=DEVS)
    assert answer.status == 200
    assert expected in answer.json()["text"]
    assert answer.json().get("response_type", "ephemeral") == "ephemeral"
    refused = [r for r in stack.audit() if r["event"] == "request.refused" and r.get("text") == text]
    assert refused and refused[-1]["actor"] == "U0DEV2"
    assert web_decisions(stack) == before
    assert not re.search(r"jit-[a-z0-9]{6}", answer.json()["text"])


def test_bad_signature_is_401_and_changes_nothing(stack: Stack) -> None:
    """A forged or stale signature is refused with 401 and no request is made."""
    from devtools.slack_client import command_body, signed_headers

    body = command_body("U0DEV1", "request lb-prod 30m forged")
    forged = signed_headers("not-the-secret", body)
    stale = signed_headers("8f742231b10e8888abcd99yyyzzz85a5", body, timestamp=int(datetime.now(UTC).timestamp()) - 600)
    before = web_decisions(stack)
    assert stack.client().post(body, forged).status == 401
    assert stack.client().post(body, stale).status == 401
    assert web_decisions(stack) == before
    assert not [r for r in stack.audit() if r.get("request_reason") == "forged"]


def test_help_targets_and_list(stack: Stack) -> None:
    """`/jit help`, `/jit targets` and `/jit list` answer the requester privately."""
    assert "/jit request" in stack.client().command("U0DEV2", "help").json()["text"]
    assert "/jit request" in stack.client().command("U0DEV2", "frobnicate").json()["text"]
    targets = stack.client().command("U0DEV2", "targets").json()["text"]
    assert "lb-prod" in targets and "lb-two" not in targets
    request_id, _ = ask(stack, "U0DEV2", "request lb-prod 5m to see it listed")
    assert request_id in stack.client().command("U0DEV2", "list").json()["text"]
    assert request_id not in stack.client().command("U0DEV1", "list").json()["text"]


def test_a_reason_that_says_payload_is_still_a_request(stack: Stack) -> None:
    """Bolt reads any form body containing `payload` as an interaction; the web keeps a command's text whole."""
    request_id, card = ask(stack, "U0DEV1", "request lb-prod 30m bad payload from eu-west")
    assert request_id in card["text"]
    (created,) = [r for r in stack.audit() if r["event"] == "request.created" and r["request_id"] == request_id]
    assert created["request_reason"] == "bad payload from eu-west"


def test_healthz(stack: Stack) -> None:
    """/healthz answers 200 while Redis is up."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{stack.web_ports[0]}/healthz") as answer:
        assert answer.status == 200


def test_revoke_now_by_the_requester(stack: Stack) -> None:
    """`/jit revoke` by the requester ends the grant at once; another engineer may not revoke it."""
    request_id = granted(stack, "U0DEV1", "request lb-prod 10m done early")
    refused = stack.client().command("U0DEV2", f"revoke {request_id}").json()["text"]
    assert "only the requester or an approver" in refused
    answer = stack.client().command("U0DEV1", f"revoke {request_id}").json()["text"]
    assert f"Revoking `{request_id}`" in answer
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), what="the revoke")
    revoked = next(r for r in stack.audit(request_id) if r["event"] == "grant.revoked")
    assert (revoked["reason"], revoked["actor"]) == ("revoked", "U0DEV1")
    assert rules_of(stack, request_id) == []


def test_extend_moves_the_end_after_approval(stack: Stack) -> None:
    """`/jit extend` posts a new card; once approved, the markers at the load balancer carry the new end."""
    request_id = granted(stack, "U0DEV1", "request lb-prod 20s needs more later")
    (before,) = lease_tags(stack, request_id)
    answer = stack.client().command("U0DEV1", f"extend {request_id} 1m still digging").json()["text"]
    assert "waiting for approval" in answer
    card = stack.wait_for(
        lambda: next(
            (m for m in stack.slack.messages(APPROVALS) if m.get("text", "").startswith(f"Extension of {request_id}")),
            None,
        ),
        what="the extension card",
    )
    assert click_on(stack, "U0DEV1", request_id, card["ts"]) == 200
    stack.wait_for(lambda: "approval.refused" in stack.events(request_id))
    assert click_on(stack, "U0APPROVER2", request_id, card["ts"]) == 200
    stack.wait_for(lambda: "grant.extended" in stack.events(request_id), what="grant.extended")
    (after,) = lease_tags(stack, request_id)
    moved = datetime.fromisoformat(after.replace("Z", "+00:00")) - datetime.fromisoformat(before.replace("Z", "+00:00"))
    assert moved.total_seconds() == 60
    extended = next(r for r in stack.audit(request_id) if r["event"] == "grant.extended")
    assert extended["actor"] == "U0APPROVER2" and extended["verified"] is True
    stack.client().command("U0DEV1", f"revoke {request_id}")
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), what="the revoke")


def test_extend_refusals(stack: Stack) -> None:
    """Extending someone else's grant, a request that is not granted, or past the target's limit is refused."""
    request_id = granted(stack, "U0DEV1", "request lb-prod 50m long one")
    assert "only <@U0DEV1>" in stack.client().command("U0DEV2", f"extend {request_id} 5m mine").json()["text"]
    assert "the most `lb-prod` allows" in stack.client().command("U0DEV1", f"extend {request_id} 30m x").json()["text"]
    assert "there is no request" in stack.client().command("U0DEV1", "extend jit-222222 5m x").json()["text"]
    stack.client().command("U0DEV1", f"revoke {request_id}")
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), what="the revoke")


@pytest.mark.parametrize(
    "body",
    [
        "payload=notjson",
        "payload=%5B1%2C2%5D",
        "payload=%7B%7D",
        'payload={"type":"block_actions","actions":[{"action_id":"jit_approve","value":"x"}]}',
        "command=%2Fjit&text=request%20lb-prod%205m%20x",
        "garbage&&==",
        "",
    ],
)
def test_malformed_bodies_are_4xx(stack: Stack, body: str) -> None:
    """A correctly signed but malformed body gets a 4xx, never a 500, and the web process lives on."""
    before = web_decisions(stack)
    assert 400 <= stack.client().post(body).status < 500
    assert web_decisions(stack) == before
    assert all(process.alive() for process in stack.processes)


def test_tampered_buttons_are_refused_and_audited(stack: Stack) -> None:
    """A click naming an unknown request, or another request's card, is refused and audited; nothing changes."""
    first, _ = ask(stack, "U0DEV1", "request lb-prod 5m first card")
    second, _ = ask(stack, "U0DEV2", "request lb-prod 5m second card")
    client = stack.client()
    assert client.click("U0APPROVER1", "jit_approve", "jit-zzzzzz", APPROVALS, card_ts(stack, first)).status == 200
    assert client.click("U0APPROVER1", "jit_approve", "'; DROP TABLE", APPROVALS, card_ts(stack, first)).status == 200
    assert client.click("U0APPROVER1", "jit_approve", second, APPROVALS, card_ts(stack, first)).status == 200
    refused = stack.wait_for(
        lambda: (
            len(
                [
                    r
                    for r in stack.audit()
                    if r["event"] == "approval.refused" and r.get("value") in {"jit-zzzzzz", "'; DROP TABLE", second}
                ]
            )
            == 3
            and [r for r in stack.audit() if r["event"] == "approval.refused"]
        ),
        what="three refusals",
    )
    whys = " | ".join(r["why"] for r in refused)
    assert "there is no request jit-zzzzzz" in whys
    assert "does not name a request" in whys
    assert f"not an approval card of {second}" in whys
    for request_id in (first, second):
        assert "request.approved" not in stack.events(request_id)


def test_alb_listener_rule_grant_end_to_end(stack: Stack) -> None:
    """An ALB grant puts a source-ip rule on the listener for the grant's life, and removes it at the end."""
    request_id = granted(stack, "U0DEV2", "request lb-alb 5s admin page is broken")
    (rule,) = listener_rules_of(stack, request_id)
    conditions = {c["Field"]: c for c in rule["Conditions"]}
    assert conditions["source-ip"]["SourceIpConfig"]["Values"] == ["198.51.100.0/28"]
    assert conditions["path-pattern"]["PathPatternConfig"]["Values"] == ["/admin/*"]
    assert 100 <= int(rule["Priority"]) <= 199
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="the revoke")
    assert listener_rules_of(stack, request_id) == []


def test_iam_policy_grant_end_to_end(stack: Stack) -> None:
    """An IAM grant puts a jit- inline policy on the role, its end an AWS condition, and deletes it at the end."""
    request_id = granted(stack, "U0DEV1", "request lb-iam 5s rotate the listener certificate")
    iam = stack.moto.client("iam")
    assert request_id in iam.list_role_policies(RoleName="dev1-admin")["PolicyNames"]
    document = iam.get_role_policy(RoleName="dev1-admin", PolicyName=request_id)["PolicyDocument"]
    ends = next(r for r in stack.audit(request_id) if r["event"] == "grant.applied")["ends_at"]
    # Describe* on "*" in a statement of its own, the rest on the load balancer's own resources: both end alike.
    assert [s["Resource"] for s in document["Statement"] if s["Resource"] == "*"] == ["*"]
    for statement in document["Statement"]:
        assert statement["Condition"]["DateLessThan"]["aws:CurrentTime"] == ends.replace("+00:00", "Z")
        assert statement["Condition"]["Bool"]["aws:MultiFactorAuthPresent"] == "true"
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="the revoke")
    assert request_id not in iam.list_role_policies(RoleName="dev1-admin")["PolicyNames"]
