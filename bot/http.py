"""The HTTP edge of `/slack/events`: signature first, then shape; only well-formed requests reach Bolt."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

MAX_BODY = 256 * 1024  # Slack's payloads are a few kilobytes; anything near this is not from Slack
MAX_SKEW = 60 * 5

log = structlog.get_logger("jit_lb.web")


class MalformedError(ValueError):
    """The body is signed correctly but is not something Slack sends."""


def slack_events_handler(app: AsyncApp, secret: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """401 for a bad or stale signature, 400 for a malformed body, else Bolt's answer."""
    verifier = SignatureVerifier(secret)

    async def handle_slack_events(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if len(raw) > MAX_BODY:
            return _refused(request, 413, "body too large")
        if not _signed(
            verifier,
            raw,
            request.headers.get("X-Slack-Request-Timestamp", ""),
            request.headers.get("X-Slack-Signature", ""),
        ):
            return _refused(request, 401, "invalid signature")
        try:
            body = raw.decode("utf-8")
            check_shape(body, request.content_type)
        except (UnicodeDecodeError, MalformedError) as err:
            return _refused(request, 400, f"malformed request: {err}")
        bolt_request = AsyncBoltRequest(
            body=_for_bolt(body, request.content_type),
            query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]
        )
        return await to_aiohttp_response(await app.async_dispatch(bolt_request))

    return handle_slack_events


def _refused(request: web.Request, status: int, error: str) -> web.Response:
    """Answer a request that never reaches Bolt, and log it (the web process keeps no access log)."""
    log.warning("slack request refused", status=status, error=error, remote=request.remote, path=request.path)
    return web.json_response({"error": error}, status=status)


def _signed(verifier: SignatureVerifier, raw: bytes, timestamp: str, signature: str) -> bool:
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_SKEW:
        return False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return verifier.is_valid(body=text, timestamp=timestamp, signature=signature)


def check_shape(body: str, content_type: str) -> None:
    """Raise MalformedError unless the body is a slash command, a block action, or an event, as Slack sends them."""
    if content_type == "application/json":
        _json_object(body)
        return
    form = _raw_form(body)
    if "payload" in form:
        payload = _json_object(urllib.parse.unquote_plus(form["payload"]))
        if not isinstance(payload.get("type"), str):
            raise MalformedError("the payload has no type")
        if payload["type"] == "block_actions":
            _check_block_actions(payload)
        return
    if "command" in form:
        for field in ("command", "user_id"):
            if not form.get(field):
                raise MalformedError(f"the slash command has no {field}")
        return
    raise MalformedError("neither a slash command nor an interaction payload")


def _raw_form(body: str) -> dict[str, str]:
    """A form body's fields, still percent-encoded (a field is empty encoded iff empty decoded); first one wins.

    Only `payload` needs decoding here, so the rest (Bolt decodes them all anyway) is not decoded twice.
    """
    form: dict[str, str] = {}
    for pair in body.split("&"):
        key, _, value = pair.partition("=")
        form.setdefault(urllib.parse.unquote_plus(key) if "%" in key or "+" in key else key, value)
    return form


def _for_bolt(body: str, content_type: str) -> str:
    """The body as Bolt must see it to read it as we did.

    Bolt's parse_body takes any form body containing the letters `payload` for an interaction
    and, finding no `payload` field, reads it as empty: `/jit request lb-prod 30m bad payload`
    would go unanswered. Outside a `payload=` field, percent-encoding one of those letters hides
    them from that test and decodes to the same text. Only called on bodies check_shape passed,
    which Bolt does not verify again.
    """
    if content_type == "application/json" or body.startswith("{"):
        return body  # JSON: Bolt parses it as JSON
    if "payload" not in body or body.startswith("payload=") or "&payload=" in body:
        return body
    return body.replace("payload", "p%61yload")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise MalformedError("the payload is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedError("the payload is not a JSON object")
    return value


def _check_block_actions(payload: dict[str, Any]) -> None:
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str):
        raise MalformedError("the block action has no user id")
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not all(isinstance(a, dict) for a in actions):
        raise MalformedError("the block action has no actions")
    if not all(isinstance(a.get("action_id"), str) for a in actions):
        raise MalformedError("an action has no action_id")
    container = payload.get("container")
    if not isinstance(container, dict):
        raise MalformedError("the block action has no container")
