"""Requests to `/slack/events` shaped and signed as Slack sends them (spec/SLACK-SAMPLES.md)."""

from __future__ import annotations

import copy
import itertools
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.signature import SignatureVerifier

from devtools.slack_standin import APP_ID, SlackStandin, dm_channel

TEAM = {"id": "T0001", "domain": "example"}
VERIFICATION_TOKEN = "gIkuvaNzQIHg97ATvDxqgjtO"  # the deprecated token Slack still puts in every payload
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
_triggers = itertools.count(1)
_events = itertools.count(1)


@dataclass(frozen=True)
class Answer:
    status: int
    body: str

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def signed_headers(secret: str, body: str, timestamp: int | None = None, content_type: str = FORM) -> dict[str, str]:
    """The two headers Slack adds, for `body` sent at `timestamp` (default: now), and the body's type."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = str(SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body))
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature, "Content-Type": content_type}


def fresh_trigger_id() -> str:
    """A well-formed trigger_id never used before; the stand-in takes one it did not make as just made."""
    return f"{int(time.time())}.{next(_triggers)}.{uuid.uuid4().hex[:20]}"


def _user(user: str) -> dict[str, str]:
    return {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM["id"]}


def form_body(payload: Mapping[str, Any]) -> str:
    """An interactive payload as Slack posts it: one form field `payload` holding the JSON."""
    return urllib.parse.urlencode({"payload": json.dumps(payload)})


# --- slash commands and message buttons --------------------------------------------------------------


def command_payload(
    user: str, text: str, channel: str = "C0DEVS", response_url: str = "", trigger_id: str | None = None
) -> dict[str, str]:
    """A `/jit` slash command's fields as Slack sends them: the HTTP form, or a Socket Mode envelope's payload."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": TEAM["id"],
        "team_domain": TEAM["domain"],
        "channel_id": channel,
        "channel_name": "devs",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/jit",
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url or "https://hooks.slack.com/commands/1234/5678",
        "trigger_id": trigger_id or fresh_trigger_id(),
    }


def command_body(
    user: str, text: str, channel: str = "C0DEVS", response_url: str = "", trigger_id: str | None = None
) -> str:
    """A `/jit` slash-command body, every field as Slack sends it."""
    return urllib.parse.urlencode(command_payload(user, text, channel, response_url, trigger_id))


def click_payload(
    user: str,
    action_id: str,
    value: str,
    channel: str,
    message_ts: str,
    response_url: str = "",
    trigger_id: str | None = None,
) -> dict[str, Any]:
    """A `block_actions` payload for a click on a message's button (the form's `payload`, or an envelope's)."""
    return {
        "type": "block_actions",
        "user": _user(user),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": trigger_id or fresh_trigger_id(),
        "team": TEAM,
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": message_ts, "text": "...", "user": "U0BOT", "bot_id": "B0BOT"},
        "response_url": response_url or "https://hooks.slack.com/actions/T0001/1234/abcd",
        "actions": [_button_action(action_id, value, "decision")],
        "state": {"values": {}},
    }


def _button_action(action_id: str, value: str, block_id: str) -> dict[str, Any]:
    label = {"jit_approve": "Approve", "jit_deny": "Deny"}.get(action_id, action_id)
    return {
        "action_id": action_id,
        "block_id": block_id,
        "value": value,
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_ts": f"{time.time():.6f}",
    }


# --- the global shortcut, modals and the App Home ----------------------------------------------------


def shortcut_payload(user: str, callback_id: str = "jit_request", trigger_id: str | None = None) -> dict[str, Any]:
    """A global shortcut (the ⚡ menu) as Slack sends it."""
    return {
        "type": "shortcut",
        "callback_id": callback_id,
        "trigger_id": trigger_id or fresh_trigger_id(),
        "user": {"id": user, "username": user.lower(), "team_id": TEAM["id"]},
        "team": TEAM,
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "action_ts": f"{time.time():.6f}",
        "is_enterprise_install": False,
        "enterprise": None,
    }


