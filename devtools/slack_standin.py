"""A loopback stand-in for Slack (Web API, response_url, Socket Mode) that records every call for tests and demos."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import math
import mimetypes
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import BodyPartReader, WSCloseCode, WSMsgType, web
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

from devtools.loopback import LoopbackServer, serve_standin

TEST_TOKEN = "xoxb-test-token"
APP_ID = "A123456"
# Web API methods that take the app-level token (xapp-…) rather than the bot token.
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
T = TypeVar("T")
Handler = Callable[[dict[str, Any]], dict[str, Any]]
Message = dict[str, Any]
# Methods whose `blocks` (or `view`) Slack checks before it does anything else.
BLOCK_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral", "chat.scheduleMessage"})
VIEW_METHODS = frozenset({"views.open", "views.update", "views.push", "views.publish"})
TEAM_ID = "T0001"
TRIGGER_TTL = 3.0  # seconds within which Slack lets a trigger_id open a view, once
MAX_VIEW_BYTES = 250_000  # past this views.* answer view_too_large
HOLD_TIMEOUT = 30.0  # seconds a held call waits for its release at most
MAX_VIEW_STACK = 3  # views a modal's stack holds (views.push answers push_limit_reached past it)
TRIGGER_FORMAT = re.compile(r"[0-9]+\.[0-9]+\.[0-9a-f]+")  # as Slack's invalid_trigger_id describes it
# files.completeUploadExternal's channel_id: a conversation id, never a user id. Slack also wants 8+ characters
# after the letter; the stand-in's own DM ids (D0U0DEV1) are shorter, so only the letter is checked.
SHAREABLE_CHANNEL = re.compile(r"[CGDZ][A-Z0-9]+")


@dataclass(frozen=True)
class Call:
    """One request the stand-in answered: the Web API method (or "response_url"), its fields, and the answer."""

    method: str
    args: dict[str, Any]
    at: float
    response: dict[str, Any] = field(default_factory=dict)


def dm_channel(channel: str) -> str:
    """The DM channel id Slack would answer for a user id; other channel ids unchanged."""
    return f"D0{channel}" if channel[:1] in {"U", "W"} else channel


def decoded(value: Any) -> Any:
    """Form fields such as `blocks` arrive as JSON strings; tests want them as lists and dicts."""
    if isinstance(value, str) and value[:1] in {"[", "{"}:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# --- Block Kit, checked as Slack checks it ----------------------------------------------------------
# Limits from Slack's Block Kit reference (api.slack.com/reference/block-kit). Slack refuses
# the whole message (`invalid_blocks`) or view (`invalid_arguments`) when any one is broken.

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_TEXT = 40_000  # past this chat.postMessage answers msg_too_long
_TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})
# Each block type's properties; Slack refuses any other ("invalid additional property").
_BLOCK_PROPERTIES: dict[str, frozenset[str]] = {
    "section": frozenset({"type", "block_id", "text", "fields", "accessory", "expand"}),
    "header": frozenset({"type", "block_id", "text"}),
    "context": frozenset({"type", "block_id", "elements"}),
    "actions": frozenset({"type", "block_id", "elements"}),
    "divider": frozenset({"type", "block_id"}),
    "image": frozenset({"type", "block_id", "image_url", "slack_file", "alt_text", "title"}),
    "input": frozenset({"type", "block_id", "label", "element", "dispatch_action", "hint", "optional"}),
    "rich_text": frozenset({"type", "block_id", "elements"}),
    "markdown": frozenset({"type", "block_id", "text"}),
    "file": frozenset({"type", "block_id", "external_id", "source"}),
    "video": frozenset(
        {
            "type",
            "block_id",
            "alt_text",
            "author_name",
            "description",
            "provider_icon_url",
            "provider_name",
            "title",
            "title_url",
            "thumbnail_url",
            "video_url",
        }
    ),
}
_BUTTON_PROPERTIES = frozenset({"type", "text", "action_id", "url", "value", "style", "confirm", "accessibility_label"})


def block_kit_errors(blocks: Any, *, limit: int = MAX_MESSAGE_BLOCKS, where: str = "/blocks") -> list[str]:
    """Why Slack would refuse these message blocks (`[json-pointer:…]` as Slack says it); [] when it would not.

    Explicit limits first, then slack_sdk's own models, which know each element's finer rules.
    """
    if not isinstance(blocks, list):
        return [f"must be an array of blocks [json-pointer:{where}]"]
    errors: list[str] = []
    if len(blocks) > limit:
        errors.append(f"no more than {limit} items allowed [json-pointer:{where}]")
    seen: set[str] = set()
    for index, block in enumerate(blocks):
        at = f"{where}/{index}"
        if not isinstance(block, dict):
            errors.append(f"must be an object [json-pointer:{at}]")
            continue
        found = _block_errors(block, at)
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in seen:
                found.append(f"duplicate block_id {block_id!r} [json-pointer:{at}/block_id]")
            seen.add(block_id)
        errors += found or _sdk_errors(block, at)
    return errors


def view_errors(view: Any) -> list[str]:
    """Why Slack would refuse this view (views.open, views.update, views.push, views.publish); [] when it would not."""
    if not isinstance(view, dict):
        return ["must be an object [json-pointer:/view]"]
    errors: list[str] = []
    kind = view.get("type")
    if kind not in {"modal", "home"}:
        errors.append("must be one of modal, home [json-pointer:/view/type]")
    for name in ("title", "submit", "close"):
        if name in view or (name == "title" and kind == "modal"):
            errors += _text_errors(view.get(name), f"/view/{name}", 24, plain_only=True)
    for name, most in (("private_metadata", 3000), ("callback_id", 255), ("external_id", 255)):
        if name in view and not (isinstance(view[name], str) and len(view[name]) <= most):
            errors.append(f"must be a string of at most {most} characters [json-pointer:/view/{name}]")
    blocks = view.get("blocks")
    if kind == "modal" and "submit" not in view and isinstance(blocks, list):
        inputs = [at for at, block in enumerate(blocks) if isinstance(block, dict) and block.get("type") == "input"]
        if inputs:
            where = f"/view/blocks/{inputs[0]}/input"
            errors.append(f"must define `submit` to use an `input` block in modals [json-pointer:{where}]")
    return errors + block_kit_errors(blocks, limit=MAX_VIEW_BLOCKS, where="/view/blocks")


def _block_errors(block: dict[str, Any], at: str) -> list[str]:
    kind = block.get("type")
    properties = _BLOCK_PROPERTIES.get(kind) if isinstance(kind, str) else None
    if properties is None:
        return [f"unsupported type {kind!r} [json-pointer:{at}/type]"]
    errors = [f"invalid additional property: {key} [json-pointer:{at}]" for key in block if key not in properties]
    block_id = block.get("block_id")
    if "block_id" in block and not (isinstance(block_id, str) and 0 < len(block_id) <= 255):
        errors.append(f"must be a string of 1 to 255 characters [json-pointer:{at}/block_id]")
    check = _BLOCK_CHECKS.get(str(kind))
    return errors + (check(block, at) if check else [])


def _section_errors(block: dict[str, Any], at: str) -> list[str]:
    errors = [] if "text" in block or "fields" in block else [f"must provide text or fields [json-pointer:{at}]"]
    if "text" in block:
        errors += _text_errors(block["text"], f"{at}/text", 3000)
    if "fields" in block:
        errors += _items_errors(
            block["fields"], f"{at}/fields", 10, lambda item, where: _text_errors(item, where, 2000)
        )
    if "accessory" in block:
        errors += _element_errors(block["accessory"], f"{at}/accessory")
    return errors


def _header_errors(block: dict[str, Any], at: str) -> list[str]:
    return _text_errors(block.get("text"), f"{at}/text", 150, plain_only=True)


def _context_element_errors(element: Any, at: str) -> list[str]:
    if isinstance(element, dict) and element.get("type") == "image":
        return []
    return _text_errors(element, at, 3000)


def _context_errors(block: dict[str, Any], at: str) -> list[str]:
    return _items_errors(block.get("elements"), f"{at}/elements", 10, _context_element_errors)


def _actions_errors(block: dict[str, Any], at: str) -> list[str]:
    return _items_errors(block.get("elements"), f"{at}/elements", 25, _element_errors)


def _input_errors(block: dict[str, Any], at: str) -> list[str]:
    errors = _text_errors(block.get("label"), f"{at}/label", 2000, plain_only=True)
    if "hint" in block:
        errors += _text_errors(block["hint"], f"{at}/hint", 2000, plain_only=True)
    return errors + _element_errors(block.get("element"), f"{at}/element")


def _markdown_errors(block: dict[str, Any], at: str) -> list[str]:
    text = block.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > 12000:
        return [f"must be a string of 1 to 12000 characters [json-pointer:{at}/text]"]
    return []


def _items_errors(items: Any, at: str, most: int, check: Callable[[Any, str], list[str]]) -> list[str]:
    """A list of 1 to `most` items, each checked by `check`."""
    if not isinstance(items, list) or not 0 < len(items) <= most:
        return [f"must have 1 to {most} items [json-pointer:{at}]"]
    return [error for number, item in enumerate(items) for error in check(item, f"{at}/{number}")]


_BLOCK_CHECKS: dict[str, Callable[[dict[str, Any], str], list[str]]] = {
    "section": _section_errors,
    "header": _header_errors,
    "context": _context_errors,
    "actions": _actions_errors,
    "input": _input_errors,
    "markdown": _markdown_errors,
}


def _text_errors(value: Any, at: str, most: int, *, plain_only: bool = False) -> list[str]:
    """A text object: plain_text (or mrkdwn where allowed) with 1 to `most` characters, not only whitespace."""
    allowed = {"plain_text"} if plain_only else _TEXT_TYPES
    if not isinstance(value, dict) or value.get("type") not in allowed:
        return [f"must be a {' or '.join(sorted(allowed))} text object [json-pointer:{at}]"]
    extra = {"emoji"} if value["type"] == "plain_text" else {"verbatim"}
    errors = [
        f"invalid additional property: {key} [json-pointer:{at}]"
        for key in value
        if key not in {"type", "text"} | extra
    ]
    text = value.get("text")
    if not isinstance(text, str):
        errors.append(f"must be a string [json-pointer:{at}/text]")
    elif not text.strip():
        errors.append(f"must be more than 0 characters [json-pointer:{at}/text]")
    elif len(text) > most:
        errors.append(f"must be less than {most + 1} characters [json-pointer:{at}/text]")
    return errors


def _element_errors(element: Any, at: str) -> list[str]:
    """An interactive element; buttons fully, others by the limits they share (ids, placeholder, options)."""
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"must be an element object [json-pointer:{at}]"]
    errors: list[str] = []
    action_id = element.get("action_id")
    if "action_id" in element and not (isinstance(action_id, str) and 0 < len(action_id) <= 255):
        errors.append(f"must be a string of 1 to 255 characters [json-pointer:{at}/action_id]")
    if element["type"] == "button":
        errors += [
            f"invalid additional property: {key} [json-pointer:{at}]"
            for key in element
            if key not in _BUTTON_PROPERTIES
        ]
        errors += _text_errors(element.get("text"), f"{at}/text", 75, plain_only=True)
        for name, most in (("value", 2000), ("url", 3000)):
            if name in element and not (isinstance(element[name], str) and len(element[name]) <= most):
                errors.append(f"must be a string of at most {most} characters [json-pointer:{at}/{name}]")
        if "style" in element and element["style"] not in {"primary", "danger"}:
            errors.append(f"must be one of primary, danger [json-pointer:{at}/style]")
    if "placeholder" in element:
        errors += _text_errors(element["placeholder"], f"{at}/placeholder", 150, plain_only=True)
    for name in ("options", "initial_options"):
        options = element.get(name, [])
        if not isinstance(options, list) or len(options) > 100:
            errors.append(f"must have at most 100 items [json-pointer:{at}/{name}]")
            continue
        for number, option in enumerate(options):
            errors += _option_errors(option, f"{at}/{name}/{number}")
    return errors


def _option_errors(option: Any, at: str) -> list[str]:
    if not isinstance(option, dict):
        return [f"must be an option object [json-pointer:{at}]"]
    errors = _text_errors(option.get("text"), f"{at}/text", 75)
    value = option.get("value")
    if not (isinstance(value, str) and 0 < len(value) <= 150):
        errors.append(f"must be a string of 1 to 150 characters [json-pointer:{at}/value]")
    return errors


def _sdk_errors(block: dict[str, Any], at: str) -> list[str]:
    """What slack_sdk's Block Kit models refuse in a block our checks passed."""
    try:
        parsed = Block.parse(block)
        if parsed is None:
            return [f"unsupported type {block.get('type')!r} [json-pointer:{at}/type]"]
        parsed.validate_json()
    except SlackObjectFormationError as err:
        return [f"{err} [json-pointer:{at}]"]
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        return [f"not well-formed ({err}) [json-pointer:{at}]"]
    return []


