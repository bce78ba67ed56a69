"""NGINX grants end to end: real HTTP from 127.0.0.2 through a real NGINX, through the Procfile's processes."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.haproxy import http_status
from devtools.moto_server import Network
from devtools.nginx import NginxServer, nginx_binary
from devtools.stack import Stack
from tests.helpers import APPROVALS, ask, card_ts, click, granted, stack_policy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.nginx,
    pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (.ci/run installs it)"),
]

SOURCE = "127.0.0.2"
REQUESTER = "U0DEV4"


def nginx_policy(server: NginxServer) -> Any:
    """The stack's policy with an NGINX target that U0DEV4 (at 127.0.0.2) may request."""

    def build(network: Network) -> dict[str, Any]:
        policy = stack_policy(network)
        policy["principals"][REQUESTER] = {"source_cidr": f"{SOURCE}/32"}
        policy["admins"] = ["U0ADMIN"]
        policy["targets"]["edge-nginx"] = {
            "description": "The edge NGINX",
            "min_duration": "1s",
            "max_duration": "1h",
            "approvers": ["U0APPROVER1", "U0APPROVER2"],
            "requesters": [REQUESTER],
            "grant": server.grant_spec(),
        }
        return policy

    return build


@pytest.fixture(name="nginx", scope="module")
def fixture_nginx() -> Iterator[NginxServer]:
    with NginxServer(shutdown_timeout="2s") as server:
        yield server


@pytest.fixture(name="stack", scope="module")
def fixture_stack(nginx: NginxServer) -> Iterator[Stack]:
    env = {"JIT_REVOKE_RETRY_INTERVALS": "1,1"}
    with Stack(policy=nginx_policy(nginx), sweep_interval=2.0, extra_env=env) as stack:
        yield stack


@pytest.fixture(autouse=True, name="clean")
def fixture_clean(nginx: NginxServer) -> Iterator[None]:
    yield
    nginx.extra_file.write_text("", encoding="utf-8")


def status(nginx: NginxServer, connection: http.client.HTTPConnection | None = None) -> int:
    """GET / through NGINX from 127.0.0.2; a fresh connection unless one is given; 0 when the connection was cut."""
    try:
        return http_status(nginx.port, SOURCE, connection)
    except (OSError, http.client.HTTPException):
        return 0


def allow_lines(nginx: NginxServer) -> list[str]:
    return Path(nginx.allow_file).read_text(encoding="utf-8").splitlines()


def test_a_source_is_refused_then_allowed_during_its_grant_then_refused_after(stack: Stack, nginx: NginxServer) -> None:
    """403 before; 200 during the grant; 403 after, on a fresh connection and on one kept alive since the grant."""
    assert status(nginx) == 403
    request_id = granted(stack, REQUESTER, "request edge-nginx 5s check the edge")
    assert status(nginx) == 200
    assert [line for line in allow_lines(nginx) if request_id in line]
    keep_alive = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=5, source_address=(SOURCE, 0))
    try:
        assert status(nginx, keep_alive) == 200
        stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="the revoke")
        assert status(nginx) == 403
        assert status(nginx, keep_alive) != 200
    finally:
        keep_alive.close()
    stack.wait_for(lambda: "grant.activity" in stack.events(request_id), what="the session's activity record")
    records = {record["event"]: record for record in stack.audit(request_id)}
    assert records["grant.applied"]["kind"] == "nginx_allowlist"
    assert records["grant.revoked"]["verified"] is True
    assert records["grant.activity"]["changes"] == []
    assert allow_lines(nginx) == []


def test_a_configuration_that_does_not_test_is_never_loaded(stack: Stack, nginx: NginxServer) -> None:
    """Someone broke another included file: the grant fails in NGINX's words, NGINX keeps running unchanged."""
    nginx.extra_file.write_text("this is not a directive;\n", encoding="utf-8")
    workers = nginx.workers()

    request_id = granted_or_failed(stack, "request edge-nginx 30s while the config is broken")

    failed = next(record for record in stack.audit(request_id) if record["event"] == "grant.failed")
    assert 'unknown directive "this"' in failed["error"]
    assert workers == nginx.workers()
    assert allow_lines(nginx) == []
    assert status(nginx) == 403


