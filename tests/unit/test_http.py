"""What Bolt reads from the bodies the HTTP edge hands it: the same fields Slack sent."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from typing import Any

import pytest
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.http import _for_bolt, check_shape, signature_error
from jit_lb.access.errors import MalformedError

FORM = "application/x-www-form-urlencoded"
COMMAND = {"command": "/jit", "user_id": "U0DEV1", "text": "request lb-prod 30m bad payload from eu-west"}
ACTION = {"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "jit_approve", "value": "payload"}]}


def bolt_reads(body: str, content_type: str) -> dict[str, Any]:
    request = AsyncBoltRequest(body=_for_bolt(body, content_type), headers={"content-type": [content_type]})
    return dict(request.body)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (urllib.parse.urlencode(COMMAND), FORM, COMMAND),
        (
            urllib.parse.urlencode({**COMMAND, "text": "request lb-prod 30m payloads payload"}),
            FORM,
            {**COMMAND, "text": "request lb-prod 30m payloads payload"},
        ),
        (urllib.parse.urlencode({"payload": json.dumps(ACTION)}), FORM, ACTION),
        (urllib.parse.urlencode({"team_id": "T1", "payload": json.dumps(ACTION)}), FORM, ACTION),
        (
            json.dumps({"type": "event_callback", "note": "payload"}),
            "application/json",
            {"type": "event_callback", "note": "payload"},
        ),
    ],
)
def test_bolt_reads_what_slack_sent(body: str, content_type: str, expected: dict[str, Any]) -> None:
    assert bolt_reads(body, content_type) == expected


def test_without_the_edge_bolt_loses_a_command_that_says_payload() -> None:
    """The reason for _for_bolt: Bolt alone reads this command as an empty body."""
    body = urllib.parse.urlencode(COMMAND)
    assert dict(AsyncBoltRequest(body=body, headers={"content-type": [FORM]}).body) == {}


# --- the signature, checked first -----------------------------------------------------------------

KEY = b"secret"
NOW = 1_700_000_000.0


def signature(body: bytes, stamp: str, key: bytes = KEY) -> str:
    return "v0=" + hmac.new(key, b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("²", "missing or malformed X-Slack-Request-Timestamp"),
        ("\u0661\u0667" + "\u0660" * 8, "missing or malformed X-Slack-Request-Timestamp"),
        ("9" * 5000, "missing or malformed X-Slack-Request-Timestamp"),
        ("", "missing or malformed X-Slack-Request-Timestamp"),
        (" 1700000000", "missing or malformed X-Slack-Request-Timestamp"),
        ("1699999000", "stale X-Slack-Request-Timestamp"),
        ("1700000301", "stale X-Slack-Request-Timestamp"),
    ],
    ids=["superscript", "arabic-indic", "5000-digits", "empty", "space", "old", "future"],
)
def test_a_timestamp_is_a_few_ascii_digits_within_five_minutes(stamp: str, expected: str) -> None:
    """Only ASCII digits, at most 12 of them, within 5 minutes of now: int() is never handed what it refuses."""
    assert signature_error(KEY, b"x", stamp, signature(b"x", stamp), NOW) == expected


@pytest.mark.parametrize("value", ["", "v0=", "v0=é" + "0" * 63, "v1=" + "0" * 64, "V0=" + "A" * 64])
def test_a_signature_not_shaped_as_slacks_is_refused_before_it_is_compared(value: str) -> None:
    """hmac.compare_digest refuses non-ASCII text; such a signature never reaches it."""
    assert signature_error(KEY, b"x", "1700000000", value, NOW) == "missing or malformed X-Slack-Signature"


def test_the_signature_covers_the_raw_bytes() -> None:
    """Bytes that are not UTF-8 can be signed (and are then refused as malformed, not as forged)."""
    body = b"\xff\xfe payload"
    assert signature_error(KEY, body, "1700000000", signature(body, "1700000000"), NOW) is None
    assert signature_error(KEY, body, "1700000000", signature(body, "1700000000", b"other"), NOW) == (
        "invalid signature"
    )


# --- the shape, checked second --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "kind"),
    [
        (urllib.parse.urlencode(COMMAND), FORM, "command"),
        (urllib.parse.urlencode({"payload": json.dumps({**ACTION, "container": {}})}), FORM, "interaction"),
        ('{"type": "event_callback", "event": {"type": "app_home_opened", "user": "U1"}}', "application/json", "event"),
        ('{"type": "url_verification", "challenge": "c"}', "text/plain", "event"),
        ('{"type": "app_rate_limited"}', "application/json", None),
        (urllib.parse.urlencode({"payload": json.dumps({"type": "dialog_submission"})}), FORM, None),
        ("ssl_check=1&token=t", FORM, None),
    ],
)
def test_what_slack_sends_passes_and_what_nobody_listens_for_is_ignored(
    body: str, content_type: str, kind: str | None
) -> None:
    """Commands, interactions and events pass; types that have no listener are answered 200 and ignored."""
    assert check_shape(body, content_type) == kind


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        ("[]", "application/json", "the body is not a JSON object"),
        (
            '{"type": "event_callback", "event": {"type": "x", "message": "m"}}',
            "application/json",
            "`body.event.message`",
        ),
        ("{not json", FORM, "the body is not JSON"),
        ("user_id=U1&command=%2Fjit&user%5Fid=U2", FORM, "repeats the field 'user_id'"),
        (
            urllib.parse.urlencode({"payload": json.dumps({**ACTION, "container": {}, "actions": [{"value": "v"}]})}),
            FORM,
            "an action has no action_id",
        ),
        (
            urllib.parse.urlencode({"payload": json.dumps({**ACTION, "container": {}, "channel": "C1"})}),
            FORM,
            "channel is not an object",
        ),
        ('{"type": "event_callback", "event": ' * 10 + '{"type": "x"}' + "}" * 10, "application/json", "too deeply"),
    ],
)
def test_a_malformed_body_is_refused_naming_what(body: str, content_type: str, says: str) -> None:
    """A signed body that is not shaped as Slack shapes it raises MalformedError saying what is wrong."""
    with pytest.raises(MalformedError, match=re.escape(says)):
        check_shape(body, content_type)


def test_bolt_reads_an_interaction_as_its_one_payload_field_however_encoded() -> None:
    """`p%61yload=` is a payload to the edge, so it is handed to Bolt as one (Bolt alone would not see it)."""
    payload = json.dumps({**ACTION, "container": {}})
    body = "p%61yload=" + urllib.parse.quote_plus(payload)
    assert check_shape(body, FORM) == "interaction"
    assert bolt_reads(body, FORM) == json.loads(payload)
