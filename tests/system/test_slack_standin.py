"""The Slack stand-in answers the real slack_sdk client as Slack would, and records what it was sent; the signed
requests of devtools.slack_client are read by Bolt as Slack's own."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from slack_bolt import Ack, App, BoltRequest
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from devtools.ports import free_port
from devtools.slack_client import (
    SlackClient,
    click_payload,
    command_payload,
    inputs,
    select,
    text_input,
    view_submission_payload,
)
from devtools.slack_standin import TEST_TOKEN, SlackStandin, block_kit_errors, view_errors
from slack_out.cards import approval_card
from tests.helpers import pending

APP_TOKEN = "xapp-1-test"


@pytest.fixture(name="standin")
def fixture_standin() -> Iterator[SlackStandin]:
    with SlackStandin() as standin:
        yield standin


@pytest.fixture(name="client")
def fixture_client(standin: SlackStandin) -> WebClient:
    return WebClient(token=TEST_TOKEN, base_url=standin.api_url)


def test_post_message_returns_a_ts_and_is_recorded(standin: SlackStandin, client: WebClient) -> None:
    """chat.postMessage answers channel and a fresh ts, and the message shows in messages()."""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}]
    first = client.chat_postMessage(channel="C0APPROVALS", text="hello", blocks=blocks)
    second = client.chat_postMessage(channel="C0APPROVALS", text="again")

    assert first["channel"] == "C0APPROVALS"
    assert float(first["ts"]) < float(second["ts"])
    assert [("hello", first["ts"]), ("again", second["ts"])] == [
        (m["text"], m["ts"]) for m in standin.messages("C0APPROVALS")
    ]
    assert blocks == standin.messages("C0APPROVALS")[0]["blocks"]


def test_threaded_reply_shows_in_thread(standin: SlackStandin, client: WebClient) -> None:
    """A reply posted with thread_ts is listed by thread(), and the parent is not."""
    parent = client.chat_postMessage(channel="C0AUDIT", text="request jit-abc123")
    client.chat_postMessage(channel="C0AUDIT", text="approved", thread_ts=parent["ts"])
    client.chat_postMessage(channel="C0AUDIT", text="granted", thread_ts=parent["ts"])

    assert [m["text"] for m in standin.thread("C0AUDIT", parent["ts"])] == ["approved", "granted"]


def test_update_of_unknown_message_fails(standin: SlackStandin, client: WebClient) -> None:
    """chat.update of a ts never posted fails with message_not_found; a known one is recorded by updates()."""
    with pytest.raises(SlackApiError) as error:
        client.chat_update(channel="C0APPROVALS", ts="1.000001", text="nope")
    assert error.value.response["error"] == "message_not_found"

    posted = client.chat_postMessage(channel="C0APPROVALS", text="pending")
    client.chat_update(channel="C0APPROVALS", ts=posted["ts"], text="approved")
    assert [u["text"] for u in standin.updates("C0APPROVALS", posted["ts"])] == ["approved"]


def test_usergroup_members_are_the_configured_ones(standin: SlackStandin, client: WebClient) -> None:
    """usergroups.users.list answers the members set with set_usergroup, and no_such_subteam otherwise."""
    standin.set_usergroup("S0NETOPS", ["U0NETOPS1", "U0NETOPS2"])

    assert client.usergroups_users_list(usergroup="S0NETOPS")["users"] == ["U0NETOPS1", "U0NETOPS2"]
    with pytest.raises(SlackApiError) as error:
        client.usergroups_users_list(usergroup="S0NOBODY")
    assert error.value.response["error"] == "no_such_subteam"


def test_rate_limited_post_is_retried_past(standin: SlackStandin) -> None:
    """A 429 from fail_next is retried by RateLimitErrorRetryHandler and the post then succeeds."""
    client = WebClient(token=TEST_TOKEN, base_url=standin.api_url, retry_handlers=[RateLimitErrorRetryHandler()])
    standin.fail_next("chat.postMessage", status=429, retry_after=0)

    answer = client.chat_postMessage(channel="C0APPROVALS", text="eventually")

    assert answer["ok"]
    assert [c.response["ok"] for c in standin.calls("chat.postMessage")] == [False, True]
    assert [m["text"] for m in standin.messages("C0APPROVALS")] == ["eventually"]


def test_bad_token_is_refused(standin: SlackStandin) -> None:
    """A token that is not a bot token gets invalid_auth and nothing is stored."""
    with pytest.raises(SlackApiError) as error:
        WebClient(token="xoxp-user", base_url=standin.api_url).chat_postMessage(channel="C0X", text="hi")
    assert error.value.response["error"] == "invalid_auth"
    assert standin.messages() == []


def test_response_url_post_is_recorded(standin: SlackStandin) -> None:
    """A JSON post to response_url(name) answers 200 and is recorded with its name and body."""
    body = json.dumps({"text": "approved", "replace_original": True}).encode()
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL the stand-in made
        standin.response_url("cmd-1"), data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        assert (answer.status, answer.read()) == (200, b"ok")

    assert [c.args for c in standin.calls("response_url")] == [
        {"name": "cmd-1", "text": "approved", "replace_original": True}
    ]


def test_dm_to_a_user_id_lands_in_dms_and_an_ephemeral_in_ephemerals(standin: SlackStandin, client: WebClient) -> None:
    """A post to a user id answers a D-channel and shows in dms(); an ephemeral to that user shows in ephemerals()
    alone, so that a test tells the ephemeral refusal docs/policy.md promises from a DM."""
    posted = client.chat_postMessage(channel="U0DEV1", text="approved")
    client.chat_postEphemeral(channel="C0DEVS", user="U0DEV1", text="not yours")

    assert posted["channel"] == "D0U0DEV1"
    assert [m["text"] for m in standin.dms("U0DEV1")] == ["approved"]
    assert [m["text"] for m in standin.ephemerals("U0DEV1")] == ["not yours"]


@pytest.fixture(name="socket_client")
async def fixture_socket_client(standin: SlackStandin) -> AsyncIterator[SocketModeClient]:
    """slack_sdk's aiohttp Socket Mode client (what Bolt's adapter runs) for the stand-in, not yet connected."""
    client = SocketModeClient(app_token=APP_TOKEN, web_client=AsyncWebClient(base_url=standin.api_url))
    yield client
    await client.close()


def test_connections_open_needs_an_app_token(standin: SlackStandin) -> None:
    """apps.connections.open answers a websocket URL for an xapp- token and invalid_auth for a bot token."""
    answer = WebClient(base_url=standin.api_url).apps_connections_open(app_token=APP_TOKEN)
    assert answer["url"].startswith(standin.socket_url + "?ticket=")

    with pytest.raises(SlackApiError) as error:
        WebClient(base_url=standin.api_url).apps_connections_open(app_token=TEST_TOKEN)
    assert error.value.response["error"] == "invalid_auth"


async def test_socket_mode_client_is_greeted_and_its_acks_return(
    standin: SlackStandin, socket_client: SocketModeClient
) -> None:
    """The SDK client gets hello on connect, and send_envelope returns its acks, with a payload for a command."""
    received: list[dict[str, Any]] = []

    async def record(_: Any, message: dict[str, Any], __: str | None) -> None:
        received.append(message)

    async def ack(client: Any, request: SocketModeRequest) -> None:
        reply = {"text": f"heard {request.payload['text']}"} if request.accepts_response_payload else None
        await client.send_socket_mode_response(SocketModeResponse(request.envelope_id, payload=reply))

    socket_client.message_listeners.append(record)
    socket_client.socket_mode_request_listeners.append(ack)
    await socket_client.connect()

    command = await asyncio.to_thread(standin.send_envelope, "slash_commands", command_payload("U0DEV1", "help"))
    click = click_payload("U0APPROVER1", "jit_approve", "jit-abc123", "C0APPROVALS", "1700000000.000100")
    clicked = await asyncio.to_thread(standin.send_envelope, "interactive", click)

    assert standin.socket_connected()
    hello = received[0]
    assert (hello["type"], hello["num_connections"], hello["connection_info"]) == ("hello", 1, {"app_id": "A123456"})
    envelopes = [(m["type"], m["accepts_response_payload"]) for m in received[1:]]
    assert envelopes == [("slash_commands", True), ("interactive", False)]
    assert command["payload"] == {"text": "heard help"}
    assert clicked == {"envelope_id": received[2]["envelope_id"]}
    await socket_client.close()
    await asyncio.to_thread(standin.wait_for, lambda: not standin.socket_connected())


async def test_envelope_without_a_connection_or_an_ack_fails(
    standin: SlackStandin, socket_client: SocketModeClient
) -> None:
    """send_envelope raises AssertionError when no app is connected, and when the connected app never acks."""
    with pytest.raises(AssertionError, match="no Socket Mode connection"):
        await asyncio.to_thread(standin.send_envelope, "slash_commands", command_payload("U0DEV1", "help"))

    await socket_client.connect()
    with pytest.raises(AssertionError, match="no ack within"):
        await asyncio.to_thread(standin.send_envelope, "slash_commands", command_payload("U0DEV1", "help"), 0.5)


# --- Block Kit, refused as Slack refuses it --------------------------------------------------------


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


INVALID = {
    "a 3,001-character section": [section("x" * 3001)],
    "51 blocks": [section("hello")] * 51,
    "11 fields": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}],
    "an empty text": [section("")],
    "a 2,001-character field": [{"type": "section", "fields": [{"type": "plain_text", "text": "f" * 2001}]}],
    "a 151-character header": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
    "a 76-character button": [
        {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "b" * 76}}]}
    ],
    "11 context elements": [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
    "a mrkdwn header": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}],
    "a text of only spaces": [{"type": "section", "text": {"type": "plain_text", "text": "   "}}],
    "a block of no known type": [{"type": "banner", "text": "x"}],
    "a property Slack does not know": [{**section("hello"), "colour": "red"}],
    "a block_id used twice": [{**section("a"), "block_id": "same"}, {**section("b"), "block_id": "same"}],
    "a section with neither text nor fields": [{"type": "section"}],
    "a block that is not an object": ["section"],
}


@pytest.mark.parametrize("blocks", INVALID.values(), ids=INVALID.keys())
def test_post_message_refuses_invalid_blocks(standin: SlackStandin, client: WebClient, blocks: list[Any]) -> None:
    """chat.postMessage answers HTTP 200 with invalid_blocks and the errors, and no message is posted."""
    with pytest.raises(SlackApiError) as error:
        client.chat_postMessage(channel="C0APPROVALS", text="fallback", blocks=blocks)

    answer = error.value.response
    assert (answer.status_code, answer["ok"], answer["error"]) == (200, False, "invalid_blocks")
    assert answer["errors"] and all("[json-pointer:/blocks" in line for line in answer["errors"])
    assert standin.messages() == []


def test_a_valid_card_is_accepted(standin: SlackStandin, client: WebClient) -> None:
    """The approval card of a pending request, and 50 blocks of 3,000 characters, are taken."""
    card = approval_card(pending()).blocks
    client.chat_postMessage(channel="C0APPROVALS", text="card", blocks=card)
    client.chat_postMessage(channel="C0APPROVALS", text="full", blocks=[section("x" * 3000)] * 50)

    assert [card, [section("x" * 3000)] * 50] == [m["blocks"] for m in standin.messages("C0APPROVALS")]


def test_update_and_ephemeral_refuse_invalid_blocks(standin: SlackStandin, client: WebClient) -> None:
    """chat.update leaves the message as it was, and chat.postEphemeral shows nothing, when the blocks are invalid."""
    posted = client.chat_postMessage(channel="C0APPROVALS", text="pending", blocks=[section("pending")])
    for call in (
        lambda: client.chat_update(channel="C0APPROVALS", ts=posted["ts"], text="x", blocks=[section("")]),
        lambda: client.chat_postEphemeral(channel="C0DEVS", user="U0DEV1", text="x", blocks=[section("y" * 3001)]),
    ):
        with pytest.raises(SlackApiError) as error:
            call()
        assert error.value.response["error"] == "invalid_blocks"

    assert [section("pending")] == (standin.message("C0APPROVALS", posted["ts"]) or {})["blocks"]
    assert standin.updates("C0APPROVALS", posted["ts"]) == []
    assert standin.dms("U0DEV1") == []


def test_a_response_url_refuses_invalid_blocks(standin: SlackStandin) -> None:
    """A response_url post with blocks Slack would refuse gets 400 invalid_blocks and is not shown."""
    body = json.dumps({"blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}]}).encode()
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL the stand-in made
        standin.response_url("cmd-2"), data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310
    assert (error.value.code, error.value.read()) == (400, b"invalid_blocks")
    error.value.close()
    assert standin.responses("cmd-2") == []


def test_block_kit_errors_point_at_the_field() -> None:
    """The checker says what is wrong and where, as Slack does, and finds nothing in valid blocks."""
    assert block_kit_errors([section("x" * 3001)]) == [
        "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
    ]
    assert block_kit_errors([section("ok"), {"type": "divider"}]) == []
    assert block_kit_errors("[]") == ["must be an array of blocks [json-pointer:/blocks]"]


def test_views_are_checked_by_their_own_limits() -> None:
    """A modal's title is at most 24 characters and a view at most 100 blocks; a home view needs no title."""
    title = {"type": "plain_text", "text": "Request access"}
    assert view_errors({"type": "modal", "title": title, "blocks": [section("x")] * 100}) == []
    assert view_errors({"type": "home", "blocks": [section("x")]}) == []
    assert view_errors({"type": "modal", "title": {**title, "text": "t" * 25}, "blocks": [section("x")] * 101}) == [
        "must be less than 25 characters [json-pointer:/view/title/text]",
        "no more than 100 items allowed [json-pointer:/view/blocks]",
    ]


