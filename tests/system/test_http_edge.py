"""The web's HTTP edge answers whatever reaches `/slack/events` with a 4xx or a 200, never a 5xx; /healthz says only ok.

The real app (`web_application`: the edge, Bolt, our listeners) serves on a free loopback port, with the
private Redis and the Slack stand-in behind it; requests go over a raw socket, so headers and bodies are
exactly the bytes a test chose, signed as Slack signs them or not.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import healthz_handler, web_application
from bot.http import MAX_BODY
from devtools.ports import free_port
from devtools.redis_proxy import HoldingProxy
from devtools.redis_server import RedisServer
from devtools.slack_client import (
    click_payload,
    command_body,
    form_body,
    fresh_trigger_id,
    home_view,
    inputs,
    select,
    signed_headers,
    text_input,
    view_click_payload,
    view_submission_payload,
)
from devtools.slack_standin import TEST_TOKEN, SlackStandin
from devtools.stack import SIGNING_SECRET, Stack
from jit_lb.access import store
from jit_lb.access.connections import WEB
from jit_lb.settings import Settings
from slack_out.process import connect
from tests.helpers import stack_policy, valid

SECRET = "edge-secret"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


class Served:
    """An aiohttp Application on a free loopback port, in a thread and event loop of its own."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None)
        self._thread = threading.Thread(target=self._loop.run_forever, name="edge-under-test", daemon=True)

    def __enter__(self) -> Served:
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def exchange(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
        """Send one request, byte for byte, and return the status and body of the answer."""
        head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
        head += [name + b": " + value for name, value in headers]
        if not any(name.lower() in {b"content-length", b"transfer-encoding"} for name, _ in headers):
            head.append(b"Content-Length: " + str(len(body)).encode())
        answer = b""
        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as sock:
            sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
            while chunk := sock.recv(65536):
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1."), f"no HTTP answer: {answer[:200]!r}"
        return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def signed(body: bytes, content_type: str | None, at: int | None = None) -> list[tuple[bytes, bytes]]:
    """The headers Slack sends with `body`: its timestamp and its signature over the raw bytes."""
    stamp = str(int(time.time()) if at is None else at).encode()
    digest = hmac.new(SECRET.encode(), b"v0:" + stamp + b":" + body, hashlib.sha256).hexdigest()
    headers = [(b"X-Slack-Request-Timestamp", stamp), (b"X-Slack-Signature", b"v0=" + digest.encode())]
    return headers + ([(b"Content-Type", content_type.encode())] if content_type is not None else [])


@pytest.fixture(name="edge", scope="module")
def fixture_edge(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The web process's aiohttp Application, as `bot` serves it, with Redis and the Slack stand-in behind it."""
    folder = tmp_path_factory.mktemp("edge")
    policy = folder / "policy.yml"
    policy.write_text(yaml.safe_dump(valid()), encoding="utf-8")
    with SlackStandin() as slack:
        settings = Settings(
            slack_bot_token=TEST_TOKEN,
            slack_signing_secret=SECRET,
            slack_api_url=slack.api_url,
            redis_url=redis_server.url,
            jit_policy_file=str(policy),
            jit_audit_log=str(folder / "audit.jsonl"),
        )
        runtime, notifier = connect(settings)
        _, app = web_application(settings, runtime, notifier)
        with Served(app) as served:
            yield served


def post(edge: Served, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    return edge.exchange("POST", "/slack/events", headers, body)


def assert_answered(status: int, answer: bytes) -> None:
    """A 2xx, or a 4xx; a refusal from the edge names what was wrong."""
    assert status < 500, (status, answer[:300])
    if status >= 400 and answer.startswith(b"{"):
        assert json.loads(answer)["error"]


# --- the inputs the issue names -------------------------------------------------------------------

ENVELOPE_CASES = {
    "a JSON list": (b"[]", 400, "not a JSON object"),
    "a JSON string": (b'"text"', 400, "not a JSON object"),
    "a type that is a number": (b'{"type": 5}', 400, "has no type"),
    "an event callback without an event": (b'{"type": "event_callback"}', 400, "no event"),
    "an event that is a list": (b'{"type": "event_callback", "event": []}', 400, "`body.event` is not an object"),
    "an event that is a string": (b'{"type": "event_callback", "event": "x"}', 400, "`body.event` is not an object"),
    "a url verification without a challenge": (b'{"type": "url_verification"}', 400, "no challenge"),
    "bytes that are not UTF-8": (b'{"type": "\xff\xfe"}', 400, "not UTF-8"),
    "JSON nested past the parser's depth": (b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "not JSON"),
    "a user that is a number": (b'{"type": "event_callback", "event": {"type": "x"}, "user": 5}', 400, "`body.user`"),
    "response_urls of numbers": (
        b'{"type": "event_callback", "event": {"type": "x"}, "response_urls": [1]}',
        400,
        "`body.response_urls`",
    ),
    "a type nobody listens for": (b'{"type": "app_rate_limited", "minute_rate_limited": 1}', 200, ""),
}


@pytest.mark.parametrize(("body", "status", "says"), ENVELOPE_CASES.values(), ids=ENVELOPE_CASES.keys())
def test_signed_bodies_of_odd_shapes_are_refused_naming_why(edge: Served, body: bytes, status: int, says: str) -> None:
    """Each body the issue names gets a 4xx that says what was wrong (or an ignored 200), not a 500."""
    answer_status, answer = post(edge, body, signed(body, JSON))
    assert (status, True) == (answer_status, says in answer.decode(errors="replace"))


PAYLOAD_CASES = {
    "a payload that is a list": ("[]", "not a JSON object"),
    "a payload that is a number": ("5", "not a JSON object"),
    "a payload that is not JSON": ("{nope", "not JSON"),
    "a block action without actions": ('{"type": "block_actions", "user": {"id": "U1"}, "container": {}}', "actions"),
    "a container that is a list": (
        '{"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "jit_approve"}], "container": []}',
        "`payload.container` is not an object",
    ),
    "a team that is a number": (
        '{"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "jit_approve"}], "container": {},'
        ' "team": 5}',
        "`payload.team`",
    ),
    "a view submission without a view": ('{"type": "view_submission", "user": {"id": "U1"}}', "no view"),
    "a view whose state is a list": (
        '{"type": "view_submission", "user": {"id": "U1"}, "view": {"type": "modal", "callback_id": "jit_request",'
        ' "state": {"values": []}}}',
        "state.values",
    ),
}


@pytest.mark.parametrize(("payload", "says"), PAYLOAD_CASES.values(), ids=PAYLOAD_CASES.keys())
def test_interaction_payloads_of_odd_shapes_are_refused(edge: Served, payload: str, says: str) -> None:
    """A `payload` field that is not an interaction as Slack sends it gets a 400 naming the field."""
    body = urllib.parse.urlencode({"payload": payload}).encode()
    status, answer = post(edge, body, signed(body, FORM))
    assert (status, says in answer.decode()) == (400, True)


HEADER_CASES = {
    "a unicode digit": ("²", "X-Slack-Request-Timestamp"),
    "5,000 digits": ("9" * 5000, "X-Slack-Request-Timestamp"),
    "no timestamp": ("", "X-Slack-Request-Timestamp"),
    "a negative number": ("-1700000000", "X-Slack-Request-Timestamp"),
    "an hour ago": (str(int(time.time()) - 3600), "stale"),
}


@pytest.mark.parametrize(("stamp", "says"), HEADER_CASES.values(), ids=HEADER_CASES.keys())
def test_bad_timestamps_are_401(edge: Served, stamp: str, says: str) -> None:
    """A timestamp that is not a few ASCII digits within five minutes of now is a 401 saying so."""
    headers = [(b"X-Slack-Request-Timestamp", stamp.encode()), (b"X-Slack-Signature", b"v0=" + b"0" * 64)]
    status, answer = post(edge, b"command=%2Fjit&user_id=U0DEV1", headers)
    assert (status, says in json.loads(answer)["error"]) == (401, True)


def test_a_signature_of_other_characters_is_401(edge: Served) -> None:
    """A signature with non-ASCII characters (which hmac.compare_digest refuses to compare) is a 401."""
    body = b"command=%2Fjit&user_id=U0DEV1"
    headers = [signed(body, FORM)[0], (b"X-Slack-Signature", "v0=é".encode()), (b"Content-Type", FORM.encode())]
    assert post(edge, body, headers)[0] == 401


def test_a_huge_body_is_413(edge: Served) -> None:
    """A body past MAX_BODY is refused before its signature is even computed."""
    body = b"x" * (MAX_BODY + 1)
    assert post(edge, body, signed(body, JSON))[0] == 413


def test_a_field_given_twice_is_refused(edge: Served) -> None:
    """A form repeating a field is refused: Bolt would read the last copy, the edge checked the first."""
    good = json.dumps(click_payload("U0APPROVER1", "jit_approve", "jit-abcdef", "C0APPROVALS", "1.000100"))
    body = urllib.parse.urlencode([("payload", good), ("payload", "[]")]).encode()
    status, answer = post(edge, body, signed(body, FORM))
    assert (status, json.loads(answer)["error"]) == (400, "malformed request: the form repeats the field 'payload'")


def test_a_view_submission_with_several_response_urls_is_answered_not_a_500(edge: Served) -> None:
    """A form sent with two `response_urls` (what a modal with two conversation selects that ask for one sends) is
    answered below 500: Bolt logs that it takes the first from a context that had no logger yet (a KeyError)."""
    payload = view_submission_payload(
        "U0DEV1", {"reason": {"reason": text_input("OPS-123 debugging 502s")}}, callback_id="jit_request", check=False
    )
    payload["response_urls"] = [
        {"block_id": "a", "action_id": "a", "channel_id": "C0DEVS", "response_url": "https://hooks.slack.com/1"},
        {"block_id": "b", "action_id": "b", "channel_id": "C0DEVS", "response_url": "https://hooks.slack.com/2"},
    ]
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    status, answer = post(edge, body, signed(body, FORM))
    assert status < 500, (status, answer[:300])


def test_well_formed_requests_still_reach_bolt(edge: Served) -> None:
    """A command, a url verification and Slack's certificate check are answered as before: 200."""
    command = command_body("U0DEV1", "help").encode()
    status, answer = post(edge, command, signed(command, FORM))
    assert (status, "/jit request" in json.loads(answer)["text"]) == (200, True)
    challenge = b'{"type": "url_verification", "challenge": "abc123", "token": "t"}'
    assert post(edge, challenge, signed(challenge, JSON)) == (200, b'{"challenge": "abc123"}')
    check = b"ssl_check=1&token=gIkuvaNzQIHg97ATvDxqgjtO"
    assert post(edge, check, signed(check, FORM))[0] == 200


# --- properties -----------------------------------------------------------------------------------

# Field names and values Slack's envelopes use, so that generated bodies reach Bolt's and our listeners' code.
KEYS = [
    "type", "event", "user", "team", "enterprise", "channel", "actions", "container", "view", "message",
    "previous_message", "item", "assistant_thread", "function_data", "authorizations", "response_urls",
    "response_url", "callback_id", "action_id", "block_id", "value", "state", "values", "selected_option",
    "challenge", "command", "user_id", "team_id", "enterprise_id", "channel_id", "message_ts", "thread_ts", "ts",
    "is_ext_shared_channel", "is_enterprise_install", "trigger_id", "subtype", "channel_type", "bot_id", "tab",
    "user_team", "private_metadata", "id", "token", "text", "ssl_check", "event_context", "function_execution_id",
]  # fmt: skip
TYPES = [
    "block_actions", "view_submission", "view_closed", "shortcut", "message_action", "block_suggestion",
    "event_callback", "url_verification", "app_home_opened", "message", "modal", "home", "button", "im",
]  # fmt: skip
texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    texts,
    st.sampled_from([*TYPES, "U0DEV1", "U0BOT", "B0BOT", "jit_approve", "jit_deny", "jit-abcdef", "/jit", "1"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KEYS), texts), inner, max_size=6)
    ),
    max_leaves=25,
)

