"""Block Kit builders, tested as plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.messages import blocks
from jit_lb.access import requests
from jit_lb.access.requests import EndReason
from tests.helpers import NOW, pending


def actions_of(card: list[dict[str, object]]) -> list[dict[str, object]]:
    return [block for block in card if block["type"] == "actions"]


def test_pending_card_has_approve_and_deny_carrying_the_request_id() -> None:
    """A pending card has the two buttons, each with the request id as its value."""
    card = blocks.approval_card(pending())
    (actions,) = actions_of(card)
    assert [
        (button["action_id"], button["value"])
        for button in actions["elements"]  # type: ignore[index]
    ] == [("jit_approve", "jit-abcdef"), ("jit_deny", "jit-abcdef")]
    text = str(card)
    for fact in ("U0DEV1", "lb-prod", "10m", "203.0.113.7/32", "why"):
        assert fact in text


def test_decided_card_has_no_buttons_and_says_who_decided() -> None:
    """Once denied, the card shows no buttons, the outcome and the person who decided."""
    card = blocks.approval_card(requests.deny(pending(), "U0APPROVER2", NOW))
    assert actions_of(card) == []
    assert "Denied" in str(card)
    assert "<@U0APPROVER2>" in str(card)


def test_summary_names_everything_an_auditor_asks() -> None:
    """The end summary names requester, approvers, reason, times, duration, how it ended and the objects."""
    approved = requests.approve(pending(), "U0APPROVER1", NOW)
    granted = requests.grant(approved, NOW, NOW + timedelta(minutes=10), ["sgr-1 on sg-1"], verified=True)
    ended = requests.end(granted, NOW + timedelta(minutes=4), EndReason.REVOKED, "U0DEV1", ["sgr-1 on sg-1"], True)
    text = str(blocks.summary_blocks(ended))
    for fact in ("<@U0DEV1>", "<@U0APPROVER1>", "why", "Granted at", "Ended at", "Lasted: 4m", "revoked", "sgr-1"):
        assert fact in text


def test_times_render_in_the_readers_zone_with_a_utc_fallback() -> None:
    """Times use Slack's date formatting with a UTC fallback text."""
    moment = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)
    assert f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time_secs}}|2026-11-23 12:30:00 UTC>" == (
        blocks.when(moment)
    )
