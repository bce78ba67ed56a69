"""Slack-native requests with the Procfile's processes: the modal, the App Home, cancel, deny with a reason, roles."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.moto_server import Network
from devtools.slack_client import inputs, select, text_input
from devtools.slack_standin import dm_channel
from devtools.stack import Stack
from tests.helpers import APPROVALS, DEVS, card_of, card_ts, click, rules_of, stack_policy

pytestmark = pytest.mark.slow


def native_policy(network: Network) -> dict[str, Any]:
    """The stack's policy with roles, a ticket rule and durations on lb-prod, and a reason required to deny it."""
    policy = stack_policy(network)
    policy["roles"] = {"sre": ["U0DEV1", "S0SRE"], "netops": ["U0APPROVER1", "U0APPROVER2"]}
    policy["principals"]["U0DEV4"] = {"source_cidr": "198.51.100.64/28"}
    policy["targets"]["lb-prod"].update(
        requesters=["role:sre", "U0DEV2"],
        approvers=["role:netops", "S0NETOPS"],
        durations=["15m", "30m", "1h"],
        reason_pattern="^[A-Z]+-[0-9]+ ",
        reason_hint="start with the ticket, e.g. OPS-123 why",
        deny_reason="required",
    )
    return policy


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(
        policy=native_policy, sweep_interval=2.0, usergroups={"S0NETOPS": ["U0NETOPS1"], "S0SRE": ["U0DEV4"]}
    ) as stack:
        yield stack


def form(target: str, duration: str, reason: str) -> dict[str, Any]:
    return inputs(target=select(target), duration=select(duration), reason=text_input(reason))


def options(view: dict[str, Any], block_id: str) -> list[str]:
    [block] = [b for b in view["blocks"] if b.get("block_id") == block_id]
    return [option["value"] for option in block["element"]["options"]]


def request_id_in(stack: Stack, user: str) -> str:
    dm = stack.wait_for(lambda: [m for m in stack.slack.dms(user) if "is waiting for approval" in m.get("text", "")])
    text = dm[-1]["text"]
    return text[text.index("jit-") : text.index("jit-") + 10]


def test_bare_jit_opens_the_form_and_a_bad_reason_stores_nothing(stack: Stack) -> None:
    """`/jit` opens the modal with the user's targets; a reason breaking the rule is an error; nothing is stored."""
    answer = stack.client().command("U0DEV2", "", channel=DEVS)
    assert answer.status == 200
    [modal] = stack.slack.views("U0DEV2", "jit_request")
    assert options(modal, "target") == ["lb-alb", "lb-broken", "lb-prod"]  # not lb-two, not lb-iam: U0DEV1's alone
    assert options(modal, "duration") == ["5m", "15m", "30m", "1h"]  # lb-alb, selected first: steps within 1s..1h

    before = len(stack.audit())
    refused = stack.client().submit("U0DEV2", form("lb-prod", "30m", "no ticket"))
    assert refused.status == 200
    assert refused.json() == {
        "response_action": "errors",
        "errors": {"reason": "start with the ticket, e.g. OPS-123 why"},
    }
    records = stack.audit()[before:]
    assert [r["event"] for r in records] == ["request.refused"]
    assert not [m for m in stack.slack.messages() if "no ticket" in json.dumps(m)]


def test_a_good_form_posts_the_card_and_the_home_approves_it(stack: Stack) -> None:
    """A valid form makes a request like the command; an approver's App Home lists it and its Approve grants it."""
    stack.client().shortcut("U0DEV1")
    assert stack.client().submit("U0DEV1", form("lb-prod", "15m", "OPS-7 debugging 502s")).body == ""
    request_id = request_id_in(stack, "U0DEV1")
    card = card_of(stack, request_id)
    assert "OPS-7 debugging 502s" in json.dumps(card["blocks"])

    assert stack.client().app_home_opened("U0APPROVER1").status == 200
    home = stack.wait_for(lambda: stack.slack.home("U0APPROVER1"))
    assert request_id in json.dumps(home["blocks"])
    # The requester's own Approve, from a home, counts for nothing.
    stack.client().app_home_opened("U0DEV1")
    stack.wait_for(lambda: stack.slack.home("U0DEV1"))
    assert stack.client().home_click("U0DEV1", "jit_approve", request_id).status == 200
    stack.wait_for(lambda: "approval.refused" in stack.events(request_id), what="the requester's click refused")

    assert stack.client().home_click("U0APPROVER1", "jit_approve", request_id).status == 200
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="the grant")
    assert len(rules_of(stack, request_id)) == 2
    stack.wait_for(
        lambda: request_id not in json.dumps((stack.slack.home("U0APPROVER1") or {}).get("blocks")),
        what="the approver's home republished without it",
    )
    mine = stack.wait_for(lambda: "jit_revoke" in json.dumps((stack.slack.home("U0DEV1") or {}).get("blocks")))
    assert mine


