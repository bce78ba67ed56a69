"""Block Kit builders, tested as plain data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block

from devtools.slack_standin import MAX_MESSAGE_TEXT, block_kit_errors
from jit_lb.access import requests
from jit_lb.access.policy import Target, parse_policy
from jit_lb.access.requests import AccessRequest, Approval, EndReason, Extension, Status
from slack_out import cards, limits, sentences, summaries, views
from slack_out.limits import Blocks
from tests.helpers import NOW, pending, valid


def actions_of(card: list[dict[str, object]]) -> list[dict[str, object]]:
    return [block for block in card if block["type"] == "actions"]


def test_pending_card_has_approve_and_deny_carrying_the_request_id() -> None:
    """A pending card has the two buttons, each with the request id as its value."""
    card = cards.approval_card(pending()).blocks
    (actions,) = actions_of(card)
    assert [
        (button["action_id"], button["value"])
        for button in actions["elements"]  # type: ignore[index]
    ] == [("jit_approve", "jit-abcdef"), ("jit_deny", "jit-abcdef")]
    text = str(card)
    for fact in ("U0DEV1", "lb-prod", "10m", "203.0.113.7/32", "why"):
        assert fact in text


def test_pending_card_names_who_can_approve_and_how_many_are_needed() -> None:
    """Under the buttons: every approver (usergroups already expanded), and the approvals needed."""
    card = cards.approval_card(pending(required=2), None, ["U0APPROVER1", "U0APPROVER2", "U0NET1"]).blocks
    assert "Can approve (2 needed): <@U0APPROVER1>, <@U0APPROVER2>, <@U0NET1>" in str(card)
    decided = cards.approval_card(requests.deny(pending(), "U0APPROVER2", NOW), None, ["U0APPROVER1"]).blocks
    assert "Can approve" not in str(decided)


def test_a_card_with_nobody_to_approve_says_so() -> None:
    """An empty approver list (a usergroup Slack did not answer for) is said, not left as a silent card."""
    assert "Nobody can approve it" in str(cards.approval_card(pending(), None, []).blocks)


def test_the_request_modal_names_the_approvers_of_the_selected_target() -> None:
    """The modal says who approves the target chosen: users, and usergroups as Slack shows them, and how many."""
    target = parse_policy(valid()).targets["lb-prod"]
    view = views.request_modal({"lb-prod": target}, "lb-prod", lambda _: (["U0APPROVER1"], ["S0NETOPS"]))
    assert "Approved by 1 of: <@U0APPROVER1>, <!subteam^S0NETOPS>" in str(view)
    assert block_kit_errors(view["blocks"]) == []


def test_decided_card_has_no_buttons_and_says_who_decided() -> None:
    """Once denied, the card shows no buttons, the outcome and the person who decided."""
    card = cards.approval_card(requests.deny(pending(), "U0APPROVER2", NOW)).blocks
    assert actions_of(card) == []
    assert "Denied" in str(card)
    assert "<@U0APPROVER2>" in str(card)


def test_summary_names_everything_an_auditor_asks() -> None:
    """The end summary names requester, approvers, reason, times, duration, how it ended and the objects."""
    approved = requests.approve(pending(), "U0APPROVER1", NOW)
    granted = requests.grant(approved, NOW, NOW + timedelta(minutes=10), ["sgr-1 on sg-1"], verified=True)
    ended = requests.end(granted, NOW + timedelta(minutes=4), EndReason.REVOKED, "U0DEV1", ["sgr-1 on sg-1"], True)
    text = str(summaries.summary_message(ended).blocks)
    for fact in ("<@U0DEV1>", "<@U0APPROVER1>", "why", "Granted at", "Ended at", "Lasted: 4m", "revoked", "sgr-1"):
        assert fact in text


def test_times_render_in_the_readers_zone_with_a_utc_fallback() -> None:
    """Times use Slack's date formatting with a UTC fallback text."""
    moment = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
    assert f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time_secs}}|2026-11-23 12:30:00 UTC>" == (
        limits.when(moment)
    )


