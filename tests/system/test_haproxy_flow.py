"""HAProxy grants end to end: real HTTP from a distinct loopback source through a real HAProxy."""

from __future__ import annotations

import http.client
import shutil
import time
from collections.abc import Iterator

import pytest

from devtools.haproxy import http_status
from devtools.stack import Stack
from tests.helpers import granted, stack_policy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.haproxy,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)"),
]

SOURCE = "127.0.0.7"


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=stack_policy, sweep_interval=2.0, with_haproxy=True) as stack:
        yield stack


def status(stack: Stack, connection: http.client.HTTPConnection | None = None) -> int:
    """GET / through HAProxy from 127.0.0.7; a fresh connection unless one is given."""
    assert stack.haproxy is not None
    return http_status(stack.haproxy.port, SOURCE, connection)


def test_haproxy_grant_opens_and_closes_real_access(stack: Stack) -> None:
    """403 before, 200 during the grant, and 403 after, also on a keep-alive connection opened during it."""
    assert status(stack) == 403
    request_id = granted(stack, "U0DEV3", "request edge-haproxy 5s check the edge")
    assert status(stack) == 200
    keep_alive = http.client.HTTPConnection(
        "127.0.0.1", stack.haproxy.port if stack.haproxy else 0, timeout=5, source_address=(SOURCE, 0)
    )
    try:
        assert status(stack, keep_alive) == 200
        stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="the revoke")
        assert status(stack) == 403
        try:
            after = status(stack, keep_alive)
        except (OSError, http.client.HTTPException):
            after = 0  # the connection was cut: as good as a refusal
        assert after != 200
    finally:
        keep_alive.close()
    revoked = next(r for r in stack.audit(request_id) if r["event"] == "grant.revoked")
    assert revoked["verified"] is True


def test_haproxy_reload_puts_active_grants_back(stack: Stack) -> None:
    """After an HAProxy reload drops runtime entries, the sweep restores the active grant within its interval."""
    assert stack.haproxy is not None
    request_id = granted(stack, "U0DEV3", "request edge-haproxy 30s survive a reload")
    assert status(stack) == 200
    stack.haproxy.reload()
    deadline = time.monotonic() + 10
    while status(stack) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status(stack) == 200
    stack.client().command("U0DEV3", f"revoke {request_id}")
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=20, what="the revoke")
    assert status(stack) == 403