# --- views, as Slack answers them ------------------------------------------------------------------


def modal(callback_id: str = "jit_request", private_metadata: str = "", **extra: Any) -> dict[str, Any]:
    """A small valid modal: one input (block_id and action_id `reason`) and one section without a block_id."""
    return {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": private_metadata,
        "title": {"type": "plain_text", "text": "Request access"},
        "submit": {"type": "plain_text", "text": "Request"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Why"},
                "element": {"type": "plain_text_input", "action_id": "reason"},
            },
            section("Approvers are told at once."),
        ],
        **extra,
    }


def home(text: str) -> dict[str, Any]:
    return {"type": "home", "blocks": [section(text)]}


def refused(call: Callable[[], Any]) -> dict[str, Any]:
    """Slack's answer to a call the SDK raised SlackApiError for."""
    with pytest.raises(SlackApiError) as error:
        call()
    answer = error.value.response
    assert (answer.status_code, answer["ok"]) == (200, False)
    return dict(answer.data) if isinstance(answer.data, dict) else {}


def test_views_open_answers_the_view_as_slack_keeps_it(standin: SlackStandin, client: WebClient) -> None:
    """views.open answers the modal with an id, a hash and a block_id on every block, and views() lists it."""
    answer = client.views_open(trigger_id=standin.trigger_id("U0DEV1"), view=modal(private_metadata="jit-abc123"))

    view = answer["view"]
    assert (view["type"], view["callback_id"], view["private_metadata"]) == ("modal", "jit_request", "jit-abc123")
    assert view["id"].startswith("V") and view["hash"] and view["root_view_id"] == view["id"]
    assert view["blocks"][0] == modal()["blocks"][0]
    assert view["blocks"][1]["block_id"], "Slack names a block the app left unnamed"
    assert [view] == standin.views(user="U0DEV1", callback_id="jit_request")
    assert standin.views(user="U0OTHER") == standin.views(callback_id="jit_deny") == []