SAMPLES: list[dict[str, Any]] = [
    click_payload("U0APPROVER1", "jit_approve", "jit-abcdef", "C0APPROVALS", "1700000000.000100"),
    {
        "type": "view_submission",
        "team": {"id": "T0001", "domain": "example"},
        "user": {"id": "U0DEV1", "username": "dev1", "name": "dev1", "team_id": "T0001"},
        "api_app_id": "A123456",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "view": {
            "id": "V0001",
            "type": "modal",
            "callback_id": "jit_request",
            "private_metadata": "",
            "state": {
                "values": {
                    "target": {"target": {"type": "static_select", "selected_option": {"value": "lb-prod"}}},
                    "reason": {"reason": {"type": "plain_text_input", "value": "OPS-123 debugging 502s"}},
                }
            },
        },
        "response_urls": [],
    },
    {
        "type": "shortcut",
        "callback_id": "jit_request",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
        "user": {"id": "U0DEV1", "username": "dev1", "team_id": "T0001"},
        "team": {"id": "T0001", "domain": "example"},
    },
    {
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "team_id": "T0001",
        "api_app_id": "A123456",
        "type": "event_callback",
        "event_id": "Ev0001",
        "event_time": 1700000000,
        "event": {"type": "app_home_opened", "user": "U0DEV1", "channel": "D0DM1", "tab": "home"},
        "authorizations": [{"team_id": "T0001", "user_id": "U0BOT", "is_bot": True}],
        "is_ext_shared_channel": True,
    },
]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists."""
    yield prefix
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield from paths(child, (*prefix, key))


@st.composite
def mutated_samples(draw: st.DrawFn) -> dict[str, Any]:
    """One of Slack's own payloads with a few fields replaced by any JSON value, or removed."""
    sample = copy.deepcopy(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from([p for p in paths(sample) if p]))
        *parents, last = path
        holder: Any = sample
        for key in parents:
            holder = holder[key]
        if isinstance(holder, dict) and draw(st.booleans()):
            del holder[last]
        else:
            holder[last] = draw(json_values)
    return sample