# --- typed text is shown as typed --------------------------------------------------------------------

TYPED = "*pre-approved by security* <!channel> <https://evil.example|click> &amp; _now_ ~x~ `y`"


def text_objects(value: Any) -> Iterator[dict[str, Any]]:
    """Every text object (plain_text or mrkdwn) anywhere in a message's blocks."""
    if isinstance(value, dict):
        if value.get("type") in {"plain_text", "mrkdwn"} and isinstance(value.get("text"), str):
            yield value
        for child in value.values():
            yield from text_objects(child)
    elif isinstance(value, list):
        for child in value:
            yield from text_objects(child)


def typed_everywhere(status: Status = Status.PENDING) -> AccessRequest:
    """A request whose every person-typed field is TYPED, in `status`."""
    extension = Extension(duration_seconds=600, reason=TYPED, requested_at=NOW)
    return pending().model_copy(update={"reason": TYPED, "status": status, "failure": TYPED, "extension": extension})


def messages_of(request: AccessRequest) -> dict[str, Blocks]:
    """Every message whose blocks may show text a person typed."""
    assert request.extension is not None
    return {
        "card": cards.approval_card(request).blocks,
        "extension card": cards.extension_card(request, request.extension).blocks,
        "summary": summaries.summary_message(request).blocks,
        "created": sentences.created_message(request, "C0APPROVALS").blocks,
        "extension requested": sentences.extension_requested_message(request).blocks,
    }


@pytest.mark.parametrize("status", list(Status))
def test_typed_text_is_plain_text_on_every_message(status: Status) -> None:
    """A typed reason (or a cancellation's why) is only ever in plain_text: it neither formats, mentions nor links."""
    for name, message in messages_of(typed_everywhere(status)).items():
        kinds = {obj["type"] for obj in text_objects(message) if "<!channel>" in obj["text"]}
        assert kinds == {"plain_text"}, name
        assert TYPED in [obj["text"] for obj in text_objects(message)], name


def test_notification_texts_escape_typed_text() -> None:
    """Top-level texts carry typed text escaped as Slack documents: no mention, no link."""
    request = typed_everywhere(Status.CANCELLED)
    texts = [
        sentences.created_message(request, "C0APPROVALS").text,
        sentences.extension_requested_message(request).text,
        cards.outcome_line(request),
        sentences.failed_text(request),
        sentences.revoke_failed_text(request, TYPED, ["U0APPROVER1"]),
        sentences.granted_text(request, [TYPED], verified=True),
    ]
    for text in texts:
        assert "<!channel>" not in text and "<https://" not in text, text
    assert "&lt;!channel&gt;" in texts[0]


def test_escape_is_slacks() -> None:
    """&, < and > become entities, in that order, so that an entity typed by a person is shown as typed."""
    assert limits.escape("a &amp; <@U1>") == "a &amp;amp; &lt;@U1&gt;"


# --- every message is valid Block Kit ----------------------------------------------------------------


def assert_valid(message: Blocks) -> None:
    """Slack would take these blocks: the stand-in's limits checker, and slack_sdk's models, agree."""
    assert block_kit_errors(message) == []
    for block in message:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()  # raises SlackObjectFormationError past a limit
        assert parsed.to_dict() == block  # nothing slack_sdk does not know was dropped


def sg_rules(count: int) -> list[str]:
    return [
        f"sgr-{n:017x} on sg-0abc1234: tcp {1000 + n} from 203.0.113.7/32 until 2026-11-23T12:30:00Z"
        for n in range(count)
    ]


def ended(request: AccessRequest, created: list[str], removed: list[str], approvers: int = 1) -> AccessRequest:
    approved = request.model_copy(update={"approvals_required": approvers})
    for number in range(approvers):
        approved = requests.approve(approved, f"U0APPROVER{number}", NOW)
    granted = requests.grant(approved, NOW, NOW + timedelta(minutes=10), created, verified=True)
    return requests.end(granted, NOW + timedelta(minutes=4), EndReason.EXPIRED, "system", removed, False)