def test_a_revoke_that_cannot_reload_is_retried_told_and_done_once_fixed(stack: Stack, nginx: NginxServer) -> None:
    """The configuration broke during the grant: the revoke fails and retries, approvers are told; fixed, it ends."""
    request_id = granted(stack, REQUESTER, "request edge-nginx 4s then the config breaks")
    nginx.extra_file.write_text("this is not a directive;\n", encoding="utf-8")
    stack.wait_for(
        lambda: stack.events(request_id).count("grant.revoke_failed") >= 3, timeout=60, what="three failed revokes"
    )
    alarm = stack.wait_for(
        lambda: [
            message
            for message in stack.slack.thread(APPROVALS, card_ts(stack, request_id))
            if "Revoking" in str(message.get("text")) and "failed" in str(message.get("text"))
        ],
        what="the approvers told",
    )
    assert "<@U0APPROVER1>" in alarm[-1]["text"] and "<@U0APPROVER2>" in alarm[-1]["text"]
    assert "unknown directive" in alarm[-1]["text"] and "by hand: remove the line, fix, reload" in alarm[-1]["text"]
    # Still admitted, and still in the file for the sweep: nothing pretends the revoke happened.
    assert status(nginx) == 200
    assert [line for line in allow_lines(nginx) if request_id in line]

    nginx.extra_file.write_text("", encoding="utf-8")

    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=30, what="the revoke once fixed")
    assert status(nginx) == 403
    assert allow_lines(nginx) == []


def test_lines_are_judged_by_the_sweep_and_a_hand_written_one_reported(stack: Stack, nginx: NginxServer) -> None:
    """Lines ending far ahead (forged), past their end, or naming an ended request go; one without a marker stays."""
    ended = granted(stack, REQUESTER, "request edge-nginx 2s soon over")
    stack.wait_for(lambda: "grant.revoked" in stack.events(ended), timeout=20, what="the first grant's end")
    soon = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    Path(nginx.allow_file).write_text(
        f"allow {SOURCE}/32; # jit-lb: jit-forged2 until 2099-01-01T00:00:00Z\n"
        "allow 127.0.0.4/32; # jit-lb: jit-passed until 2020-01-01T00:00:00Z\n"
        f"allow 127.0.0.5/32; # jit-lb: {ended} until {soon}\n"
        "allow 127.0.0.3/32;\n",
        encoding="utf-8",
    )
    nginx.reload_by_hand()
    stack.wait_for(lambda: status(nginx) == 200, what="the forged line in force")

    def removed(lease: str) -> list[dict[str, Any]]:
        return [r for r in stack.audit() if r["event"] == "sweep.removed" and lease in r["leases_dropped"]]

    for lease in ("jit-forged2", "jit-passed", ended):
        stack.wait_for(lambda lease=lease: removed(lease), timeout=20, what=f"the sweep removing {lease}'s line")

    assert "further ahead" in str(removed("jit-forged2")[0]["why"])
    assert "end has passed" in str(removed("jit-passed")[0]["why"])
    assert "revoked" in str(removed(ended)[0]["why"])
    assert allow_lines(nginx) == ["allow 127.0.0.3/32;"]
    assert status(nginx) == 403
    reported = stack.wait_for(
        lambda: [r for r in stack.audit() if r["event"] == "sweep.reported" and r["object"] == "unmarked:127.0.0.3/32"]
    )
    assert "no jit-lb marker" in reported[0]["why"]
    Path(nginx.allow_file).write_text("", encoding="utf-8")
    nginx.reload_by_hand()


def test_a_lockdown_clears_the_allow_file(stack: Stack, nginx: NginxServer) -> None:
    """`/jit lockdown on` ends the NGINX grant (reason lockdown): its line gone, the source refused."""
    request_id = granted(stack, REQUESTER, "request edge-nginx 30m before the lockdown")
    assert status(nginx) == 200
    try:
        stack.client().command("U0ADMIN", "lockdown on suspected leak")
        stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="the lockdown's revoke")
    finally:
        stack.client().command("U0ADMIN", "lockdown off")
    ended = next(record for record in stack.audit(request_id) if record["event"] == "grant.revoked")
    assert (ended["reason"], ended["verified"]) == ("lockdown", True)
    assert allow_lines(nginx) == []
    assert status(nginx) == 403


def granted_or_failed(stack: Stack, text: str) -> str:
    """Run a request through approval until its grant is applied or has failed; return its id."""
    request_id, _ = ask(stack, REQUESTER, text)
    assert click(stack, "U0APPROVER1", "jit_approve", request_id) == 200
    stack.wait_for(
        lambda: {"grant.applied", "grant.failed"} & set(stack.events(request_id)), what="the grant's outcome"
    )
    return request_id