def test_a_trigger_id_opens_one_view_within_three_seconds(standin: SlackStandin, client: WebClient) -> None:
    """A trigger_id used twice, made over 3 s ago, or malformed is refused; one the stand-in did not make works once."""
    used = standin.trigger_id("U0DEV1")
    client.views_open(trigger_id=used, view=modal())
    written = "13345224609.738474920.8088930838d88f008e0"
    client.views_open(trigger_id=written, view=modal())

    assert refused(lambda: client.views_open(trigger_id=used, view=modal()))["error"] == "exchanged_trigger_id"
    assert refused(lambda: client.views_open(trigger_id=written, view=modal()))["error"] == "exchanged_trigger_id"
    old = standin.trigger_id("U0DEV1", age=3.5)
    assert refused(lambda: client.views_open(trigger_id=old, view=modal()))["error"] == "expired_trigger_id"
    assert refused(lambda: client.views_open(trigger_id="not-a-trigger", view=modal()))["error"] == "invalid_trigger_id"
    assert len(standin.views()) == 2


BAD_VIEWS = {
    "an empty section": (
        modal(blocks=[section("")]),
        "must be more than 0 characters [json-pointer:/view/blocks/0/text/text]",
    ),
    "an input without submit": (
        {key: value for key, value in modal().items() if key != "submit"},
        "must define `submit` to use an `input` block in modals [json-pointer:/view/blocks/0/input]",
    ),
    "a 25-character title": (
        modal(title={"type": "plain_text", "text": "t" * 25}),
        "must be less than 25 characters [json-pointer:/view/title/text]",
    ),
    "101 blocks": (modal(blocks=[section("x")] * 101), "no more than 100 items allowed [json-pointer:/view/blocks]"),
}  # fmt: skip