def test_summary_of_a_fifteen_port_grant_is_valid() -> None:
    """The issue's case: 15 ports created and removed fit (it was one 3,067-character section Slack refused)."""
    summary = summaries.summary_message(ended(pending(), sg_rules(15), sg_rules(15))).blocks
    assert_valid(summary)
    assert all(rule in str(summary) for rule in sg_rules(15))


@pytest.mark.parametrize("count", [0, 1, 20, 40, 99, 100, 101, 500, 5000])
def test_summary_lists_many_objects_within_the_limits(count: int) -> None:
    """Any number of objects fits in 50 blocks; past MAX_LISTED the list says how many more there were."""
    summary = summaries.summary_message(ended(pending(), sg_rules(count), sg_rules(count))).blocks
    assert_valid(summary)
    more = f"… and {count - limits.MAX_LISTED} more"
    assert (more in str(summary)) == (count > limits.MAX_LISTED)


LONG_TEXTS = {
    "empty": "",
    "whitespace": " \n\t " * 100,
    "3,000 characters": "x" * 3000,
    "3,001 characters": "x" * 3001,
    "20,000 characters": "reason " * 3000,
    "emoji only": "😀" * 4000,
    "a long unbroken word": "a" * 7000,
    "newlines": "\n" * 5000 + "why",
    "mentions": "<!channel> " * 1000,
}


@pytest.mark.parametrize("reason", LONG_TEXTS.values(), ids=LONG_TEXTS.keys())
def test_every_message_is_valid_for_extreme_reasons(reason: str) -> None:
    """Every builder's blocks are valid Block Kit whatever the reason's length or content."""
    extension = Extension(duration_seconds=600, reason=reason, requested_at=NOW)
    request = pending().model_copy(update={"reason": reason, "extension": extension})
    for message in [*messages_of(request).values(), limits.typed_blocks("Reason", reason)]:
        assert_valid(message)
    finished = ended(request, sg_rules(40), sg_rules(40), approvers=30)
    assert_valid(summaries.summary_message(finished).blocks)
    assert_valid(cards.approval_card(finished, target()).blocks)


def target(description: str = "Production public ALB") -> Target:
    return parse_policy(
        {**valid(), "targets": {"lb-prod": {**valid()["targets"]["lb-prod"], "description": description}}}
    ).targets["lb-prod"]


pieces = st.sampled_from(["x", "😀", " ", "\n", "*", "_", "<!channel>", "<@U1>", "&", "`", ">", "a" * 100, "é"])
typed_texts = st.one_of(
    st.text(max_size=300),
    st.lists(pieces, max_size=200).map("".join),
    st.tuples(pieces, st.integers(min_value=0, max_value=9000)).map(lambda piece: piece[0] * piece[1]),
)
user_ids = st.integers(min_value=0, max_value=10**9).map(lambda n: f"U{n:09d}")
objects = st.one_of(
    st.lists(st.text(min_size=0, max_size=600), max_size=60),
    st.integers(min_value=0, max_value=400).map(sg_rules),
)