def test_cancel_changes_card_thread_and_audit(stack: Stack) -> None:
    """`/jit cancel` by the requester edits the card, says so in the thread, and records request.cancelled."""
    answer = stack.client().command("U0DEV2", "request lb-prod 15m OPS-8 check the pool")
    request_id = answer.json()["text"].split("`")[1]
    ts = card_ts(stack, request_id)
    assert "withdrew" in stack.client().command("U0DEV2", f"cancel {request_id}").json()["text"]
    assert "request.cancelled" in stack.events(request_id)
    stack.wait_for(lambda: stack.slack.updates(APPROVALS, ts), what="the card edited")
    card = stack.slack.updates(APPROVALS, ts)[-1]
    assert "Cancelled by <@U0DEV2>" in json.dumps(card["blocks"])
    assert "jit_approve" not in json.dumps(card["blocks"])
    stack.wait_for(lambda: "withdrew" in json.dumps(stack.slack.thread(APPROVALS, ts)), what="the thread")


def test_deny_with_a_required_reason(stack: Stack) -> None:
    """Deny opens the jit_deny modal; an empty reason is refused; the reason reaches card, thread, DM and audit."""
    answer = stack.client().command("U0DEV2", "request lb-prod 15m OPS-9 rotate certs")
    request_id = answer.json()["text"].split("`")[1]
    assert click(stack, "U0APPROVER2", "jit_deny", request_id) == 200
    modal = stack.wait_for(lambda: stack.slack.views("U0APPROVER2", "jit_deny"), what="the deny modal")[-1]

    empty = stack.client().submit("U0APPROVER2", inputs(reason=text_input("")), callback_id="jit_deny", check=False)
    assert empty.json()["response_action"] == "errors"
    assert "request.denied" not in stack.events(request_id)

    why = "change freeze until Monday <!here>"
    assert stack.client().submit("U0APPROVER2", inputs(reason=text_input(why)), view=modal).status == 200
    stack.wait_for(lambda: "request.denied" in stack.events(request_id), what="the denial")
    denied = next(r for r in stack.audit(request_id) if r["event"] == "request.denied")
    assert (denied["actor"], denied["deny_reason"]) == ("U0APPROVER2", why)
    ts = card_ts(stack, request_id)
    assert why in json.dumps(stack.wait_for(lambda: stack.slack.updates(APPROVALS, ts))[-1]["blocks"])
    assert why in json.dumps(stack.wait_for(lambda: stack.slack.thread(APPROVALS, ts)))
    assert why in json.dumps(stack.wait_for(lambda: [m for m in stack.slack.dms("U0DEV2") if "denied" in m["text"]]))


def test_a_usergroup_member_of_a_role_may_request(stack: Stack) -> None:
    """U0DEV4 is in S0SRE, which role:sre names: lb-prod is theirs to request; U0APPROVER1 is not in it."""
    answer = stack.client().command("U0DEV4", "request lb-prod 15m OPS-10 via the role")
    assert "waiting for approval" in answer.json()["text"]
    refused = stack.client().command("U0DEV2", "request lb-two 15m not mine")
    assert "not allowed to request `lb-two`" in refused.json()["text"]


def again_button(message: dict[str, Any]) -> dict[str, Any] | None:
    """The Request again button of a message, if it has one."""
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("action_id") == "jit_rerequest":
                return dict(element)
    return None


def test_request_again_opens_the_form_filled_in(stack: Stack) -> None:
    """A denied request's DM carries Request again; its requester's click opens the request modal with the same
    target, duration and reason; anyone else's click opens nothing and is refused."""
    answer = stack.client().command("U0DEV2", "request lb-prod 1h OPS-11 drain the old pool")
    request_id = answer.json()["text"].split("`")[1]
    assert click(stack, "U0APPROVER2", "jit_deny", request_id) == 200
    modal = stack.wait_for(lambda: stack.slack.views("U0APPROVER2", "jit_deny"), what="the deny modal")[-1]
    assert stack.client().submit("U0APPROVER2", inputs(reason=text_input("not tonight")), view=modal).status == 200
    dm = stack.wait_for(
        lambda: next((m for m in stack.slack.dms("U0DEV2") if request_id in m["text"] and again_button(m)), None),
        what="the denial's DM with its button",
    )
    assert again_button(dm) == {
        "type": "button",
        "action_id": "jit_rerequest",
        "text": {"type": "plain_text", "text": "Request again"},
        "value": request_id,
    }

    forms_before = len(stack.slack.views("U0DEV1", "jit_request"))
    assert stack.client().click("U0DEV1", "jit_rerequest", request_id, dm_channel("U0DEV2"), dm["ts"]).status == 200
    stack.wait_for(lambda: "request.refused" in [r["event"] for r in stack.audit() if r.get("actor") == "U0DEV1"])
    assert len(stack.slack.views("U0DEV1", "jit_request")) == forms_before

    assert stack.client().click("U0DEV2", "jit_rerequest", request_id, dm_channel("U0DEV2"), dm["ts"]).status == 200
    filled = stack.wait_for(lambda: stack.slack.views("U0DEV2", "jit_request"), what="the filled-in form")[-1]
    blocks = {block.get("block_id"): block for block in filled["blocks"]}
    assert [o["value"] for o in blocks["target"]["element"]["initial_options"]] == ["lb-prod"]
    assert blocks["duration"]["element"]["initial_option"]["value"] == "1h"
    assert blocks["reason"]["element"]["initial_value"] == "OPS-11 drain the old pool"