@pytest.mark.parametrize(("view", "says"), BAD_VIEWS.values(), ids=BAD_VIEWS.keys())
def test_a_view_with_invalid_blocks_is_refused(
    standin: SlackStandin, client: WebClient, view: dict[str, Any], says: str
) -> None:
    """Slack answers invalid_arguments with `[ERROR] …` messages; nothing opens and the trigger_id stays unused."""
    trigger = standin.trigger_id("U0DEV1")

    answer = refused(lambda: client.views_open(trigger_id=trigger, view=view))

    assert answer["error"] == "invalid_arguments"
    assert f"[ERROR] {says}" in answer["response_metadata"]["messages"]
    assert standin.views() == []
    assert client.views_open(trigger_id=trigger, view=modal())["ok"]


def test_each_method_takes_only_its_kind_of_view(standin: SlackStandin, client: WebClient) -> None:
    """views.open refuses a home view, views.publish a modal, and any of them a view past 250 kB."""
    opened = refused(lambda: client.views_open(trigger_id=standin.trigger_id(), view=home("hi")))
    published = refused(lambda: client.views_publish(user_id="U0DEV1", view=modal()))
    huge = home("x" * 2900) | {"blocks": [section("x" * 2900)] * 90, "private_metadata": "m" * 3000}
    big = refused(lambda: client.views_publish(user_id="U0DEV1", view=huge))

    assert (opened["error"], published["error"], big["error"]) == (
        "invalid_arguments",
        "invalid_arguments",
        "view_too_large",
    )
    assert standin.views() == [] and standin.home("U0DEV1") is None