@st.composite
def any_request(draw: st.DrawFn) -> AccessRequest:
    """A request in any state, its typed and listed fields drawn from extremes."""
    approvers = draw(st.lists(user_ids, max_size=60, unique=True))
    approvals = tuple(Approval(user=user, at=NOW) for user in approvers)
    extension = Extension(
        duration_seconds=draw(st.integers(min_value=1, max_value=366 * 86400)),
        reason=draw(typed_texts),
        requested_at=NOW,
        approvals=approvals,
        outcome=draw(st.sampled_from(["pending", "approved", "denied"])),
        decided_by=draw(st.none() | user_ids),
    )
    return AccessRequest.model_validate(
        {
            **pending().model_dump(),
            "reason": draw(typed_texts),
            "status": draw(st.sampled_from(list(Status))),
            "approvals_required": draw(st.integers(min_value=1, max_value=500)),
            "approvals": approvals,
            "decided_by": draw(st.none() | user_ids),
            "granted_at": NOW,
            "ends_at": NOW + timedelta(hours=1),
            "ended_at": draw(st.none() | st.just(NOW + timedelta(minutes=30))),
            "end_reason": draw(st.none() | st.sampled_from(list(EndReason))),
            "ended_by": draw(st.none() | st.just("system") | user_ids),
            "failure": draw(st.none() | typed_texts),
            "created_objects": draw(objects),
            "removed_objects": draw(objects),
            "verified": draw(st.none() | st.booleans()),
            "extension": extension,
            "duration_seconds": draw(st.integers(min_value=1, max_value=366 * 86400)),
        }
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=any_request(), description=typed_texts)
def test_every_builder_is_valid_block_kit_for_any_request(request: AccessRequest, description: str) -> None:
    """Cards, extension cards, summaries and thread replies stay within every Block Kit limit, for any input."""
    assert request.extension is not None
    for message in messages_of(request).values():
        assert_valid(message)
    assert_valid(cards.approval_card(request, target(description)).blocks)
    for text in [
        cards.approval_card(request).text,
        sentences.created_message(request, "C0APPROVALS").text,
        sentences.extension_requested_message(request).text,
        cards.extension_card(request, request.extension).text,
        summaries.summary_message(request).text,
        cards.outcome_line(request),
        sentences.granted_text(request, list(request.created_objects), verified=False),
        sentences.failed_text(request),
        sentences.revoke_failed_text(request, str(request.failure), request.approvers),
    ]:
        assert 0 < len(text) <= MAX_MESSAGE_TEXT


def test_capped_keeps_fifty_blocks_and_says_how_many_were_left_out() -> None:
    """The last resort: 80 blocks become 49 and a note that 31 were left out."""
    many = [{"type": "divider"} for _ in range(80)]
    capped = limits.capped(many)
    assert_valid(capped)
    assert (len(capped), capped[-1]["elements"][0]["text"]) == (50, "… and 31 more blocks not shown")


def test_a_cancellation_names_who_or_why() -> None:
    """Withdrawn by its requester, the thread names them; cancelled by jit-lb (a lockdown), it says why."""
    assert "<@U0DEV1> withdrew `jit-abcdef`" in sentences.cancelled_text(
        requests.cancel(pending(), "withdrawn", NOW, by="U0DEV1")
    )
    by_lockdown = sentences.cancelled_text(requests.cancel(pending(), "cancelled by the lockdown", NOW))
    assert "was cancelled: cancelled by the lockdown" in by_lockdown
    assert "<@system>" not in by_lockdown


@pytest.mark.parametrize("count", [0, 100, 5000])
def test_request_again_follows_an_ended_grants_summary_within_the_limits(count: int) -> None:
    """The requester's copy of an ended grant's summary ends with Request again, valid however long the summary."""
    finished = ended(pending(), sg_rules(count), sg_rules(count))
    message = sentences.again_message(finished, summaries.summary_message(finished)).blocks
    assert_valid(message)
    assert message[-1]["elements"] == [
        {
            "type": "button",
            "action_id": "jit_rerequest",
            "text": {"type": "plain_text", "text": "Request again"},
            "value": "jit-abcdef",
        }
    ]


def test_request_again_follows_an_expired_requests_notice() -> None:
    """An expired request's notice to its requester is its text and Request again."""
    expired = requests.expire(pending(), NOW + timedelta(hours=1))
    message = sentences.again_message(expired, limits.Message(sentences.expired_text(expired), [])).blocks
    assert_valid(message)
    assert "expired" in str(message[0])
    assert message[-1]["elements"][0]["action_id"] == "jit_rerequest"


