"""Several targets in one request: the grammar, the parts built from the policy, and the one card listing them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from devtools.slack_standin import block_kit_errors, view_errors
from jit_lb.access import commands, requests
from jit_lb.access.commands import RequestCommand, parse_command
from jit_lb.access.errors import CommandError
from jit_lb.access.policy import parse_policy
from jit_lb.access.requests import MAX_TARGETS, AccessRequest, Status
from slack_out import cards, sentences, summaries, views
from slack_out.limits import MAX_BLOCKS, MAX_SECTION_TEXT
from tests.helpers import NOW, valid


def several(count: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The valid policy with `count` targets lb-0 … like lb-prod (each with a long description)."""
    policy = valid()
    base = policy["targets"].pop("lb-prod")
    policy["targets"] = {
        f"lb-{i}": {**base, "description": "A load balancer " + "x" * 250, **(extra or {})} for i in range(count)
    }
    return policy


@pytest.mark.parametrize(
    ("text", "targets"),
    [
        ("request lb-prod,lb-alb 30m why", ("lb-prod", "lb-alb")),
        ("request LB-PROD,lb-alb why", ("lb-prod", "lb-alb")),
        ("request a,b,c,d,e why", ("a", "b", "c", "d", "e")),
        ("request lb-prod why", ("lb-prod",)),
    ],
)
def test_targets_joined_by_commas_are_one_request(text: str, targets: tuple[str, ...]) -> None:
    """`a,b` names several targets of one request, in the order typed; one target is as before."""
    parsed = parse_command(text)
    assert isinstance(parsed, RequestCommand)
    assert targets == parsed.targets


def test_each_target_is_judged_by_its_own_policy_and_the_parts_share_the_id() -> None:
    """The parts carry the request's id and every target; a duration outside one target's range refuses all."""
    raw = several(2)
    raw["targets"]["lb-1"]["max_duration"] = "20m"
    raw["targets"]["lb-1"]["default_duration"] = "15m"
    raw["targets"]["lb-1"]["approvals_required"] = 1
    policy = parse_policy(raw)
    build = commands.build_group(policy, "U0DEV1", RequestCommand("lb-0,lb-1", None, None, "why"), NOW)
    parts = build("jit-abcdef")
    assert [part.id for part in parts] == ["jit-abcdef-1", "jit-abcdef-2"]
    assert {("lb-0", "lb-1")} == {part.group_targets for part in parts}
    assert {"jit-abcdef"} == {part.visible_id for part in parts}
    assert {15 * 60} == {part.duration_seconds for part in parts}  # the shortest default, which both allow
    with pytest.raises(CommandError, match="longer than `lb-1` allows"):
        commands.build_group(policy, "U0DEV1", RequestCommand("lb-0,lb-1", timedelta(minutes=30), None, "why"), NOW)
    with pytest.raises(CommandError, match="unknown target `lb-9`"):
        commands.build_group(policy, "U0DEV1", RequestCommand("lb-0,lb-9", None, None, "why"), NOW)


def test_a_part_id_is_a_request_id_and_maps_back_to_the_request() -> None:
    """`jit-abcdef-3` is a valid stored id (a marker at the load balancer names it); audit records carry both."""
    assert requests.group_of("jit-abcdef-3") == "jit-abcdef"
    assert requests.audit_ids("jit-abcdef-3") == {"request_id": "jit-abcdef", "part": "jit-abcdef-3"}
    assert requests.audit_ids("jit-abcdef") == {"request_id": "jit-abcdef"}
    assert parse_command("revoke jit-abcdef-2") == commands.RevokeCommand("jit-abcdef-2")


def test_an_id_that_is_not_a_part_is_not_read_as_another_requests_part() -> None:
    """Markers at the load balancer may carry odd ids (`jit-[a-z0-9]{1,32}`): only `<request id>-1` … `-5` is a
    part, so a sweep record never names an unrelated request as `request_id`."""
    assert requests.audit_ids("jit-abcdefghij") == {"request_id": "jit-abcdefghij"}
    assert requests.group_of("jit-abcdef7") == "jit-abcdef7"
    assert requests.group_of("jit-abcdef-6") == "jit-abcdef-6"
    assert requests.group_of("jit-abcdef-12") == "jit-abcdef-12"