def as_body(kind: str, value: Any) -> tuple[bytes, str]:
    if kind == "json":
        return json.dumps(value).encode(), JSON
    return urllib.parse.urlencode({"payload": json.dumps(value)}).encode(), FORM


shapes = st.tuples(st.sampled_from(["json", "payload"]), st.one_of(mutated_samples(), json_values))
EDGE_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@EDGE_SETTINGS
@given(shape=shapes)
def test_no_signed_json_body_gets_a_5xx(edge: Served, shape: tuple[str, Any]) -> None:
    """Any JSON body or interaction payload, signed as Slack signs it, gets a 2xx or a 4xx naming what was wrong."""
    body, content_type = as_body(*shape)
    assert_answered(*post(edge, body, signed(body, content_type)))


form_fields = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["command", "user_id", "text", "payload", "ssl_check", "channel_id"]), texts),
        st.one_of(
            texts,
            st.sampled_from(["/jit", "U0DEV1", "help", "request lb-prod 30m why", "1", "{}"]),
            mutated_samples().map(json.dumps),
            st.sampled_from(SAMPLES).map(json.dumps),
        ),
    ),
    max_size=6,
)


@EDGE_SETTINGS
@given(fields=form_fields, content_type=st.one_of(st.none(), st.sampled_from([FORM, JSON, "text/plain"]), texts))
def test_no_signed_form_gets_a_5xx(edge: Served, fields: list[tuple[str, str]], content_type: str | None) -> None:
    """Any form body (commands, payloads, repeated or missing fields), under any content type, signed: never a 5xx."""
    body = urllib.parse.urlencode(fields).encode()
    assert_answered(*post(edge, body, signed(body, content_type)))