def test_views_update_replaces_a_view_by_id_or_external_id(standin: SlackStandin, client: WebClient) -> None:
    """views.update keeps the id, changes the hash, and refuses a stale hash (hash_conflict) or an unknown view."""
    first = client.views_open(trigger_id=standin.trigger_id("U0DEV1"), view=modal(external_id="req-1"))["view"]

    second = client.views_update(
        view_id=first["id"], hash=first["hash"], view=modal(private_metadata="two", external_id="req-1")
    )["view"]
    third = client.views_update(external_id="req-1", view=modal(private_metadata="three", external_id="req-1"))
    stale = refused(lambda: client.views_update(view_id=first["id"], hash=first["hash"], view=modal()))
    unknown = refused(lambda: client.views_update(view_id="V0NOPE", view=modal()))

    assert (second["id"], third["view"]["id"]) == (first["id"], first["id"])
    assert second["hash"] != first["hash"]
    assert (stale["error"], unknown["error"]) == ("hash_conflict", "not_found")
    assert [(first["id"], "three")] == [(v["id"], v["private_metadata"]) for v in standin.views(user="U0DEV1")]
    taken = refused(lambda: client.views_open(trigger_id=standin.trigger_id(), view=modal(external_id="req-1")))
    assert taken["error"] == "duplicate_external_id"


def test_views_push_stacks_onto_the_modal_it_was_clicked_in(standin: SlackStandin, client: WebClient) -> None:
    """A pushed view names its root and the view under it; a stack holds at most 3 views (push_limit_reached)."""
    root = client.views_open(trigger_id=standin.trigger_id("U0DEV1"), view=modal())["view"]
    pushed = client.views_push(trigger_id=standin.trigger_id(view_id=root["id"]), view=modal("jit_mfa"))["view"]
    client.views_push(trigger_id=standin.trigger_id(view_id=pushed["id"]), view=modal("jit_mfa"))

    full = refused(lambda: client.views_push(trigger_id=standin.trigger_id(view_id=root["id"]), view=modal("x")))

    assert (pushed["root_view_id"], pushed["previous_view_id"]) == (root["id"], root["id"])
    assert full["error"] == "push_limit_reached"
    assert [v["callback_id"] for v in standin.views(user="U0DEV1")] == ["jit_request", "jit_mfa", "jit_mfa"]


def test_views_publish_keeps_one_home_per_user(standin: SlackStandin, client: WebClient) -> None:
    """Each publish replaces the user's App Home under the same id with a new hash; a stale hash is refused."""
    first = client.views_publish(user_id="U0DEV1", view=home("no grants"))["view"]
    second = client.views_publish(user_id="U0DEV1", view=home("one grant"), hash=first["hash"])["view"]
    stale = refused(lambda: client.views_publish(user_id="U0DEV1", view=home("x"), hash=first["hash"]))

    assert (second["id"], second["type"]) == (first["id"], "home") and second["hash"] != first["hash"]
    assert stale["error"] == "hash_conflict"
    assert (standin.home("U0DEV1") or {})["blocks"][0]["text"]["text"] == "one grant"
    assert standin.home("U0OTHER") is None and standin.views() == []