def test_five_long_targets_denied_with_the_longest_reasons_stay_valid_block_kit() -> None:
    """Five targets with 62-character names, 300-emoji descriptions, 40 approvers each and 500-emoji reasons: the
    card, the denied notices, the creation notice and both modals stay within Block Kit's limits."""
    emoji = "\U0001f600"  # two UTF-16 units
    raw = valid()
    base = raw["targets"].pop("lb-prod")
    raw["targets"] = {
        f"{i}" + "x" * 62: {**base, "description": emoji * 300, "deny_reason": "optional"} for i in range(5)
    }
    pol = parse_policy(raw)
    names = ",".join(pol.targets)
    reason = emoji * 500
    parts = commands.build_group(pol, "U0DEV1", RequestCommand(names, None, None, reason), NOW)("jit-abcdef")
    approvers = {p.id: [f"U0APPROVER{i:03d}" for i in range(40)] for p in parts}
    targets = {p.target: pol.targets[p.target] for p in parts}
    assert block_kit_errors(cards.group_card(parts, targets, approvers).blocks) == []
    denied = [requests.deny(p, "U0APPROVER1", NOW, emoji * 500) for p in parts]
    assert block_kit_errors(cards.group_card(denied, targets, approvers).blocks) == []
    for p in denied:
        assert block_kit_errors(sentences.denied_message(p).blocks) == []
        assert block_kit_errors(sentences.again_message(p, sentences.denied_message(p)).blocks) == []
    created = sentences.created_several_message(parts, ["C0A", "C0B", "C0C", "C0D", "C0E"])
    assert block_kit_errors(created.blocks) == []
    assert view_errors(views.deny_modal(parts[0], True, ("C0A", "1.2"))) == []
    form = views.request_modal(targets, names, None, None, reason)
    assert view_errors(form) == [], view_errors(form)


def parts_of(count: int, reason: str) -> tuple[list[AccessRequest], Any]:
    policy = parse_policy(several(count))
    names = ",".join(f"lb-{i}" for i in range(count))
    build = commands.build_group(policy, "U0DEV1", RequestCommand(names, None, None, reason), NOW)
    return build("jit-abcdef"), policy


def test_the_card_of_five_targets_lists_each_within_block_kit_limits() -> None:
    """Five targets with long descriptions and a reason at its longest: one valid card, every target on it, with
    what each grant creates and its approvals, the buttons carrying the id people see."""
    parts, policy = parts_of(MAX_TARGETS, "r" * 500)
    approvers = {part.id: ["U0APPROVER1"] * 30 for part in parts}
    message = cards.group_card(parts, {p.target: policy.targets[p.target] for p in parts}, approvers)
    assert block_kit_errors(message.blocks) == []
    assert len(message.blocks) < MAX_BLOCKS
    text = str(message.blocks)
    for part in parts:
        assert f"`{part.target}`" in text
    assert text.count("inbound rule on security group") == MAX_TARGETS
    assert text.count("0 of 1 approval(s)") == MAX_TARGETS
    values = {e["value"] for b in message.blocks if b["type"] == "actions" for e in b["elements"]}
    assert {"jit-abcdef"} == values
    assert all(len(b.get("text", {}).get("text", "")) <= MAX_SECTION_TEXT for b in message.blocks)


def test_the_card_shows_each_targets_own_outcome_and_loses_its_buttons_once_none_is_pending() -> None:
    """One target approved while another waits: the approved one says so, the buttons stay; all decided: none."""
    parts, policy = parts_of(2, "why")
    first = requests.approve(parts[0], "U0APPROVER1", NOW)
    targets = {p.target: policy.targets[p.target] for p in parts}
    waiting = cards.group_card([first, parts[1]], targets)
    assert "Approved by <@U0APPROVER1>" in str(waiting.blocks)
    assert any(b["type"] == "actions" for b in waiting.blocks)
    denied = requests.deny(parts[1], "U0APPROVER1", NOW)
    assert denied.status is Status.DENIED
    done = cards.group_card([first, denied], targets)
    assert not any(b["type"] == "actions" for b in done.blocks)
    assert "Denied by <@U0APPROVER1>" in str(done.blocks)


def test_the_extension_card_of_five_targets_is_valid_and_carries_the_request_id() -> None:
    """More time on five granted targets with the longest reason: one valid card listing each, buttons while any
    extension waits."""
    parts, _ = parts_of(MAX_TARGETS, "why")
    granted = []
    for part in parts:
        approved = requests.approve(part, "U0APPROVER1", NOW)
        live = approved.model_copy(update={"status": Status.GRANTED, "ends_at": NOW + timedelta(minutes=30)})
        granted.append(requests.request_extension(live, timedelta(minutes=10), "e" * 500, NOW))
    message = cards.extension_of_several(granted)
    assert block_kit_errors(message.blocks) == []
    assert all(f"`{part.target}`" in str(message.blocks) for part in granted)
    assert {"jit-abcdef"} == {e["value"] for b in message.blocks if b["type"] == "actions" for e in b["elements"]}


def test_the_summary_of_five_targets_is_valid_with_a_section_a_target() -> None:
    """Five grants ended, each with the most objects a summary lists: one valid message naming each target."""
    parts, _ = parts_of(MAX_TARGETS, "r" * 500)
    ended = [
        requests.approve(part, "U0APPROVER1", NOW).model_copy(
            update={
                "status": Status.REVOKED,
                "granted_at": NOW,
                "ended_at": NOW + timedelta(minutes=5),
                "end_reason": requests.EndReason.REVOKED,
                "created_objects": tuple(f"sgr-{i:017x} on sg-0abc: tcp/443 from 203.0.113.7/32" for i in range(100)),
            }
        )
        for part in parts
    ]
    message = summaries.summary_of_several(ended)
    assert block_kit_errors(message.blocks) == []
    assert all(f"Target: `{part.target}`" in str(message.blocks) for part in ended)
