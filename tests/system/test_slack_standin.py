"""The Slack stand-in answers the real slack_sdk client as Slack would, and records what it was sent."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.messages.blocks import approval_card
from devtools.slack_client import click_payload, command_payload
from devtools.slack_standin import TEST_TOKEN, SlackStandin, block_kit_errors, view_errors
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


def test_dm_to_a_user_id_lands_in_dms(standin: SlackStandin, client: WebClient) -> None:
    """A post to a user id answers a D-channel and shows in dms(), as does an ephemeral to that user."""
    posted = client.chat_postMessage(channel="U0DEV1", text="approved")
    client.chat_postEphemeral(channel="C0DEVS", user="U0DEV1", text="not yours")

    assert posted["channel"] == "D0U0DEV1"
    assert [m["text"] for m in standin.dms("U0DEV1")] == ["approved", "not yours"]


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
    card = approval_card(pending())
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
