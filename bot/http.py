"""The HTTP edge of `/slack/events`: signature first, then shape; only well-formed requests reach Bolt.

Whatever arrives gets a 4xx naming what was wrong, or an ignored 200, never a 5xx: a body reaches Bolt
only when every field Bolt or a listener reads from it has the type Slack gives it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from jit_lb.access.errors import MalformedError, StoreUnavailableError
from slack_out.sentences import error_reply

MAX_BODY = 256 * 1024  # Slack's payloads are a few kilobytes; anything near this is not from Slack
MAX_SKEW = 60 * 5
# A signed request is remembered this long: past it, its timestamp is stale anyway (MAX_SKEW either side of now).
REMEMBER_SIGNED = 2 * MAX_SKEW + 60
REPLAYED = "This exact request (same time and signature) reached jit-lb before, so it was not done again."
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
# ASCII digits only (str.isdigit() takes "²", which int() refuses), and few of them (int() refuses 5,000 digits).
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
# How deep the objects Bolt reads ids from may nest (envelope, event, message, previous_message: 4 in Slack's).
_MAX_NESTING = 6

log = structlog.get_logger("jit_lb.web")


# True the first time a (timestamp, signature) is seen by any web process (RequestStore.first_signed_async).
FirstSigned = Callable[[str, str, int], Awaitable[bool]]


def slack_events_handler(
    app: AsyncApp, secret: str, first_signed: FirstSigned
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """401 for a bad or stale signature, 413 for a huge body, 400 for a malformed one, 200 for one we ignore
    or one already taken (a replay within the signature's window), else Bolt's answer."""
    key = secret.encode()

    async def handle_slack_events(request: web.Request) -> web.StreamResponse:
        admitted = await _admit(request, key)
        if isinstance(admitted, web.Response):
            return admitted
        body, kind = admitted
        if kind is None:
            log.info("slack request ignored", path=request.path)
            return web.Response(status=200)
        first = await _first(request, first_signed)
        if isinstance(first, StoreUnavailableError) and _is_url_verification(body, request.content_type):
            first = True  # Slack checking the URL: answered with its challenge, nothing done, harmless however often
        if isinstance(first, StoreUnavailableError):
            # Whether it was taken before is unknown: nothing is done (Redis may answer the listener's calls a moment
            # later, and a replay would then be taken), and waiting for Redis again would pass Slack's 3 s.
            log.warning("slack request not taken: the replay check could not reach redis", kind=kind)
            return _unavailable(app, first, kind, body, request.content_type)
        if first is False:
            log.warning("slack request replayed: answered without acting", kind=kind, remote=request.remote)
            if kind == "command":
                return web.json_response({"response_type": "ephemeral", "text": REPLAYED})
            return web.Response(status=200)
        return await to_aiohttp_response(await app.async_dispatch(_bolt_request(request, body)))

    return handle_slack_events


async def _first(request: web.Request, first_signed: FirstSigned) -> bool | StoreUnavailableError:
    """Whether this signed request is taken for the first time; the error with Redis out of reach (the check timed
    out or was refused: whether it was taken before is unknown, so it is not taken now)."""
    headers = request.headers
    try:
        return await first_signed(headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"], REMEMBER_SIGNED)
    except StoreUnavailableError as err:
        log.warning("the replay check could not reach redis", error=str(err))
        return err


def _is_url_verification(body: str, content_type: str) -> bool:
    return _is_json(body, content_type) and json.loads(body).get("type") == "url_verification"


def _unavailable(app: AsyncApp, err: StoreUnavailableError, kind: str, body: str, content_type: str) -> web.Response:
    """The answer to a request not taken for want of Redis, in error_reply's words: a command and a form are told
    jit-lb is unavailable (the form stays open, so it can be sent again); a clicker is told so after the answer
    (ephemeral under the card, or a DM from the App Home); anything else is answered 200 with nothing done."""
    if kind == "command":
        return web.json_response({"response_type": "ephemeral", "text": error_reply(err)})
    if kind == "interaction" and not _is_json(body, content_type):
        payload = json.loads(urllib.parse.unquote_plus(_raw_form(body)["payload"]))
        if payload.get("type") == "view_submission":
            values = ((payload.get("view") or {}).get("state") or {}).get("values") or {}
            if values:  # check_shape passed: an object of objects
                errors = {next(iter(values)): error_reply(err, bare=True)}
                return web.json_response({"response_action": "errors", "errors": errors})
        if payload.get("type") == "block_actions":
            task = asyncio.get_running_loop().create_task(_tell_clicker(app, payload, error_reply(err)))
            _TELLING.add(task)
            task.add_done_callback(_TELLING.discard)
    return web.Response(status=200)


_TELLING: set[asyncio.Task[None]] = set()  # the clickers being told, kept until told (the loop holds tasks weakly)


async def _tell_clicker(app: AsyncApp, payload: dict[str, Any], text: str) -> None:
    """Tell whoever clicked `text`: nothing was done (as decisions._tell answers a click); a failure is only logged."""
    user = str(payload["user"]["id"])
    container = payload.get("container") or {}
    channel = container.get("channel_id") or (payload.get("channel") or {}).get("id")
    try:
        if container.get("type") == "message" and channel:
            await app.client.chat_postEphemeral(channel=str(channel), user=user, text=text)
        else:
            await app.client.chat_postMessage(channel=user, text=text)
    except Exception as err:  # Slack refused or is out of reach: the click did nothing either way
        log.warning("could not tell a clicker jit-lb is unavailable", user=user, error=repr(err))


async def _admit(request: web.Request, key: bytes) -> tuple[str, str | None] | web.Response:
    """The body of a request Slack signed, and what it is (check_shape), or the refusal to answer it with."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _refused(request, 413, "body too large")
    if len(raw) > MAX_BODY:
        return _refused(request, 413, "body too large")
    headers = request.headers
    unsigned = signature_error(
        key, raw, headers.get("X-Slack-Request-Timestamp", ""), headers.get("X-Slack-Signature", ""), time.time()
    )
    if unsigned:
        return _refused(request, 401, unsigned)
    try:
        body = raw.decode("utf-8")
        return body, check_shape(body, request.content_type)
    except UnicodeDecodeError:
        return _refused(request, 400, "malformed request: the body is not UTF-8")
    except MalformedError as err:
        return _refused(request, 400, f"malformed request: {err}")


def _bolt_request(request: web.Request, body: str) -> AsyncBoltRequest:
    """The request as Bolt must see it to read it as the edge did (see _for_bolt)."""
    content_type = JSON if _is_json(body, request.content_type) else FORM
    # Bolt reads the content type again, from the last header of that name and case-sensitively: tell it ours.
    headers: dict[str, str | Sequence[str]] = {
        name: value for name, value in request.headers.items() if name.lower() != "content-type"
    }
    headers["content-type"] = content_type
    # Bolt logs a body's several response_urls on a context whose logger it sets only later, at dispatch (a KeyError,
    # a 500): the context starts with a logger of Bolt's own, which dispatch then replaces with the app's.
    context = {"logger": logging.getLogger("slack_bolt.AsyncApp")}
    return AsyncBoltRequest(
        body=_for_bolt(body, content_type), query=request.query_string, headers=headers, context=context
    )


def _refused(request: web.Request, status: int, error: str) -> web.Response:
    """Answer a request that never reaches Bolt, and log it (the web process keeps no access log)."""
    log.warning("slack request refused", status=status, error=error, remote=request.remote, path=request.path)
    return web.json_response({"error": error}, status=status)


def signature_error(key: bytes, raw: bytes, timestamp: str, signature: str, now: float) -> str | None:
    """Why the request is not signed by Slack within the last five minutes, or None when it is.

    The HMAC is over the raw bytes, as Slack computes it: a signed body that is not UTF-8 is malformed, not forged.
    """
    if not _TIMESTAMP.fullmatch(timestamp):
        return "missing or malformed X-Slack-Request-Timestamp"
    if abs(now - int(timestamp)) > MAX_SKEW:
        return "stale X-Slack-Request-Timestamp"
    if not _SIGNATURE.fullmatch(signature):
        return "missing or malformed X-Slack-Signature"
    expected = "v0=" + hmac.new(key, b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return None if hmac.compare_digest(expected, signature) else "invalid signature"


def check_shape(body: str, content_type: str) -> str | None:
    """What the body is ("command", "interaction", "event"), None for one Slack sends that we ignore;
    raise MalformedError unless it is shaped as Slack shapes it.
    """
    if _is_json(body, content_type):
        envelope = _json_object(body, "the body")
        kind = _typed(envelope, "the body")
        if kind not in _ENVELOPES:
            return None
        _check_routing(envelope, "body")
        _ENVELOPES[kind](envelope)
        return "event"
    form = _raw_form(body)
    if "payload" in form:
        payload = _json_object(urllib.parse.unquote_plus(form["payload"]), "the payload")
        kind = _typed(payload, "the payload")
        if kind not in _PAYLOADS:
            return None
        _check_routing(payload, "payload")
        _PAYLOADS[kind](payload)
        return "interaction"
    if "command" in form:
        for field in ("command", "user_id"):
            if not form.get(field):
                raise MalformedError(f"the slash command has no {field}")
        return "command"
    if form.get("ssl_check") == "1":
        return None  # Slack's certificate check of a command URL: any 200 will do
    raise MalformedError("neither a slash command nor an interaction payload")


def _is_json(body: str, content_type: str) -> bool:
    """Bolt's own rule (slack_bolt.request.internals.parse_body), so that it reads the body as we did."""
    return content_type == JSON or body.startswith("{")


def _raw_form(body: str) -> dict[str, str]:
    """A form body's fields, still percent-encoded (a field is empty encoded iff empty decoded).

    Only `payload` needs decoding here, so the rest (Bolt decodes them all anyway) is not decoded twice.
    A field given twice is refused: Bolt keeps the last, and we would have checked the first.
    """
    form: dict[str, str] = {}
    for pair in body.split("&"):
        if not pair:
            continue  # as parse_qsl does
        key, _, value = pair.partition("=")
        name = urllib.parse.unquote_plus(key) if "%" in key or "+" in key else key
        if name in form:
            raise MalformedError(f"the form repeats the field {name[:40]!r}")
        form[name] = value
    return form


def _for_bolt(body: str, content_type: str) -> str:
    """The body as Bolt must see it to read it as we did.

    Bolt's parse_body takes any form body containing the letters `payload` for an interaction
    and, finding no `payload` field, reads it as empty: `/jit request lb-prod 30m bad payload`
    would go unanswered. Outside a `payload=` field, percent-encoding one of those letters hides
    them from that test and decodes to the same text. An interaction is handed over as its one
    `payload` field, however its name was encoded. Only called on bodies check_shape passed,
    which Bolt does not verify again.
    """
    if _is_json(body, content_type):
        return body  # JSON: Bolt parses it as JSON
    if "payload" not in body:
        return body
    form = _raw_form(body)
    if "payload" in form:
        return "payload=" + form["payload"]
    return body.replace("payload", "p%61yload")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise MalformedError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedError(f"{what} is not a JSON object")
    return value


def _typed(value: dict[str, Any], what: str) -> str:
    kind = value.get("type")
    if not isinstance(kind, str) or not kind:
        raise MalformedError(f"{what} has no type")
    return kind


# --- the fields Bolt reads from every body (slack_bolt.request.internals, its matchers and middleware) --------
# Each has the type Slack gives it, or is absent; Bolt fails on any other. Objects are checked in turn.

_ID_FIELDS = ("user", "team", "enterprise", "channel")  # an id, or an object with a string `id`; null allowed
_OBJECT_FIELDS = (
    "event",
    "message",
    "previous_message",
    "item",
    "assistant_thread",
    "function_data",
    "view",
    "container",
    "workflow_step",
)
_LIST_FIELDS = ("authorizations", "response_urls", "actions")  # lists of objects
_STRING_FIELDS = (
    "id",
    "type",
    "subtype",
    "user_id",
    "team_id",
    "enterprise_id",
    "channel_id",
    "channel_type",
    "user_team",
    "bot_id",
    "thread_ts",
    "message_ts",
    "ts",
    "tab",
    "callback_id",
    "action_id",
    "block_id",
    "value",
    "trigger_id",
    "response_url",
    "private_metadata",
    "app_installed_team_id",
    "function_execution_id",
    "bot_access_token",
)


def _check_routing(value: dict[str, Any], path: str, depth: int = 0) -> None:
    """Raise MalformedError naming the first field (as `payload.container.channel_id`) of the wrong type."""
    if depth > _MAX_NESTING:
        raise MalformedError(f"`{path}` nests too deeply")
    for field in _STRING_FIELDS:
        if field in value and not isinstance(value[field], str | None):
            raise MalformedError(f"`{path}.{field}` is not a string")
    for child, where in _children(value, path):
        _check_routing(child, where, depth + 1)
    if "view" in value:
        _check_view(value["view"], f"{path}.view")


def _children(value: dict[str, Any], path: str) -> list[tuple[dict[str, Any], str]]:
    """The objects in `value` that Bolt reads on from, with their paths, once each is of the type Slack gives it."""
    children: list[tuple[dict[str, Any], str]] = []
    for field in _ID_FIELDS:
        found = value.get(field)
        if isinstance(found, dict):
            children.append((found, f"{path}.{field}"))
        elif not isinstance(found, str | None):
            raise MalformedError(f"`{path}.{field}` is neither an id nor an object")
    for field in _OBJECT_FIELDS:
        if field in value:
            if not isinstance(value[field], dict):
                raise MalformedError(f"`{path}.{field}` is not an object")
            children.append((value[field], f"{path}.{field}"))
    for field in _LIST_FIELDS:
        if field in value:
            items = value[field]
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise MalformedError(f"`{path}.{field}` is not a list of objects")
            children += [(item, f"{path}.{field}[{index}]") for index, item in enumerate(items)]
    return children


def _check_view(view: dict[str, Any], path: str) -> None:
    """A view's submitted state as listeners read it: values[block_id][action_id] is an object."""
    if "state" not in view:
        return
    state = view["state"]
    values = state.get("values") if isinstance(state, dict) else None
    if not isinstance(values, dict) or not all(
        isinstance(block, dict) and all(isinstance(element, dict) for element in block.values())
        for block in values.values()
    ):
        raise MalformedError(f"`{path}.state.values` is not an object of objects")
    for block in values.values():
        for element in block.values():
            if not isinstance(element.get("value"), str | None) or not isinstance(element.get("type"), str | None):
                raise MalformedError(f"a value in `{path}.state` is not a string")
            option = element.get("selected_option")
            if option is not None and not (isinstance(option, dict) and isinstance(option.get("value"), str)):
                raise MalformedError(f"a selected option in `{path}.state` has no value")
            several = element.get("selected_options")
            if several is not None and not (
                isinstance(several, list)
                and all(isinstance(item, dict) and isinstance(item.get("value"), str) for item in several)
            ):
                raise MalformedError(f"the selected options in `{path}.state` are not a list of options with values")


def _user_id(payload: dict[str, Any], what: str) -> None:
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        raise MalformedError(f"{what} has no user id")


def _check_block_actions(payload: dict[str, Any]) -> None:
    _user_id(payload, "the block action")
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions:
        raise MalformedError("the block action has no actions")
    if not all(isinstance(action.get("action_id"), str) for action in actions):
        raise MalformedError("an action has no action_id")
    if not isinstance(payload.get("container"), dict):
        raise MalformedError("the block action has no container")
    if not isinstance(payload.get("channel"), dict | None):
        raise MalformedError("the block action's channel is not an object")


def _check_view_payload(payload: dict[str, Any]) -> None:
    _user_id(payload, "the view payload")
    view = payload.get("view")
    if not isinstance(view, dict) or not isinstance(view.get("callback_id"), str):
        raise MalformedError("the view payload has no view with a callback_id")
    if not isinstance(view.get("type"), str):
        raise MalformedError("the view has no type")


def _check_shortcut(payload: dict[str, Any]) -> None:
    _user_id(payload, "the shortcut")
    if not isinstance(payload.get("callback_id"), str):
        raise MalformedError("the shortcut has no callback_id")


def _check_block_suggestion(payload: dict[str, Any]) -> None:
    _user_id(payload, "the suggestion")
    if not isinstance(payload.get("action_id"), str):
        raise MalformedError("the suggestion has no action_id")


def _check_event_callback(envelope: dict[str, Any]) -> None:
    event = envelope.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise MalformedError("the event callback has no event with a type")


def _check_url_verification(envelope: dict[str, Any]) -> None:
    if not isinstance(envelope.get("challenge"), str) or not envelope["challenge"]:
        raise MalformedError("the url verification has no challenge")


# What reaches Bolt, by type; Slack's other types (app_rate_limited, dialogs, ...) are answered 200 and ignored.
_PAYLOADS: dict[str, Callable[[dict[str, Any]], None]] = {
    "block_actions": _check_block_actions,
    "view_submission": _check_view_payload,
    "view_closed": _check_view_payload,
    "shortcut": _check_shortcut,
    "message_action": _check_shortcut,
    "block_suggestion": _check_block_suggestion,
}
_ENVELOPES: dict[str, Callable[[dict[str, Any]], None]] = {
    "event_callback": _check_event_callback,
    "url_verification": _check_url_verification,
}