header_values = st.one_of(
    st.binary(max_size=80).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"")),
    texts.map(str.encode),
    st.integers().map(lambda number: str(number).encode()),
    st.sampled_from(["²", "\u0661\u0667" + "\u0660" * 8, "9" * 5000, "v0=" + "0" * 64, "v0=é", " 1700000000"]).map(
        str.encode
    ),
    st.just(str(int(time.time())).encode()),
)
header_names = st.sampled_from(
    [
        b"X-Slack-Request-Timestamp",
        b"X-Slack-Signature",
        b"Content-Type",
        b"Content-Encoding",
        b"Transfer-Encoding",
        b"X-Slack-Retry-Num",
    ]
)


@EDGE_SETTINGS
@given(headers=st.lists(st.tuples(header_names, header_values), max_size=6), body=st.binary(max_size=2000))
def test_no_unsigned_request_gets_a_5xx(edge: Served, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Any headers and bytes without Slack's signature get a 4xx: never a 5xx, never Bolt."""
    status, answer = post(edge, body, headers)
    assert 400 <= status < 500, (status, answer[:300])


@EDGE_SETTINGS
@given(body=st.binary(max_size=4000), content_type=st.sampled_from([FORM, JSON, None]))
def test_no_signed_bytes_get_a_5xx(edge: Served, body: bytes, content_type: str | None) -> None:
    """Signed bytes of any kind (not UTF-8, not JSON, not a form) get a 2xx or a 4xx."""
    assert_answered(*post(edge, body, signed(body, content_type)))


# --- /healthz -------------------------------------------------------------------------------------


def test_healthz_says_ok_and_nothing_more(edge: Served) -> None:
    """With Redis up, /healthz answers 200 and exactly {"ok": true}."""
    status, answer = edge.exchange("GET", "/healthz", [], b"")
    assert (status, json.loads(answer)) == (200, {"ok": True})


def test_healthz_without_redis_says_not_ok_and_not_where_redis_is(tmp_path: Path) -> None:
    """With Redis away, /healthz answers 503 and exactly {"ok": false}: no address, port or error text."""
    policy = tmp_path / "policy.yml"
    policy.write_text(yaml.safe_dump(valid()), encoding="utf-8")
    port = free_port()
    settings_ = Settings(
        slack_bot_token=TEST_TOKEN,
        slack_api_url="http://127.0.0.1:9/api/",
        redis_url=f"redis://127.0.0.1:{port}/0",
        jit_policy_file=str(policy),
        jit_audit_log=os.devnull,
    )
    runtime, _ = connect(settings_)
    app = web.Application()
    app.router.add_get("/healthz", healthz_handler(runtime))
    with Served(app) as served:
        status, answer = served.exchange("GET", "/healthz", [], b"")
    assert (status, json.loads(answer)) == (503, {"ok": False})
    assert str(port).encode() not in answer and b"127.0.0.1" not in answer


def test_a_signed_command_replayed_within_its_window_is_answered_without_acting() -> None:
    """The bytes and headers of one signed `/jit request` sent again, to the other web process and to the first:
    one request is stored and recorded; each repeat is answered (ephemeral, saying so) and does nothing."""
    with Stack(policy=stack_policy, webs=2) as stack:
        body = command_body("U0DEV1", "request lb-prod 30m replayed once", "C0DEVS", trigger_id=fresh_trigger_id())
        headers = signed_headers(SIGNING_SECRET, body)

        first = stack.client(0).post(body, headers)
        repeats = [stack.client(1).post(body, headers), stack.client(0).post(body, headers)]

        created = [r for r in stack.audit() if r["event"] == "request.created"]
        assert [r["request_reason"] for r in created] == ["replayed once"]
        assert "waiting for approval" in first.json()["text"]
        for repeat in repeats:
            assert (repeat.status, repeat.json()["response_type"]) == (200, "ephemeral")
            assert "reached jit-lb before, so it was not done again" in repeat.json()["text"]


# --- the replay check with Redis out of reach ------------------------------------------------------


Partitioned = tuple[Served, HoldingProxy, redis.Redis, SlackStandin]


@pytest.fixture(name="partitioned")
def fixture_partitioned(redis_url: str, tmp_path: Path) -> Iterator[Partitioned]:
    """The web's app reaching its (emptied) Redis through a proxy that can hold back chosen answers."""
    policy = tmp_path / "policy.yml"
    policy.write_text(yaml.safe_dump(valid()), encoding="utf-8")
    upstream = redis.Redis.from_url(redis_url)
    with SlackStandin() as slack, HoldingProxy(upstream.connection_pool.connection_kwargs["port"]) as proxy:
        settings_ = Settings(
            slack_bot_token=TEST_TOKEN,
            slack_signing_secret=SECRET,
            slack_api_url=slack.api_url,
            redis_url=proxy.url,
            jit_policy_file=str(policy),
            jit_audit_log=str(tmp_path / "audit.jsonl"),
        )
        runtime, notifier = connect(settings_, WEB, wait_on_rate_limits=False)  # as the web process connects
        _, app = web_application(settings_, runtime, notifier)
        with Served(app) as served:
            yield served, proxy, upstream, slack
    upstream.close()


def test_an_interaction_replayed_while_the_replay_check_cannot_reach_redis_is_not_taken(
    partitioned: Partitioned,
) -> None:
    """A signed request-form submission taken once, then sent again while the answer to the replay check (SET NX of
    its signature) is held past the web's read timeout, as a partition that falls mid-call does; the rest of Redis
    answers. The replay is not dispatched: one request is stored, and the repeat is told jit-lb is unavailable on
    the form (it was taken as new, and made a second request, before)."""
    edge, proxy, upstream, _ = partitioned
    values = inputs(target=select("lb-prod"), duration=select("30m"), reason=text_input("replayed form"))
    body = form_body(view_submission_payload("U0DEV1", values)).encode()
    headers = signed(body, FORM)
    status, answer = post(edge, body, headers)
    assert (status, answer) == (200, b""), answer[:300]
    assert len(upstream.smembers("jit:open")) == 1

    proxy.hold(b"jit:signed:", seconds=3.0)
    status, answer = post(edge, body, headers)

    assert len(upstream.smembers("jit:open")) == 1
    assert status == 200
    assert "unavailable" in json.dumps(json.loads(answer)["errors"])


def test_a_click_whose_replay_check_cannot_reach_redis_does_nothing_and_the_clicker_is_told(
    partitioned: Partitioned,
) -> None:
    """An approval click whose replay check's answer is lost does not count, even though the rest of Redis answers
    (before, the click went on to its decision, which Redis then answered: it was approved, and the approver was
    told nothing of the check); the approver is told jit-lb is unavailable."""
    edge, proxy, upstream, slack = partitioned
    command = command_body("U0DEV1", "request lb-prod 30m approved through a partition").encode()
    status, answer = post(edge, command, signed(command, FORM))
    assert status == 200, answer[:300]
    [request_id] = [member.decode() for member in upstream.smembers("jit:open")]

    proxy.hold(b"jit:signed:", seconds=3.0)
    payload = view_click_payload("U0APPROVER1", "jit_approve", request_id, home_view("U0APPROVER1"))
    click = form_body(payload).encode()
    assert post(edge, click, signed(click, FORM))[0] == 200

    proxy.release()
    time.sleep(1.0)  # what the click would have done (its decision runs after the answer) has had time to happen
    assert json.loads(upstream.get(f"jit:req:{request_id}") or b"{}")["status"] == "pending"
    slack.wait_for(lambda: slack.dms("U0APPROVER1"))
    assert "jit-lb is unavailable" in slack.dms("U0APPROVER1")[-1]["text"]


def taken_back(upstream: redis.Redis, seconds: float = 10.0) -> set[bytes]:
    """The open requests Redis holds once the web's take-back had `seconds` to act (none, when it did)."""
    deadline = time.monotonic() + seconds
    while (left := upstream.smembers("jit:open")) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_a_request_whose_write_timed_out_is_taken_back_once_redis_answers(partitioned: Partitioned) -> None:
    """The answer to the script that stores a new request is lost (a partition that falls after it was sent): the
    requester is told jit-lb is unavailable and no request.created is written, so the request Redis did store is
    taken back once Redis answers again (it stayed pending before, on approvers' App Homes and approvable there,
    with no record of its making)."""
    edge, proxy, upstream, _ = partitioned
    sha = upstream.script_load(store._CREATE)  # known to Redis, as after the first request: EVALSHA runs it
    proxy.hold(sha.encode(), seconds=3.0)
    command = command_body("U0DEV1", "request lb-prod 30m its answer lost").encode()
    status, answer = post(edge, command, signed(command, FORM))
    assert status == 200 and "jit-lb is unavailable" in json.loads(answer)["text"], answer[:300]
    proxy.release()

    assert taken_back(upstream) == set()
    assert upstream.keys("jit:req:*") == []


def test_a_request_whose_record_failed_while_redis_was_cut_off_is_taken_back_once_redis_answers(
    partitioned: Partitioned, tmp_path: Path
) -> None:
    """The audit log fails on a new request's record (a directory where the file was) and Redis stops answering just
    then, so the request cannot be taken back at once: it is taken back once Redis answers again, and the requester is
    told the log failed. Before, the take-back's error went up alone: the request stayed pending, with no
    request.created, on approvers' App Homes and approvable there."""
    edge, proxy, upstream, _ = partitioned
    command = command_body("U0DEV1", "request lb-prod 30m first, as usual").encode()
    assert post(edge, command, signed(command, FORM))[0] == 200  # the scripts loaded, the connections made
    upstream.delete("jit:open")
    log = tmp_path / "audit.jsonl"
    log.unlink()
    log.mkdir()  # the next record cannot be written
    proxy.hold(b"*2\r\n$3\r\nGET\r\n", seconds=3.0, once=True)  # the take-back reads the request first
    command = command_body("U0DEV1", "request lb-prod 30m its record failed").encode()
    status, answer = post(edge, command, signed(command, FORM))
    assert status == 200 and "audit log cannot be written" in json.loads(answer)["text"], answer[:300]
    proxy.release()

    assert taken_back(upstream) == set()


def test_an_approval_whose_commit_answer_was_lost_is_told_as_it_landed(partitioned: Partitioned) -> None:
    """An App Home Approve whose transaction (MULTI … EXEC) reached Redis and was done, but whose answer was lost:
    the web reads the request again and, finding it as the click left it, goes on as for a counted approval (its
    grant is queued) instead of telling the approver nothing was changed while the approval stood (and the sweep
    granted it later), as it did before."""
    edge, proxy, upstream, slack = partitioned
    command = command_body("U0DEV1", "request lb-prod 30m approved, the answer lost").encode()
    status, answer = post(edge, command, signed(command, FORM))
    assert status == 200, answer[:300]
    [request_id] = [member.decode() for member in upstream.smembers("jit:open")]

    proxy.hold(b"EXEC\r\n", seconds=3.0, once=True)
    payload = view_click_payload("U0APPROVER1", "jit_approve", request_id, home_view("U0APPROVER1"))
    click = form_body(payload).encode()
    assert post(edge, click, signed(click, FORM))[0] == 200

    deadline = time.monotonic() + 15
    while not upstream.keys(f"rq:job:grant-{request_id}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert json.loads(upstream.get(f"jit:req:{request_id}") or b"{}")["status"] == "approved"
    assert upstream.keys(f"rq:job:grant-{request_id}"), "the counted approval's grant was not queued"
    assert not any("unavailable" in dm["text"] for dm in slack.dms("U0APPROVER1"))


@pytest.mark.parametrize("refusal", ["maxmemory", "replica"])
def test_a_redis_that_answers_but_takes_no_write_is_unavailable_not_a_500_and_healthz_says_so(
    partitioned: Partitioned, refusal: str
) -> None:
    """Redis out of memory (maxmemory with noeviction) or a replica (a master a failover demoted, behind a plain
    REDIS_URL) answers PING and refuses every write: a command is told jit-lb is unavailable and a click answered
    200 (both were 500s: OOM and READONLY errors reached aiohttp), and /healthz answers 503 (it said ok)."""
    edge, _, upstream, _ = partitioned
    if refusal == "maxmemory":
        upstream.config_set("maxmemory-policy", "noeviction")
        upstream.config_set("maxmemory", "1")
    else:
        upstream.config_set("replica-read-only", "yes")
        upstream.replicaof("127.0.0.1", str(free_port()))  # a master that is not there: it stays a replica
    try:
        command = command_body("U0DEV1", "request lb-prod 30m redis takes no write").encode()
        status, answer = post(edge, command, signed(command, FORM))
        health = edge.exchange("GET", "/healthz", [], b"")
        payload = view_click_payload("U0APPROVER1", "jit_approve", "jit-abcdef", home_view("U0APPROVER1"))
        click = form_body(payload).encode()
        clicked = post(edge, click, signed(click, FORM))
    finally:
        upstream.config_set("maxmemory", "0")
        upstream.replicaof("NO", "ONE")
    assert status == 200 and "jit-lb is unavailable" in json.loads(answer)["text"], answer[:300]
    assert health == (503, b'{"ok": false}')
    assert clicked[0] == 200


def test_slacks_url_verification_is_answered_while_the_replay_check_cannot_reach_redis(
    partitioned: Partitioned,
) -> None:
    """Slack checking the events URL does nothing but ask for its challenge back: answered even while the replay
    check's answer is lost (the check not taking anything left it unanswered)."""
    edge, proxy, _, _ = partitioned
    proxy.hold(b"jit:signed:", seconds=3.0)
    challenge = b'{"type": "url_verification", "challenge": "abc123", "token": "t"}'
    assert post(edge, challenge, signed(challenge, JSON)) == (200, b'{"challenge": "abc123"}')
