"""Requests to `/slack/events` shaped and signed as Slack sends them (spec/SLACK-SAMPLES.md)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from slack_sdk.signature import SignatureVerifier

TEAM = {"id": "T0001", "domain": "example"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: str

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def signed_headers(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """The two headers Slack adds, for `body` sent at `timestamp` (default: now)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def command_payload(user: str, text: str, channel: str = "C0DEVS", response_url: str = "") -> dict[str, str]:
    """A `/jit` slash command's fields as Slack sends them: the HTTP form, or a Socket Mode envelope's payload."""
    return {
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "team_id": TEAM["id"],
        "team_domain": TEAM["domain"],
        "channel_id": channel,
        "channel_name": "devs",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/jit",
        "text": text,
        "api_app_id": "A123456",
        "is_enterprise_install": "false",
        "response_url": response_url or "https://hooks.slack.com/commands/1234/5678",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
    }


def command_body(user: str, text: str, channel: str = "C0DEVS", response_url: str = "") -> str:
    """A `/jit` slash-command body, every field as Slack sends it."""
    return urllib.parse.urlencode(command_payload(user, text, channel, response_url))


def click_payload(
    user: str, action_id: str, value: str, channel: str, message_ts: str, response_url: str = ""
) -> dict[str, Any]:
    """A `block_actions` payload for a click on a message's button (the form's `payload`, or an envelope's)."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM["id"]},
        "api_app_id": "A123456",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "team": TEAM,
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": message_ts, "text": "...", "user": "U0BOT", "bot_id": "B0BOT"},
        "response_url": response_url or "https://hooks.slack.com/actions/T0001/1234/abcd",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "decision",
                "value": value,
                "type": "button",
                "text": {"type": "plain_text", "text": "Approve" if action_id == "jit_approve" else "Deny"},
                "action_ts": f"{time.time():.6f}",
            }
        ],
        "state": {"values": {}},
    }


def click_body(user: str, action_id: str, value: str, channel: str, message_ts: str, response_url: str = "") -> str:
    """A `block_actions` click as Slack posts it: one form field `payload` holding the JSON."""
    payload = click_payload(user, action_id, value, channel, message_ts, response_url)
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


class SlackClient:
    """Posts signed bodies to a running app, as Slack would."""

    def __init__(self, base_url: str, secret: str) -> None:
        self.url = base_url.rstrip("/") + "/slack/events"
        self.secret = secret

    def post(self, body: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Answer:
        request = urllib.request.Request(  # noqa: S310 - a loopback http URL we built
            self.url, data=body.encode(), headers=headers or signed_headers(self.secret, body), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return Answer(response.status, response.read().decode())
        except urllib.error.HTTPError as err:
            return Answer(err.code, err.read().decode())

    def command(self, user: str, text: str, channel: str = "C0DEVS") -> Answer:
        return self.post(command_body(user, text, channel))

    def click(self, user: str, action_id: str, value: str, channel: str, message_ts: str) -> Answer:
        return self.post(click_body(user, action_id, value, channel, message_ts))