# --- files, uploaded as files_upload_v2 does it -----------------------------------------------------


def test_files_upload_v2_shares_the_bytes_in_the_channel(standin: SlackStandin, client: WebClient) -> None:
    """The SDK's three steps end in a file with these bytes, shared by a message in the channel."""
    answer = client.files_upload_v2(
        channel="C0APPROVALS", content=b"\x89PNG\r\n", filename="x.png", initial_comment="your code"
    )

    [shared] = standin.files("C0APPROVALS")
    assert (answer["file"]["id"], answer["file"]["name"], answer["file"]["mimetype"]) == (
        shared.id,
        "x.png",
        "image/png",
    )
    assert (shared.content, shared.title, shared.initial_comment) == (b"\x89PNG\r\n", "x.png", "your code")
    [(channel, ts)] = shared.shares
    assert (standin.message(channel, ts) or {})["files"] == [{"id": shared.id, "name": "x.png"}]
    assert [c.method for c in standin.calls()] == [
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]


def test_a_file_for_a_person_goes_to_their_dm_channel(standin: SlackStandin, client: WebClient) -> None:
    """channel_id takes a conversation id, never a user id (as Slack); `channels` takes a user id for their DM."""
    wrong = refused(lambda: client.files_upload_v2(channel="U0DEV1", content=b"qr", filename="qr.png"))
    dm = client.conversations_open(users="U0DEV1")["channel"]["id"]
    client.files_upload_v2(channel=dm, content=b"one", filename="qr.png")
    client.files_upload_v2(channels=["U0DEV1"], content=b"two", filename="qr.png")

    assert wrong["error"] == "invalid_arguments"
    assert "[json-pointer:/channel_id]" in wrong["response_metadata"]["messages"][0]
    assert [f.content for f in standin.files("U0DEV1")] == [b"one", b"two"] == [f.content for f in standin.files(dm)]
    assert standin.files("C0APPROVALS") == []


def test_chat_delete_takes_the_conversation_id_and_only_the_apps_messages(
    standin: SlackStandin, client: WebClient
) -> None:
    """chat.delete answers channel and ts; a user id, an unknown ts or a second delete are refused as Slack does."""
    posted = client.chat_postMessage(channel="U0DEV1", text="otpauth://totp/x?secret=ABC")
    by_user = refused(lambda: client.chat_delete(channel="U0DEV1", ts=posted["ts"]))
    unknown = refused(lambda: client.chat_delete(channel=posted["channel"], ts="1.000001"))
    assert standin.holding("secret=ABC") == [f"message {posted['channel']} {posted['ts']}"]

    answer = client.chat_delete(channel=posted["channel"], ts=posted["ts"])

    assert (answer["channel"], answer["ts"]) == (posted["channel"], posted["ts"])
    assert (by_user["error"], unknown["error"]) == ("channel_not_found", "message_not_found")
    assert refused(lambda: client.chat_delete(channel=posted["channel"], ts=posted["ts"]))["error"] == (
        "message_not_found"
    )
    assert standin.holding("secret=ABC") == []


def test_files_delete_removes_the_file_and_leaves_a_tombstone(standin: SlackStandin, client: WebClient) -> None:
    """files.delete answers ok; the file's bytes and title go, its share shows a tombstone; again: file_deleted."""
    dm = client.conversations_open(users="U0DEV1")["channel"]["id"]
    file_id = client.files_upload_v2(channel=dm, content=b"secret=ABC", filename="qr.png", title="t")["files"][0]["id"]
    assert standin.holding("secret=ABC") == [f"file {file_id}"]
    [share] = standin.files(dm)[0].shares

    assert client.files_delete(file=file_id)["ok"] is True

    assert standin.files() == []
    assert standin.holding("secret=ABC") == []
    assert (standin.message(*share) or {})["files"] == [{"id": file_id, "mode": "tombstone"}]
    assert refused(lambda: client.files_delete(file=file_id))["error"] == "file_deleted"
    assert refused(lambda: client.files_delete(file="F0NOTHERE"))["error"] == "file_not_found"


