"""The product in Socket Mode, end to end: the web process holds a websocket to the Slack stand-in."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator

import pytest

from devtools.slack_client import click_payload, command_payload
from devtools.stack import Stack
from tests.helpers import APPROVALS, DEVS, stack_policy

pytestmark = pytest.mark.slow


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(
        policy=stack_policy, sweep_interval=2.0, usergroups={"S0NETOPS": ["U0NETOPS1"]}, socket_mode=True
    ) as stack:
        yield stack


def test_request_approve_grant_and_end_over_the_socket(stack: Stack) -> None:
    """A slash command and an approval click sent as envelopes run a request through grant to its end."""
    ack = stack.slack.send_envelope(
        "slash_commands", command_payload("U0DEV1", "request lb-prod 5s socket mode check", DEVS)
    )
    match = re.search(r"jit-[a-z0-9]{6}", ack["payload"]["text"])
    assert match, ack
    request_id = match.group(0)
    card = stack.slack.wait_for(
        lambda: next(
            (m for m in stack.slack.messages(APPROVALS) if request_id in m.get("text", "") and "thread_ts" not in m),
            None,
        )
    )

    click = click_payload("U0APPROVER1", "jit_approve", request_id, APPROVALS, card["ts"])
    assert "envelope_id" in stack.slack.send_envelope("interactive", click)

    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="grant.applied")
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="grant.revoked")
    assert stack.slack.socket_connected()


def test_healthz_in_socket_mode(stack: Stack) -> None:
    """/healthz still answers 200 over HTTP while the app talks to Slack over the socket."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.web_ports[0]}/healthz", timeout=5) as answer:
        assert answer.status == 200
