"""Unused access ends early: an HAProxy grant nobody uses ends with reason `idle`; one in use runs on."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.haproxy import STICK_TABLE, http_status
from devtools.moto_server import Network
from devtools.stack import Stack
from tests.helpers import granted, stack_policy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.haproxy,
    pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (.ci/run installs it)"),
]

IDLE, BUSY = "127.0.0.7", "127.0.0.8"


def idle_policy(network: Network) -> dict[str, Any]:
    policy = stack_policy(network)
    policy["principals"]["U0DEV4"] = {"source_cidr": f"{BUSY}/32"}
    edge = policy["targets"]["edge-haproxy"]
    edge["requesters"] = ["U0DEV3", "U0DEV4"]
    edge["idle_timeout"] = "10s"
    edge["grant"]["stick_table"] = STICK_TABLE
    return policy


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    with Stack(policy=idle_policy, sweep_interval=2.0, with_haproxy=True) as stack:
        yield stack


def test_an_unused_grant_ends_idle_and_a_used_one_does_not(stack: Stack) -> None:
    """Both granted for 10 minutes; one source sends a request every 2 s, the other nothing: only that one ends."""
    assert stack.haproxy is not None
    port = stack.haproxy.port
    idle = granted(stack, "U0DEV3", "request edge-haproxy 10m will not use it")
    busy = granted(stack, "U0DEV4", "request edge-haproxy 10m will use it")
    assert http_status(port, BUSY) == 200
    started = time.monotonic()
    while "grant.revoked" not in stack.events(idle) and time.monotonic() - started < 25:
        assert http_status(port, BUSY) == 200
        time.sleep(2)
    ended = next(r for r in stack.audit(idle) if r["event"] == "grant.revoked")
    assert ended["reason"] == "idle"
    assert 9 <= time.monotonic() - started <= 20
    assert http_status(port, IDLE) == 403
    time.sleep(3)  # more than a check's period after the idle one ended
    assert "grant.revoked" not in stack.events(busy)
    assert http_status(port, BUSY) == 200