def test_an_upload_needs_its_fields_and_its_bytes(standin: SlackStandin, client: WebClient) -> None:
    """A missing length is invalid_arguments; completing a file whose bytes never came is file_not_found."""
    missing = refused(lambda: client.api_call("files.getUploadURLExternal", params={"filename": "x.png"}))
    started = client.files_getUploadURLExternal(filename="x.png", length=3)
    never = refused(lambda: client.files_completeUploadExternal(files=[{"id": started["file_id"]}], channel_id="C0X"))

    assert missing["response_metadata"]["messages"] == ["[ERROR] missing required field: length"]
    assert started["upload_url"].startswith(standin.upload_url_base)
    assert never["error"] == "file_not_found"
    assert standin.files() == []


async def test_the_async_client_uploads_too(standin: SlackStandin) -> None:
    """AsyncWebClient (what an AsyncApp is given) posts the bytes with aiohttp; they arrive the same."""
    client = AsyncWebClient(token=TEST_TOKEN, base_url=standin.api_url)
    await client.files_upload_v2(channel="C0APPROVALS", content=b"async bytes", filename="a.txt", title="A")

    assert [(f.filename, f.title, f.content) for f in standin.files()] == [("a.txt", "A", b"async bytes")]


# --- signed requests for the new surfaces, as Bolt reads them ------------------------------------------

SECRET = "test-signing-secret"


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        """No access log on the test's stderr."""


@pytest.fixture(name="bolt")
def fixture_bolt(standin: SlackStandin) -> Iterator[App]:
    """A plain Bolt app (none of jit-lb's code) served on loopback, its Web API the stand-in."""
    app = App(
        client=WebClient(token=TEST_TOKEN, base_url=standin.api_url),
        signing_secret=SECRET,
        process_before_response=True,  # the listener is done when the request is answered
    )
    server = make_server("127.0.0.1", free_port(), SlackRequestHandler(app), handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="bolt", daemon=True)
    thread.start()
    app.server_url = f"http://127.0.0.1:{server.server_port}"  # type: ignore[attr-defined]
    yield app
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(name="slack")
def fixture_slack(bolt: App, standin: SlackStandin) -> SlackClient:
    return SlackClient(bolt.server_url, SECRET, standin=standin)  # type: ignore[attr-defined]


