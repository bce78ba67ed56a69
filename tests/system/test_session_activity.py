"""What happened during an HAProxy session, end to end: the Procfile's processes, a real HAProxy, real HTTP."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.haproxy import STICK_TABLE, http_status
from devtools.moto_server import Network
from devtools.slack_standin import block_kit_errors
from devtools.stack import Stack
from tests.helpers import APPROVALS, card_ts, granted, stack_policy
from workers.providers.haproxy import RuntimeApi

pytestmark = [
    pytest.mark.slow,
    pytest.mark.haproxy,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)"),
]

SOURCE = "127.0.0.7"


def policy(network: Network) -> dict[str, Any]:
    """The stack's policy, its HAProxy target counting use in the stick table the test HAProxy tracks."""
    rules = stack_policy(network)
    rules["targets"]["edge-haproxy"]["grant"]["stick_table"] = STICK_TABLE
    return rules


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=policy, sweep_interval=2.0, with_haproxy=True) as stack:
        yield stack


def ended(stack: Stack, request_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`/jit revoke` by the requester; the `grant.activity` record and the summary posted in the thread."""
    stack.client().command("U0DEV3", f"revoke {request_id}")
    stack.wait_for(lambda: "grant.activity" in stack.events(request_id), timeout=20, what="grant.activity")
    record = next(r for r in stack.audit(request_id) if r["event"] == "grant.activity")
    ts = card_ts(stack, request_id)
    summary = stack.wait_for(
        lambda: next((m for m in stack.slack.thread(APPROVALS, ts) if m["text"].startswith(":lock:")), None),
        what="the summary in the thread",
    )
    assert block_kit_errors(summary["blocks"]) == []
    return record, summary


def test_a_session_shows_the_server_put_in_maintenance_and_the_sources_requests(stack: Stack) -> None:
    """Three requests from 127.0.0.7 are its use; a server set to maintenance by hand is the session's change."""
    assert stack.haproxy is not None
    request_id = granted(stack, "U0DEV3", "request edge-haproxy 30s check the edge")
    assert [http_status(stack.haproxy.port, SOURCE) for _ in range(3)] == [200, 200, 200]
    api = RuntimeApi(stack.haproxy.runtime_api_unix)
    api.command("set server app/app state maint")
    try:
        record, summary = ended(stack, request_id)
    finally:
        api.command("set server app/app state ready")

    assert [change["what"] for change in record["changes"]] == ["backend app", "backend app: server app"]
    assert record["changes"][1]["before"].startswith("UP")
    assert record["changes"][1]["after"].startswith("MAINT")
    assert (record["connections"], record["http_requests"]) == (3, 3)
    assert record["bytes_in"] > 0
    assert record["bytes_out"] > 0
    assert summary["text"].endswith("2 changes during the session. 3 HTTP requests from its source.")
    assert "backend app: server app: UP" in str(summary["blocks"])


def test_a_session_without_changes_or_use_says_so(stack: Stack) -> None:
    """Nothing changed and no request came: no changes, and zero counts, said as such."""
    request_id = granted(stack, "U0DEV3", "request edge-haproxy 30s only looking")
    record, summary = ended(stack, request_id)

    assert record["changes"] == []
    assert (record["connections"], record["http_requests"], record["bytes_in"], record["bytes_out"]) == (0, 0, 0, 0)
    assert summary["text"].endswith("No changes during the session. 0 HTTP requests from its source.")