def select(value: str, text: str | None = None) -> dict[str, Any]:
    """A static_select's state once the user picked the option `value` (labelled `text`)."""
    option = {"text": {"type": "plain_text", "text": text or value, "emoji": True}, "value": value}
    return {"type": "static_select", "selected_option": option}


def multi_select(*values: str) -> dict[str, Any]:
    """A multi_static_select's state once the user picked the options `values` (the request modal's targets)."""
    options = [{"text": {"type": "plain_text", "text": value, "emoji": True}, "value": value} for value in values]
    return {"type": "multi_static_select", "selected_options": options}


def text_input(value: str | None) -> dict[str, Any]:
    """A plain_text_input's state: what the user typed, or None when they left it empty."""
    return {"type": "plain_text_input", "value": value}


def inputs(**elements: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A view's `state.values` when each input's block_id and action_id are both the keyword's name.

    `inputs(target=select("lb-prod"), reason=text_input("OPS-1"))` is
    `{"target": {"target": {...}}, "reason": {"reason": {...}}}`.
    """
    return {name: {name: element} for name, element in elements.items()}


def _modal(callback_id: str = "jit_request", private_metadata: str = "") -> dict[str, Any]:
    """A modal as a view_submission carries it, for tests that do not take it from the stand-in."""
    return {
        "id": "V0000000000",
        "team_id": TEAM["id"],
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": private_metadata,
        "hash": f"{int(time.time())}.abcd1234",
        "app_id": APP_ID,
        "title": {"type": "plain_text", "text": "Request access"},
        "blocks": [],
        "state": {"values": {}},
    }


# The request modal's target is a multi_static_select; the one-target form's single static_select state is still
# what some clients send for it, and jit-lb takes both (docs/command-and-slack.md).
_ONE_TARGET = ("multi_static_select", "static_select")


def input_errors(view: Mapping[str, Any], values: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Why Slack could never send these state `values` for `view`: no such input, another kind, no such option.

    A view without blocks (one a test made up) checks nothing.
    """
    if not view.get("blocks"):
        return []
    elements = {
        (block.get("block_id"), block["element"].get("action_id")): block["element"]
        for block in view["blocks"]
        if isinstance(block, dict) and block.get("type") == "input" and isinstance(block.get("element"), dict)
    }
    errors = []
    for block_id, actions in values.items():
        for action_id, state in actions.items():
            element = elements.get((block_id, action_id))
            if element is None:
                errors.append(f"the view has no input {block_id}/{action_id}")
            elif element.get("type") != state.get("type") and (element.get("type"), state.get("type")) != _ONE_TARGET:
                errors.append(f"{block_id}/{action_id} is a {element.get('type')}, not a {state.get('type')}")
            else:
                options = {option.get("value") for option in element.get("options", [])}
                for group in element.get("option_groups", []):
                    options |= {option.get("value") for option in group.get("options", [])}
                chosen = [state["selected_option"]] if state.get("selected_option") is not None else []
                chosen += state.get("selected_options") or []
                errors += [
                    f"{block_id}/{action_id} offers no option {option.get('value')!r}"
                    for option in chosen
                    if option.get("value") not in options
                ]
    return errors


def view_submission_payload(
    user: str,
    values: Mapping[str, Mapping[str, Any]],
    *,
    view: Mapping[str, Any] | None = None,
    callback_id: str | None = None,
    private_metadata: str | None = None,
    trigger_id: str | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """A `view_submission` of `view` (as the stand-in recorded it, or a made-up modal) with these state values.

    `callback_id` and `private_metadata` replace the view's own (a tampered submission). With `check`, values
    the view's inputs could not produce (see input_errors) raise ValueError: pass check=False to forge them.
    """
    submitted = copy.deepcopy(dict(view)) if view is not None else _modal()
    if check and (errors := input_errors(submitted, values)):
        raise ValueError("; ".join(errors))
    if callback_id is not None:
        submitted["callback_id"] = callback_id
    if private_metadata is not None:
        submitted["private_metadata"] = private_metadata
    submitted["state"] = {"values": copy.deepcopy(dict(values))}
    return {
        "type": "view_submission",
        "team": TEAM,
        "user": _user(user),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id or fresh_trigger_id(),
        "view": submitted,
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def view_click_payload(
    user: str,
    action_id: str,
    value: str,
    view: Mapping[str, Any],
    *,
    block_id: str | None = None,
    trigger_id: str | None = None,
) -> dict[str, Any]:
    """A `block_actions` click on a button inside `view` (a modal, or an App Home view of type home).

    The block_id is the one holding a button with `action_id` in the view, unless given.
    """
    found = block_id or next(
        (
            str(block.get("block_id"))
            for block in view.get("blocks") or []
            for element in [*block.get("elements", []), block.get("accessory") or {}]
            if isinstance(element, dict) and element.get("action_id") == action_id
        ),
        "actions",
    )
    return {
        "type": "block_actions",
        "user": _user(user),
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {"type": "view", "view_id": view.get("id", "V0000000000")},
        "trigger_id": trigger_id or fresh_trigger_id(),
        "team": TEAM,
        "enterprise": None,
        "is_enterprise_install": False,
        "view": copy.deepcopy(dict(view)),
        "actions": [_button_action(action_id, value, found)],
        "state": copy.deepcopy(view.get("state") or {"values": {}}),
    }


def view_select_payload(user: str, action_id: str, value: str, view: Mapping[str, Any]) -> dict[str, Any]:
    """A `block_actions` change of a select inside `view` whose input block dispatches its actions: a static_select
    picking `value`, or a multi_static_select picking the options `value` joins with commas."""
    payload = view_click_payload(user, action_id, value, view)
    elements = [b.get("element") or {} for b in view.get("blocks", []) if isinstance(b, dict)]
    several = any(e.get("action_id") == action_id and e.get("type") == "multi_static_select" for e in elements)
    chosen = {"text": {"type": "plain_text", "text": value}, "value": value}
    payload["actions"] = [
        {
            "action_id": action_id,
            "block_id": payload["actions"][0]["block_id"],
            **(
                {"type": "multi_static_select", "selected_options": multi_select(*value.split(","))["selected_options"]}
                if several
                else {"type": "static_select", "selected_option": chosen}
            ),
            "action_ts": f"{time.time():.6f}",
        }
    ]
    return payload


def home_view(user: str) -> dict[str, Any]:
    """An App Home view as a click on it carries it, for tests that did not publish one through the stand-in."""
    return {
        "id": f"V0HOME{user}",
        "team_id": TEAM["id"],
        "type": "home",
        "blocks": [],
        "private_metadata": "",
        "callback_id": "",
        "state": {"values": {}},
        "hash": f"{int(time.time())}.abcd1234",
        "app_id": APP_ID,
    }


# --- the Events API ----------------------------------------------------------------------------------


def event_payload(event: Mapping[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """An Events API `event_callback` carrying `event`; a retry of it carries the same event_id."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": TEAM["id"],
        "api_app_id": APP_ID,
        "event": dict(event),
        "type": "event_callback",
        "event_id": event_id or f"Ev{next(_events):08d}{uuid.uuid4().hex[:4].upper()}",
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": TEAM["id"],
                "user_id": "U0BOT",
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": f"4-{uuid.uuid4().hex}",
    }


def app_home_opened_event(user: str, tab: str = "home", view: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`app_home_opened`: the user opened the app's Home (or Messages) tab; `view` is the Home last published."""
    event: dict[str, Any] = {
        "type": "app_home_opened",
        "user": user,
        "channel": dm_channel(user),
        "tab": tab,
        "event_ts": f"{time.time():.6f}",
    }
    if view is not None:
        event["view"] = copy.deepcopy(dict(view))
    return event


def url_verification_payload(challenge: str) -> dict[str, str]:
    """The first request to a new events URL: it is answered with the challenge."""
    return {"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}


class SlackClient:
    """Posts signed bodies to a running app, as Slack would.

    Given the stand-in, every trigger_id it sends is one the stand-in made (for that user, from that view), so
    views.open and views.push with it are checked as Slack checks them; otherwise each is a fresh one.
    """

    def __init__(self, base_url: str, secret: str, standin: SlackStandin | None = None) -> None:
        self.url = base_url.rstrip("/") + "/slack/events"
        self.secret = secret
        self.standin = standin

    def post(self, body: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Answer:
        request = urllib.request.Request(  # noqa: S310 - a loopback http URL we built
            self.url, data=body.encode(), headers=headers or signed_headers(self.secret, body), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return Answer(response.status, response.read().decode())
        except urllib.error.HTTPError as err:
            return Answer(err.code, err.read().decode())

    def trigger_id(self, user: str, view_id: str | None = None) -> str:
        if self.standin is None:
            return fresh_trigger_id()
        return self.standin.trigger_id(user, view_id=view_id)

    def command(self, user: str, text: str, channel: str = "C0DEVS", timeout: float = 10.0) -> Answer:
        """`timeout`: how long to wait for the answer (Slack itself gives up after 3 s)."""
        return self.post(command_body(user, text, channel, trigger_id=self.trigger_id(user)), timeout=timeout)

    def click(self, user: str, action_id: str, value: str, channel: str, message_ts: str) -> Answer:
        payload = click_payload(user, action_id, value, channel, message_ts, trigger_id=self.trigger_id(user))
        return self.post(form_body(payload))

    def shortcut(self, user: str, callback_id: str = "jit_request") -> Answer:
        return self.post(form_body(shortcut_payload(user, callback_id, self.trigger_id(user))))

    def submit(
        self,
        user: str,
        values: Mapping[str, Mapping[str, Any]],
        *,
        callback_id: str = "jit_request",
        view: Mapping[str, Any] | None = None,
        private_metadata: str | None = None,
        check: bool = True,
    ) -> Answer:
        """Submit `view`, or else the user's latest modal with `callback_id` that the stand-in opened, or else a
        made-up modal with that callback_id."""
        if view is None and self.standin is not None:
            opened = self.standin.views(user, callback_id)
            view = opened[-1] if opened else None
        payload = view_submission_payload(
            user,
            values,
            view=view or _modal(callback_id),
            private_metadata=private_metadata,
            trigger_id=self.trigger_id(user),
            check=check,
        )
        return self.post(form_body(payload))

    def view_click(self, user: str, action_id: str, value: str, view: Mapping[str, Any]) -> Answer:
        """A click on a button inside a modal (a view as the stand-in recorded it)."""
        trigger = self.trigger_id(user, view_id=view.get("id"))
        return self.post(form_body(view_click_payload(user, action_id, value, view, trigger_id=trigger)))

    def choose(self, user: str, action_id: str, value: str, view: Mapping[str, Any]) -> Answer:
        """Pick `value` in a select of a modal (as the stand-in recorded it) that dispatches its changes."""
        return self.post(form_body(view_select_payload(user, action_id, value, view)))

    def home_click(self, user: str, action_id: str, value: str, view: Mapping[str, Any] | None = None) -> Answer:
        """A click on a button in the user's App Home: `view`, or the one the stand-in last published for them."""
        view = view or (self.standin.home(user) if self.standin else None) or home_view(user)
        return self.view_click(user, action_id, value, view)

    def event(
        self, payload: Mapping[str, Any], *, retry_num: int | None = None, retry_reason: str | None = None
    ) -> Answer:
        """An Events API request; with `retry_num` it is Slack's retry of it (same event_id, two more headers)."""
        body = json.dumps(payload)
        headers = signed_headers(self.secret, body, content_type=JSON)
        if retry_num is not None:
            headers.update(
                {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason or "http_timeout"}
            )
        return self.post(body, headers)

    def app_home_opened(
        self, user: str, tab: str = "home", *, retry_num: int | None = None, retry_reason: str | None = None
    ) -> Answer:
        view = self.standin.home(user) if self.standin else None
        payload = event_payload(app_home_opened_event(user, tab, view))
        return self.event(payload, retry_num=retry_num, retry_reason=retry_reason)

    def url_verification(self, challenge: str) -> Answer:
        body = json.dumps(url_verification_payload(challenge))
        return self.post(body, signed_headers(self.secret, body, content_type=JSON))