def test_a_shortcut_opens_a_modal_with_a_trigger_the_standin_made(
    bolt: App, slack: SlackClient, standin: SlackStandin
) -> None:
    """The global shortcut reaches Bolt's shortcut listener, and its trigger_id opens a modal for that user."""

    @bolt.shortcut("jit_request")
    def handle(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        client.views_open(trigger_id=body["trigger_id"], view=modal(private_metadata=body["user"]["id"]))

    assert slack.shortcut("U0DEV1").status == 200
    opened = [(view["callback_id"], view["private_metadata"]) for view in standin.views("U0DEV1")]
    assert opened == [("jit_request", "U0DEV1")]


def test_a_command_and_a_click_carry_fresh_trigger_ids(bolt: App, slack: SlackClient, standin: SlackStandin) -> None:
    """Two commands open two modals: each request carries a trigger_id the stand-in made, used once."""

    @bolt.command("/jit")
    def handle(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        client.views_open(trigger_id=body["trigger_id"], view=modal())

    slack.command("U0DEV1", "")
    slack.command("U0DEV1", "")

    assert len(standin.views("U0DEV1")) == 2
    assert all(c.response["ok"] for c in standin.calls("views.open"))


def test_a_submission_carries_the_view_and_its_state(bolt: App, slack: SlackClient, standin: SlackStandin) -> None:
    """A view_submission of the opened modal reaches Bolt's view listener, whose errors answer the request."""
    seen: list[tuple[str, str, dict[str, Any]]] = []

    @bolt.view("jit_request")
    def handle(ack: Ack, view: dict[str, Any]) -> None:
        seen.append((view["id"], view["private_metadata"], view["state"]["values"]))
        ack(response_action="errors", errors={"reason": "Give a ticket number"})

    opened = WebClient(token=TEST_TOKEN, base_url=standin.api_url).views_open(
        trigger_id=standin.trigger_id("U0DEV1"), view=modal(private_metadata="jit-abc123")
    )["view"]
    answer = slack.submit("U0DEV1", inputs(reason=text_input("because")))

    assert answer.json() == {"response_action": "errors", "errors": {"reason": "Give a ticket number"}}
    assert seen == [
        (opened["id"], "jit-abc123", {"reason": {"reason": {"type": "plain_text_input", "value": "because"}}})
    ]


def test_a_submission_slack_could_not_send_is_refused_by_the_builder(standin: SlackStandin) -> None:
    """Values for an input the view lacks, of another kind, or an option it does not offer raise ValueError."""
    target = {
        "type": "input",
        "block_id": "target",
        "label": {"type": "plain_text", "text": "Target"},
        "element": {
            "type": "static_select",
            "action_id": "target",
            "options": [{"text": {"type": "plain_text", "text": "lb-prod"}, "value": "lb-prod"}],
        },
    }
    view = {**modal(), "blocks": [target, *modal()["blocks"]]}

    for values, says in (
        (inputs(ip=text_input("203.0.113.9")), "no input ip/ip"),
        (inputs(target=text_input("lb-prod")), "is a static_select, not a plain_text_input"),
        (inputs(target=select("lb-secret")), "offers no option 'lb-secret'"),
    ):
        with pytest.raises(ValueError, match=says):
            view_submission_payload("U0DEV1", values, view=view)
    forged = view_submission_payload("U0DEV1", inputs(target=select("lb-secret")), view=view, check=False)
    assert forged["view"]["state"]["values"]["target"]["target"]["selected_option"]["value"] == "lb-secret"


def test_clicks_in_a_modal_and_in_the_app_home_carry_their_view(
    bolt: App, slack: SlackClient, standin: SlackStandin
) -> None:
    """A click inside a view has a view container and the view; its trigger_id pushes onto that modal."""
    seen: list[tuple[str, str, str]] = []

    @bolt.action("jit_cancel")
    def handle(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        seen.append((body["container"]["type"], body["view"]["type"], body["actions"][0]["value"]))
        if body["view"]["type"] == "modal":
            client.views_push(trigger_id=body["trigger_id"], view=modal("jit_mfa"))

    button = {"type": "button", "action_id": "jit_cancel", "text": {"type": "plain_text", "text": "Cancel"}}
    actions = {"type": "actions", "block_id": "pending", "elements": [{**button, "value": "jit-abc123"}]}
    web = WebClient(token=TEST_TOKEN, base_url=standin.api_url)
    opened = web.views_open(trigger_id=standin.trigger_id("U0DEV1"), view=modal(blocks=[actions]))["view"]
    web.views_publish(user_id="U0DEV1", view={"type": "home", "blocks": [actions]})

    slack.view_click("U0DEV1", "jit_cancel", "jit-abc123", opened)
    slack.home_click("U0DEV1", "jit_cancel", "jit-abc123")

    assert seen == [("view", "modal", "jit-abc123"), ("view", "home", "jit-abc123")]
    [pushed] = standin.views("U0DEV1", "jit_mfa")
    assert pushed["root_view_id"] == opened["id"]


def test_app_home_opened_and_its_retry_reach_the_app(bolt: App, slack: SlackClient, standin: SlackStandin) -> None:
    """app_home_opened arrives as a JSON event_callback; a retry carries Slack's two retry headers."""
    seen: list[tuple[str, str, str | None, str | None]] = []

    @bolt.event("app_home_opened")
    def handle(event: dict[str, Any], request: BoltRequest, client: WebClient) -> None:
        retry = (
            request.headers.get("x-slack-retry-num", [None])[0],
            request.headers.get("x-slack-retry-reason", [None])[0],
        )
        seen.append((event["user"], event["tab"], *retry))
        client.views_publish(user_id=event["user"], view=home("hello"))

    assert slack.app_home_opened("U0DEV1").status == 200
    assert slack.app_home_opened("U0DEV1", retry_num=1, retry_reason="http_timeout").status == 200

    assert seen == [("U0DEV1", "home", None, None), ("U0DEV1", "home", "1", "http_timeout")]
    assert (standin.home("U0DEV1") or {})["blocks"][0]["text"]["text"] == "hello"


def test_url_verification_is_answered_and_a_bad_signature_is_not(bolt: App, slack: SlackClient) -> None:
    """Bolt answers url_verification with the challenge; the same request signed with another secret is a 401."""
    answer = slack.url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    forged = SlackClient(slack.url.removesuffix("/slack/events"), "another-secret").url_verification("x")

    assert (answer.status, answer.json()) == (
        200,
        {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"},
    )
    assert forged.status == 401