SPECS = {
    "aws_security_group": {
        "kind": "aws_security_group",
        "region": "us-east-1",
        "security_group_id": "sg-0abc",
        "ports": [443, 8443],
    },
    "aws_alb_listener_rule": {
        "kind": "aws_alb_listener_rule",
        "region": "us-east-1",
        "listener_arn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/prod/50dc6c49/f2f7dc8e",
        "target_group_arn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/admin/73e2d6bc",
        "path_patterns": ["/admin/*"],
    },
    "aws_iam_policy": {
        "kind": "aws_iam_policy",
        "load_balancer_arn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/prod/50dc6c49",
    },
    "haproxy_acl": {
        "kind": "haproxy_acl",
        "runtime_api": "unix:/run/haproxy/admin.sock",
        "acl": "/etc/haproxy/jit.acl",
    },
}
CREATED = {
    "aws_security_group": "2 inbound rules on security group `sg-0abc` (us-east-1): tcp port 443, 8443 from "
    "`203.0.113.7/32`",
    "aws_alb_listener_rule": "A rule on ALB listener `f2f7dc8e` (us-east-1) forwarding requests from `203.0.113.7/32`, "
    "path /admin/* to target group `admin`",
    "aws_iam_policy": "An inline policy `jit-abcdef` on IAM role the requester's role: 23 Elastic Load Balancing "
    "action(s) on load balancer `app/prod/50dc6c49`",
    "haproxy_acl": "An entry `203.0.113.7/32` in HAProxy ACL `/etc/haproxy/jit.acl` at `unix:/run/haproxy/admin.sock`",
}


@pytest.mark.parametrize("kind", list(SPECS))
def test_the_card_says_what_a_grant_creates_at_the_load_balancer(kind: str) -> None:
    """Each kind's card names what its grant will create at the load balancer, in valid Block Kit."""
    policy = valid()
    policy["targets"]["lb-prod"]["grant"] = SPECS[kind]
    target = parse_policy(policy).targets["lb-prod"]

    card = cards.approval_card(pending(), target).blocks

    [block] = [b for b in card if "*At the load balancer*" in str(b)]
    assert CREATED[kind] in block["text"]["text"]
    assert block_kit_errors(card) == []


def test_what_a_card_says_is_created_stays_within_block_kit_for_the_longest_spec() -> None:
    """A security group with 200 ports and an ALB spec with five long paths and hosts: the card stays valid."""
    policy = valid()
    policy["targets"]["lb-prod"]["grant"] = {**SPECS["aws_security_group"], "ports": list(range(1000, 1200))}
    many_ports = cards.approval_card(pending(), parse_policy(policy).targets["lb-prod"]).blocks
    long = {**SPECS["aws_alb_listener_rule"], "path_patterns": ["/" + "p" * 120] * 5, "host_headers": ["h" * 120] * 5}
    policy["targets"]["lb-prod"]["grant"] = long
    long_paths = cards.approval_card(pending(), parse_policy(policy).targets["lb-prod"]).blocks

    assert "and 180 more" in str(many_ports)
    assert block_kit_errors(many_ports) == []
    assert block_kit_errors(long_paths) == []


def test_an_nginx_card_names_the_allow_line_and_the_file(tmp_path: Path) -> None:
    """The NGINX kind's card names the `allow` line for the source and the file it goes in."""
    allow, pid = tmp_path / "jit-allow.conf", tmp_path / "nginx.pid"
    allow.write_text("")
    pid.write_text("1")
    policy = valid()
    policy["targets"]["lb-prod"]["grant"] = {"kind": "nginx_allowlist", "allow_file": str(allow), "pid_file": str(pid)}

    card = cards.approval_card(pending(), parse_policy(policy).targets["lb-prod"]).blocks

    assert f"An `allow` line for `203.0.113.7/32` in `{allow}`, then NGINX reloaded" in str(card)
    assert block_kit_errors(card) == []