def refusal(method: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """Slack's answer to a call whose blocks, view or text it refuses before doing anything; None when it takes it."""
    if method in BLOCK_METHODS:
        if isinstance(args.get("blocks"), str):
            return {"ok": False, "error": "invalid_blocks_format"}
        errors = block_kit_errors(args["blocks"]) if "blocks" in args else []
        if errors:
            messages = [f"[ERROR] {error}" for error in errors]
            return {
                "ok": False,
                "error": "invalid_blocks",
                "errors": errors,
                "response_metadata": {"messages": messages},
            }
        if len(str(args.get("text", ""))) > MAX_MESSAGE_TEXT:
            return {"ok": False, "error": "msg_too_long"}
    if method in VIEW_METHODS and "view" in args:
        errors = view_errors(args["view"])
        if errors:
            return invalid_arguments(*errors)
        if len(json.dumps(args["view"])) > MAX_VIEW_BYTES:
            return {"ok": False, "error": "view_too_large"}
    return None


def invalid_arguments(*errors: str) -> dict[str, Any]:
    """Slack's answer to arguments (a view, a field) that break its schema: each reason as `[ERROR] …`."""
    return {
        "ok": False,
        "error": "invalid_arguments",
        "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]},
    }


def _with_ids(blocks: list[Any]) -> list[Any]:
    """A copy of a view's blocks as Slack keeps them: every block, and every interactive element, has its id.

    Slack makes up the ids the app left out, so a view_submission's state is keyed by ids the app never chose.
    """
    kept = copy.deepcopy(blocks)
    for block in kept:
        if not isinstance(block, dict):
            continue
        block.setdefault("block_id", uuid.uuid4().hex[:5])
        elements = [block.get("element"), block.get("accessory")]
        elements += block.get("elements", []) if block.get("type") == "actions" else []
        for element in elements:
            if isinstance(element, dict) and block.get("type") in {"input", "section", "actions"}:
                element.setdefault("action_id", uuid.uuid4().hex[:5])
    return kept


@dataclass(frozen=True)
class Held:
    """A call the stand-in holds before it answers: `arrived` is set when it comes, and it is answered (and takes
    effect) once `release()` is called, as a slow network or a slow Slack would delay it."""

    arrived: threading.Event
    released: threading.Event

    def release(self) -> None:
        self.released.set()


@dataclass
class _Trigger:
    """A trigger_id the stand-in has seen: when it was made, for whom, from which view, and whether it opened one."""

    made_at: float  # time.monotonic()
    user: str | None = None
    view_id: str | None = None
    used: bool = False


@dataclass(frozen=True)
class UploadedFile:
    """A file sent through files.getUploadURLExternal and its upload URL, and where it was shared."""

    id: str
    filename: str
    length: int  # as declared to files.getUploadURLExternal
    content: bytes | None = None  # None until the bytes are POSTed to the upload URL
    title: str = ""
    alt_txt: str | None = None
    shares: tuple[tuple[str, str], ...] = ()  # (channel, ts) of each message sharing it
    initial_comment: str | None = None
    thread_ts: str | None = None
    completed: bool = False  # files.completeUploadExternal took it
    deleted: bool = False  # files.delete took it: Slack keeps neither its bytes nor its title

    @property
    def channels(self) -> list[str]:
        return [channel for channel, _ in self.shares]


def _file_object(upload: UploadedFile) -> dict[str, Any]:
    """A file as files.completeUploadExternal answers it. Slack shares it after answering, so no channels yet."""
    extension = upload.filename.rsplit(".", 1)[-1].lower() if "." in upload.filename else ""
    private = f"https://files.slack.com/files-pri/{TEAM_ID}-{upload.id}/{upload.filename}"
    return {
        "id": upload.id,
        "created": int(time.time()),
        "name": upload.filename,
        "title": upload.title,
        "mimetype": mimetypes.guess_type(upload.filename)[0] or "",
        "filetype": extension,
        "user": "U0BOT",
        "size": len(upload.content or b""),
        "mode": "hosted",
        "is_external": False,
        "is_public": False,
        "url_private": private,
        "url_private_download": private.replace(f"/{upload.filename}", f"/download/{upload.filename}"),
        "channels": [],
        "groups": [],
        "ims": [],
        "shares": {},
        **({"alt_txt": upload.alt_txt} if upload.alt_txt else {}),
    }


class SlackStandin(LoopbackServer):
    """An aiohttp server on 127.0.0.1 in its own thread and event loop, answering like Slack."""

    name = "Slack stand-in"

    def __init__(
        self,
        token: str = TEST_TOKEN,
        *,
        strict_token: bool = False,
        port: int | None = None,
        rate_limit_per_channel: float | None = None,
    ) -> None:
        self.token = token
        self.strict_token = strict_token
        super().__init__(port)
        self.rate_limit_per_channel = rate_limit_per_channel
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._messages: dict[tuple[str, str], dict[str, Any]] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._emails: dict[str, str] = {}  # user -> profile.email, as users.info shows it with users:read.email
        self._faults: dict[str, list[tuple[int, int]]] = {}
        self._limited: dict[str, float] = {}  # method -> until when (monotonic) every call of it answers 429
        self._holds: dict[str, list[Held]] = {}
        self._last_post: dict[str, float] = {}
        self._last_ts = 0
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._envelopes_sent = 0
        self._triggers: dict[str, _Trigger] = {}
        self._views: dict[str, dict[str, Any]] = {}  # view id -> the view as it stands now
        self._view_users: dict[str, str | None] = {}  # view id -> whom it was opened for, when known
        self._homes: dict[str, str] = {}  # user -> the id of their App Home view
        self._files: dict[str, UploadedFile] = {}
        self._upload_keys: dict[str, str] = {}  # the secret part of an upload URL -> file id
        self._counts = {"trigger": 0, "view": 0, "file": 0}
        self._handlers: dict[str, Handler] = {
            "apps.connections.open": self._connections_open,
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.delete": self._delete,
            "chat.getPermalink": self._permalink,
            "conversations.open": self._open,
            "users.info": self._user_info,
            "usergroups.users.list": self._usergroup_users,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "files.getUploadURLExternal": self._upload_url,
            "files.completeUploadExternal": self._complete_upload,
            "files.delete": self._delete_file,
        }

    # --- life cycle ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def response_url_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/response/"

    @property
    def socket_url(self) -> str:
        """Where Socket Mode clients connect; apps.connections.open adds a ticket, as Slack does."""
        return f"ws://127.0.0.1:{self.port}/socket-mode"

    @property
    def upload_url_base(self) -> str:
        """Where files.getUploadURLExternal's upload URLs point: the stand-in itself, as files.slack.com."""
        return f"http://127.0.0.1:{self.port}/upload/v1/"

    def response_url(self, name: str) -> str:
        """The response_url to put into a payload; posts to it are recorded under `name`."""
        return self.response_url_base + name

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{name}", self._response)
        app.router.add_post("/upload/v1/{key}", self._upload)
        app.router.add_get("/socket-mode", self._socket)
        app.on_shutdown.append(self._close_sockets)

    # --- configuration and faults -------------------------------------------------------------

    def set_usergroup(self, group_id: str, users: list[str]) -> None:
        with self._lock:
            self._usergroups[group_id] = list(users)

    def set_email(self, user: str, email: str) -> None:
        """The e-mail users.info shows in the person's profile (Slack shows it to apps with users:read.email)."""
        with self._lock:
            self._emails[user] = email

    def fail_next(self, method: str, times: int = 1, status: int = 429, retry_after: int = 1) -> None:
        """The next `times` calls of `method` answer HTTP `status` (429 with Retry-After, or a 5xx)."""
        with self._lock:
            self._faults.setdefault(method, []).extend([(status, retry_after)] * times)

    def rate_limit(self, method: str, seconds: float) -> None:
        """Every call of `method` for the next `seconds` answers as Slack does past a tier's limit: HTTP 429,
        `{"ok": false, "error": "ratelimited"}` and a Retry-After header of the whole seconds left."""
        with self._lock:
            self._limited[method] = time.monotonic() + seconds

    def rate_limited(self, method: str) -> bool:
        """Whether `method` is rate-limited now (rate_limit)."""
        with self._lock:
            return self._limited.get(method, 0.0) > time.monotonic()

    def hold_next(self, method: str) -> Held:
        """Hold the next call of `method` unanswered until the test releases it (it takes effect then)."""
        held = Held(threading.Event(), threading.Event())
        with self._lock:
            self._holds.setdefault(method, []).append(held)
        return held

    def reset(self) -> None:
        """Forget calls, messages, views, files, trigger ids and pending faults; usergroups and settings stay."""
        with self._lock:
            self._calls.clear()
            self._messages.clear()
            self._faults.clear()
            self._limited.clear()
            self._last_post.clear()
            for kept in (self._triggers, self._views, self._view_users, self._homes, self._files, self._upload_keys):
                kept.clear()

    def trigger_id(self, user: str | None = None, *, age: float = 0.0, view_id: str | None = None) -> str:
        """A fresh trigger_id, as Slack puts in a command, shortcut or click by `user` (from inside `view_id`).

        It opens one view (views.open or views.push) within TRIGGER_TTL seconds of being made; `age` makes one
        that many seconds old already. A well-formed trigger_id the stand-in did not make (a hand-written
        payload's) is taken as just made, on first use; every trigger_id opens one view only.
        """
        with self._lock:
            self._counts["trigger"] += 1
            made = f"{int(time.time())}.{self._counts['trigger']}.{uuid.uuid4().hex[:20]}"
            self._triggers[made] = _Trigger(time.monotonic() - age, user, view_id)
        return made

    # --- HTTP ---------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            body = json.loads(await request.text() or "{}")
            args.update(body if isinstance(body, dict) else {})
        elif request.can_read_body:
            args.update({key: value for key, value in (await request.post()).items() if isinstance(value, str)})
        args = {key: decoded(value) for key, value in args.items()}
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else args.pop("token", "")
        args.pop("token", None)
        with self._lock:
            holds = self._holds.get(method)
            held = holds.pop(0) if holds else None
        if held is not None:
            held.arrived.set()
            await asyncio.to_thread(held.released.wait, HOLD_TIMEOUT)
        status, headers, answer = self._answer(method, args, str(token))
        return web.json_response(answer, status=status, headers=headers)

    def _answer(self, method: str, args: dict[str, Any], token: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, headers = 200, {}
        with self._lock:
            if not token:
                answer: dict[str, Any] = {"ok": False, "error": "not_authed"}
            elif not self._token_fits(method, token):
                answer = {"ok": False, "error": "invalid_auth"}
            elif self._limited.get(method, 0.0) > time.monotonic():
                status = 429
                headers["Retry-After"] = str(max(1, math.ceil(self._limited[method] - time.monotonic())))
                answer = {"ok": False, "error": "ratelimited"}
            elif self._faults.get(method):
                status, retry_after = self._faults[method].pop(0)
                if status == 429:
                    headers["Retry-After"] = str(retry_after)
                answer = {"ok": False, "error": "ratelimited" if status == 429 else "internal_error"}
            elif method == "chat.postMessage" and self._too_fast(str(args.get("channel", ""))):
                status, headers = 429, {"Retry-After": "1"}
                answer = {"ok": False, "error": "ratelimited"}
            else:
                answer = refusal(method, args) or self._handlers.get(method, self._unknown)(args)
            self._calls.append(Call(method, args, time.time(), answer))
        return status, headers, answer

    async def _response(self, request: web.Request) -> web.Response:
        """A post to a response_url: blocks Slack would refuse get its 400 and plain-text error, and are not shown."""
        body = json.loads(await request.text() or "{}")
        args = {"name": request.match_info["name"], **(body if isinstance(body, dict) else {})}
        errors = block_kit_errors(args["blocks"]) if "blocks" in args else []
        answer: dict[str, Any] = {"ok": False, "error": "invalid_blocks", "errors": errors} if errors else {"ok": True}
        with self._lock:
            self._calls.append(Call("response_url", args, time.time(), answer))
        return web.Response(text="invalid_blocks", status=400) if errors else web.Response(text="ok")

    async def _upload(self, request: web.Request) -> web.Response:
        """The bytes of a file, POSTed to an upload URL: raw (as slack_sdk sends them) or as a multipart form's file."""
        content = b""
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if isinstance(part, BodyPartReader) and (part.filename is not None or part.name == "file"):
                    content = bytes(await part.read())
                    break
        else:
            content = await request.read()
        with self._lock:
            file_id = self._upload_keys.get(request.match_info["key"])
            upload = self._files.get(file_id or "")
            if upload is not None and not upload.completed:
                self._files[upload.id] = dataclasses.replace(upload, content=content)
            answer = {"ok": upload is not None, "file_id": file_id, "bytes": len(content)}
            self._calls.append(Call("upload", {"key": request.match_info["key"]}, time.time(), answer))
        if upload is None:
            return web.Response(text="not_found", status=404)
        return web.Response(text=f"OK - {len(content)}")

    def _token_fits(self, method: str, token: str) -> bool:
        if method in APP_TOKEN_METHODS:
            return token.startswith("xapp-")
        return token == self.token or (not self.strict_token and token.startswith("xoxb-"))

    # --- Socket Mode --------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            known = request.query.get("ticket") in self._tickets
        if not known:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        with self._lock:
            self._sockets.append(socket)
            count = len(self._sockets)
        try:
            await socket.send_json(
                {
                    "type": "hello",
                    "num_connections": count,
                    "debug_info": {"host": "slack-standin", "build_number": 1, "approximate_connection_time": 18060},
                    "connection_info": {"app_id": APP_ID},
                }
            )
            async for message in socket:
                if message.type == WSMsgType.TEXT:
                    self._receive(message.data)
        finally:
            with self._lock:
                self._sockets.remove(socket)
        return socket

    def _receive(self, text: str) -> None:
        """Record what the app sent over the socket; an ack completes the envelope it names."""
        try:
            message = json.loads(text)
        except ValueError:
            message = {"raw": text}
        if not isinstance(message, dict):
            message = {"raw": message}
        with self._lock:
            self._calls.append(
                Call("socket_mode.ack" if "envelope_id" in message else "socket_mode.message", message, time.time())
            )
        acked = self._acks.get(str(message.get("envelope_id")))
        if acked is not None and not acked.done():
            acked.set_result(message)

    async def _deliver(self, envelope: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            sockets = [socket for socket in self._sockets if not socket.closed]
            if not sockets:
                raise AssertionError("no Socket Mode connection is open")
            self._calls.append(Call("socket_mode.envelope", envelope, time.time()))
            self._envelopes_sent += 1
            turn = self._envelopes_sent
        acked: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope["envelope_id"]] = acked
        try:
            # Slack spreads envelopes over an app's open connections.
            await sockets[turn % len(sockets)].send_json(envelope)
            return await acked
        finally:
            del self._acks[envelope["envelope_id"]]

    async def _close_sockets(self, _: web.Application) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for socket in sockets:
            await socket.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    def socket_count(self) -> int:
        """How many Socket Mode connections are open right now (one a web replica)."""
        with self._lock:
            return sum(1 for socket in self._sockets if not socket.closed)

    def socket_connected(self) -> bool:
        """Whether an app holds a Socket Mode connection open right now."""
        with self._lock:
            return any(not socket.closed for socket in self._sockets)

    def send_envelope(self, kind: str, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send `payload` as a Socket Mode envelope of type `kind` and return the app's ack.

        `kind` is "slash_commands", "interactive" or "events_api"; an ack of a slash command (or of a
        view_submission) may carry a `payload`, the reply shown to the user. No ack within `timeout` raises
        AssertionError.
        """
        if self._loop is None:
            raise RuntimeError("the Slack stand-in is not running")
        envelope: dict[str, Any] = {
            "envelope_id": str(uuid.uuid4()),
            "type": kind,
            "payload": payload,
            # The surfaces whose ack can carry an answer: a command's reply, a submission's response_action.
            "accepts_response_payload": kind == "slash_commands"
            or payload.get("type") in {"view_submission", "block_suggestion"},
        }
        if kind == "events_api":
            envelope.update({"retry_attempt": 0, "retry_reason": ""})
        delivery = asyncio.run_coroutine_threadsafe(self._deliver(envelope), self._loop)
        try:
            return delivery.result(timeout)
        except TimeoutError:
            delivery.cancel()
            raise AssertionError(f"no ack within {timeout}s for {kind} envelope {envelope['envelope_id']}") from None

    # --- Web API methods (called with the lock held) -------------------------------------------

    def _too_fast(self, channel: str) -> bool:
        if self.rate_limit_per_channel is None:
            return False
        now, last = time.monotonic(), self._last_post.get(dm_channel(channel))
        return last is not None and now - last < 1.0 / self.rate_limit_per_channel

    def _next_ts(self) -> str:
        # Slack's ts is the posting time in microseconds; bumping keeps it unique under bursts.
        self._last_ts = max(int(time.time() * 1_000_000), self._last_ts + 1)
        return f"{self._last_ts // 1_000_000}.{self._last_ts % 1_000_000:06d}"

    def _unknown(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": "unknown_method"}

    def _connections_open(self, _: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"ok": True, "url": f"{self.socket_url}?ticket={ticket}&app_id={APP_ID}"}

    def _auth_test(self, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://example.slack.com/",
            "team": "example",
            "user": "jit-lb",
            "team_id": "T0001",
            "user_id": "U0BOT",
            "bot_id": "B0BOT",
        }

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel"):
            return {"ok": False, "error": "channel_not_found"}
        if not any(args.get(key) for key in ("text", "blocks", "attachments")):
            return {"ok": False, "error": "no_text"}
        channel, ts = dm_channel(str(args["channel"])), self._next_ts()
        message: dict[str, Any] = {"type": "message", "ts": ts, "user": "U0BOT", "bot_id": "B0BOT"}
        message.update({key: args[key] for key in ("text", "blocks", "attachments", "thread_ts") if key in args})
        self._messages[(channel, ts)] = message
        self._last_post[channel] = time.monotonic()
        return {"ok": True, "channel": channel, "ts": ts, "message": dict(message)}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = dm_channel(str(args.get("channel", ""))), str(args.get("ts", ""))
        message = self._messages.get((channel, ts))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.update({key: args[key] for key in ("text", "blocks", "attachments") if key in args})
        return {"ok": True, "channel": channel, "ts": ts, "text": message.get("text", ""), "message": dict(message)}

    def _delete(self, args: dict[str, Any]) -> dict[str, Any]:
        """chat.delete: a conversation id (a user id is not one: channel_not_found) and a message the app posted."""
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        if not channel or channel[:1] not in {"C", "G", "D"}:
            return {"ok": False, "error": "channel_not_found"}
        message = self._messages.get((channel, ts))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if message.get("user") != "U0BOT":
            return {"ok": False, "error": "cant_delete_message"}  # a bot token deletes only the app's own messages
        del self._messages[(channel, ts)]
        return {"ok": True, "channel": channel, "ts": ts}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel") or not args.get("user"):
            return {"ok": False, "error": "channel_not_found" if not args.get("channel") else "user_not_found"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _permalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel", "")), str(args.get("message_ts", ""))
        link = f"https://example.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        return {"ok": True, "channel": channel, "permalink": link}

    def _open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = [user for user in str(args.get("users", "")).split(",") if user]
        if not users:
            return {"ok": False, "error": "users_list_not_supplied"}
        return {"ok": True, "channel": {"id": dm_channel(users[0])}}

    def _user_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user", ""))
        if not user:
            return {"ok": False, "error": "user_not_found"}
        name = user.lower()
        profile = {"display_name": name, "real_name": name.title()}
        email = self._emails.get(user)  # handlers run under the stand-in's lock
        if email is not None:
            profile["email"] = email
        return {
            "ok": True,
            "user": {"id": user, "name": name, "real_name": name.title(), "tz": "UTC", "profile": profile},
        }

    def _usergroup_users(self, args: dict[str, Any]) -> dict[str, Any]:
        users = self._usergroups.get(str(args.get("usergroup", "")))
        return {"ok": False, "error": "no_such_subteam"} if users is None else {"ok": True, "users": list(users)}

    # Views. refusal() has already checked the view itself; these check what Slack checks of the call.

    def _exchange(self, args: dict[str, Any]) -> tuple[dict[str, Any] | None, _Trigger]:
        """Use up the call's trigger_id: Slack's refusal (or None), and what the stand-in knows of the trigger."""
        given = args.get("trigger_id") or args.get("interactivity_pointer")
        if not isinstance(given, str):
            return invalid_arguments("either trigger_id or interactivity_pointer is required"), _Trigger(0.0)
        if not TRIGGER_FORMAT.fullmatch(given):
            return {"ok": False, "error": "invalid_trigger_id"}, _Trigger(0.0)
        trigger = self._triggers.setdefault(given, _Trigger(time.monotonic()))  # not the stand-in's: just made
        if trigger.used:
            return {"ok": False, "error": "exchanged_trigger_id"}, trigger
        if time.monotonic() - trigger.made_at > TRIGGER_TTL:
            return {"ok": False, "error": "expired_trigger_id"}, trigger
        trigger.used = True
        return None, trigger

    def _view_of(self, args: dict[str, Any], kind: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The call's view, or Slack's refusal of a missing one, one of the wrong type, or a taken external_id."""
        view = args.get("view")
        if not isinstance(view, dict):
            return invalid_arguments("missing required field: view [json-pointer:/view]"), {}
        if view.get("type") != kind:
            return invalid_arguments(f"must be {kind} for this method [json-pointer:/view/type]"), view
        external_id = view.get("external_id")
        if external_id and any(
            kept["external_id"] == external_id and kept["id"] != args.get("view_id") for kept in self._views.values()
        ):
            return {"ok": False, "error": "duplicate_external_id"}, view
        return None, view

    def _keep_view(
        self,
        view: dict[str, Any],
        user: str | None,
        *,
        view_id: str | None = None,
        under: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store `view` (new, pushed onto `under`, or replacing view_id's) as Slack answers it; return a copy."""
        if view_id is None:
            self._counts["view"] += 1
            view_id = f"V{self._counts['view']:010d}"
        replaced = self._views.get(view_id, {})
        kept = {
            "id": view_id,
            "team_id": TEAM_ID,
            "type": view["type"],
            "title": view.get("title"),
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": _with_ids(view.get("blocks", [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": replaced.get("root_view_id", under["root_view_id"] if under else view_id),
            "previous_view_id": replaced.get("previous_view_id", under["id"] if under else None),
            "app_id": APP_ID,
            "app_installed_team_id": TEAM_ID,
            "bot_id": "B0BOT",
        }
        self._views[view_id] = kept
        self._view_users.setdefault(view_id, user)
        return copy.deepcopy(kept)

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        refused, view = self._view_of(args, "modal")
        if refused is not None:
            return refused
        refused, trigger = self._exchange(args)
        return refused or {"ok": True, "view": self._keep_view(view, trigger.user)}

    def _views_push(self, args: dict[str, Any]) -> dict[str, Any]:
        refused, view = self._view_of(args, "modal")
        if refused is not None:
            return refused
        refused, trigger = self._exchange(args)
        if refused is not None:
            return refused
        # Pushed onto the modal the click came from, when the stand-in made that click's trigger_id.
        under = self._views.get(trigger.view_id or "")
        if under is not None:
            stack = sum(kept["root_view_id"] == under["root_view_id"] for kept in self._views.values())
            if stack >= MAX_VIEW_STACK:
                return {"ok": False, "error": "push_limit_reached"}
        user = trigger.user or (self._view_users.get(under["id"]) if under else None)
        return {"ok": True, "view": self._keep_view(view, user, under=under)}

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view_id, external_id = args.get("view_id"), args.get("external_id")
        if not view_id and not external_id:
            return invalid_arguments("either view_id or external_id is required")
        current = self._views.get(str(view_id)) if view_id else None
        if external_id:
            current = next((kept for kept in self._views.values() if kept["external_id"] == external_id), None)
        if current is None:
            return {"ok": False, "error": "not_found"}
        refused, view = self._view_of({**args, "view_id": current["id"]}, current["type"])
        if refused is not None:
            return refused
        if args.get("hash") and args["hash"] != current["hash"]:
            return {"ok": False, "error": "hash_conflict"}
        return {"ok": True, "view": self._keep_view(view, None, view_id=current["id"])}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args.get("user_id")
        if not isinstance(user, str) or not user:
            return invalid_arguments("missing required field: user_id [json-pointer:/user_id]")
        current = self._views.get(self._homes.get(user, ""))
        current_id = str(current["id"]) if current else None
        refused, view = self._view_of({**args, "view_id": current_id}, "home")
        if refused is not None:
            return refused
        if args.get("hash") and current is not None and args["hash"] != current["hash"]:
            return {"ok": False, "error": "hash_conflict"}
        published = self._keep_view(view, user, view_id=current_id)
        self._homes[user] = published["id"]
        return {"ok": True, "view": published}

    # Files: the three steps of slack_sdk's files_upload_v2.

    def _upload_url(self, args: dict[str, Any]) -> dict[str, Any]:
        missing = [f"missing required field: {name}" for name in ("filename", "length") if args.get(name) in {None, ""}]
        if missing:
            return invalid_arguments(*missing)
        length = str(args["length"])
        if not length.isdigit():
            return invalid_arguments("must be an integer [json-pointer:/length]")
        self._counts["file"] += 1
        file_id, key = f"F{self._counts['file']:010d}", uuid.uuid4().hex
        self._files[file_id] = UploadedFile(file_id, str(args["filename"]), int(length), alt_txt=args.get("alt_txt"))
        self._upload_keys[key] = file_id
        return {"ok": True, "upload_url": self.upload_url_base + key, "file_id": file_id}

    def _complete_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        items = args.get("files")
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            return invalid_arguments("missing required field: files [json-pointer:/files]")
        channel_id = args.get("channel_id")
        if channel_id and not SHAREABLE_CHANNEL.fullmatch(str(channel_id)):
            return invalid_arguments("input must match regex pattern: ^[CGDZ][A-Z0-9]{8,}$ [json-pointer:/channel_id]")
        # `channels` (comma-separated) takes user ids too, shared in the app's DM with each.
        channels = [dm_channel(c) for c in str(args.get("channels") or "").split(",") if c]
        channels = channels or ([str(channel_id)] if channel_id else [])
        uploads = [self._files.get(str(item.get("id"))) for item in items]
        # A file whose bytes never reached its upload URL is not one Slack has: its answer then is not
        # documented, and the stand-in says file_not_found.
        if any(upload is None or upload.content is None or upload.completed for upload in uploads):
            return {"ok": False, "error": "file_not_found"}
        shared = []
        for item, upload in zip(items, uploads, strict=True):
            assert upload is not None
            done = dataclasses.replace(
                upload,
                title=str(item.get("title") or upload.filename),
                shares=tuple((channel, self._share(channel, upload, args)) for channel in channels),
                initial_comment=args.get("initial_comment"),
                thread_ts=args.get("thread_ts"),
                completed=True,
            )
            self._files[done.id] = done
            shared.append(_file_object(done))
        return {"ok": True, "files": shared}

    def _delete_file(self, args: dict[str, Any]) -> dict[str, Any]:
        """files.delete: the file goes, and each message that shared it keeps only a tombstone of it."""
        upload = self._files.get(str(args.get("file") or ""))
        if upload is None or not upload.completed:
            return {"ok": False, "error": "file_not_found"}
        if upload.deleted:
            return {"ok": False, "error": "file_deleted"}
        self._files[upload.id] = dataclasses.replace(upload, content=None, title="", deleted=True)
        for channel, ts in upload.shares:
            message = self._messages.get((channel, ts))
            if message is not None:
                message["files"] = [
                    {"id": f["id"], "mode": "tombstone"} if f.get("id") == upload.id else f for f in message["files"]
                ]
        return {"ok": True}

    def _share(self, channel: str, upload: UploadedFile, args: dict[str, Any]) -> str:
        """Post the message that shares `upload` in `channel`, and return its ts."""
        ts = self._next_ts()
        message: dict[str, Any] = {"type": "message", "subtype": "file_share", "ts": ts, "user": "U0BOT"}
        message["text"] = args.get("initial_comment") or ""
        message["files"] = [{"id": upload.id, "name": upload.filename}]
        if args.get("thread_ts"):
            message["thread_ts"] = args["thread_ts"]
        self._messages[(channel, ts)] = message
        return ts

    # --- queries ------------------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [call for call in self._calls if method is None or call.method == method]

    def _sent(self, keep: Callable[[Call], bool], methods: Sequence[str] = ("chat.postMessage",)) -> list[Message]:
        """Accepted calls of `methods` that `keep` selects, as their fields plus the `ts` Slack gave them."""
        return [
            {**call.args, "ts": call.response.get("ts", call.response.get("message_ts"))}
            for call in self.calls()
            if call.method in methods and call.response.get("ok") and keep(call)
        ]

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Messages as posted (fields plus `ts`), to `channel` (a user id and its D-channel are one) or anywhere."""
        return self._sent(lambda call: channel is None or call.response["channel"] == dm_channel(channel))

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The message as it stands now, after any chat.update."""
        with self._lock:
            found = self._messages.get((dm_channel(channel), ts))
            return dict(found) if found else None

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        return [message for message in self.messages(channel) if message.get("thread_ts") == ts]

    def dms(self, user_id: str) -> list[dict[str, Any]]:
        """Messages posted to the user's DM channel (chat.postMessage), in the order sent; not ephemerals."""
        return self._sent(lambda call: call.response.get("channel") == dm_channel(user_id))

    def ephemerals(self, user_id: str) -> list[dict[str, Any]]:
        """Ephemeral messages shown to the user (chat.postEphemeral), in the order sent; not DMs."""
        return self._sent(lambda call: call.args.get("user") == user_id, ("chat.postEphemeral",))

    def updates(self, channel: str, ts: str) -> list[dict[str, Any]]:
        return [
            call.args
            for call in self.calls("chat.update")
            if call.response.get("ok") and call.response["channel"] == dm_channel(channel) and call.response["ts"] == ts
        ]

    def responses(self, name: str | None = None) -> list[dict[str, Any]]:
        """Bodies posted to response_url(name), or to any response_url, that Slack took."""
        return [
            call.args
            for call in self.calls("response_url")
            if call.response.get("ok") and (name is None or call.args["name"] == name)
        ]

    def views(self, user: str | None = None, callback_id: str | None = None) -> list[dict[str, Any]]:
        """Modals opened or pushed (for `user`, with `callback_id`), each as it stands after any views.update.

        In the order they were opened, as Slack answered them: with `id`, `hash` and every block's `block_id`.
        A view opened with a trigger_id the stand-in did not make has no known user and matches no `user`.
        """
        with self._lock:
            return [
                copy.deepcopy(view)
                for view_id, view in self._views.items()
                if view["type"] == "modal"
                and (user is None or self._view_users.get(view_id) == user)
                and (callback_id is None or view["callback_id"] == callback_id)
            ]

    def view(self, view_id: str) -> dict[str, Any] | None:
        """The view (modal or home) with this id as it stands now."""
        with self._lock:
            found = self._views.get(view_id)
            return copy.deepcopy(found) if found else None

    def home(self, user: str) -> dict[str, Any] | None:
        """The App Home view last published for `user`, or None."""
        with self._lock:
            found = self._views.get(self._homes.get(user, ""))
            return copy.deepcopy(found) if found else None

    def files(self, channel: str | None = None) -> list[UploadedFile]:
        """Files that files.completeUploadExternal took, with their bytes: shared in `channel` (a user id and its
        DM channel are one), or all, private ones included."""
        with self._lock:
            done = [upload for upload in self._files.values() if upload.completed and not upload.deleted]
        return [upload for upload in done if channel is None or dm_channel(channel) in upload.channels]

    def holding(self, text: str) -> list[str]:
        """Where Slack still keeps `text` now (messages as they stand after updates and deletes, files not
        deleted, their titles and comments, open views): empty once nothing the workspace keeps holds it."""
        found = []
        with self._lock:
            for (channel, ts), message in self._messages.items():
                if text in json.dumps(message):
                    found.append(f"message {channel} {ts}")
            for upload in self._files.values():
                kept = f"{upload.title} {upload.initial_comment or ''} {upload.filename}"
                if not upload.deleted and (text in kept or text.encode() in (upload.content or b"")):
                    found.append(f"file {upload.id}")
            found += [f"view {view_id}" for view_id, view in self._views.items() if text in json.dumps(view)]
        return found

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Poll `predicate` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                dump = "\n".join(
                    f"  {call.method} {json.dumps(call.args, default=str)[:300]} -> "
                    f"{json.dumps(call.response, default=str)[:120]}"
                    for call in self.calls()[-30:]
                )
                raise AssertionError(f"not true within {timeout}s; the last Slack calls were:\n{dump or '  (none)'}")
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> None:
    """Run the stand-in in the foreground until interrupted."""
    serve_standin(SlackStandin, __doc__ or "", TEST_TOKEN, argv)


if __name__ == "__main__":
    main()
