"""The `/jit` grammar: what parses, what is refused, and what a request is built from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jit_lb.access.commands import (
    ExtendCommand,
    HelpCommand,
    ListCommand,
    RequestCommand,
    RevokeCommand,
    TargetsCommand,
    build_request,
    parse_command,
)
from jit_lb.access.errors import CommandError
from jit_lb.access.policy import parse_policy
from tests.helpers import valid

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "request lb-prod 30m debugging 502s",
            RequestCommand("lb-prod", timedelta(minutes=30), None, "debugging 502s"),
        ),
        ("request lb-prod 1h30m why", RequestCommand("lb-prod", timedelta(minutes=90), None, "why")),
        ("request lb-prod why not", RequestCommand("lb-prod", None, None, "why not")),
        (
            "request lb-prod 90s --ip 203.0.113.9 x",
            RequestCommand("lb-prod", timedelta(seconds=90), "203.0.113.9", "x"),
        ),
        ("request lb-prod --ip 2001:db8::1 x", RequestCommand("lb-prod", None, "2001:db8::1", "x")),
        (
            "request lb-prod 5m 2 users see 502s",
            RequestCommand("lb-prod", timedelta(minutes=5), None, "2 users see 502s"),
        ),
        ("list", ListCommand()),
        ("targets", TargetsCommand()),
        ("", HelpCommand()),
        ("help", HelpCommand()),
        ("dance", HelpCommand(unknown="dance")),
        ("revoke jit-abcdef", RevokeCommand("jit-abcdef")),
        ("extend jit-abcdef 15m still digging", ExtendCommand("jit-abcdef", timedelta(minutes=15), "still digging")),
    ],
)
def test_parses(text: str, expected: object) -> None:
    """Well-formed commands parse into their typed form."""
    assert expected == parse_command(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("request lb-prod 30n typo", "`30n` is not a duration"),
        ("request lb-prod 30m", "a reason is required"),
        ("request lb-prod", "a reason is required"),
        ("request", "name a target"),
        ("request lb-prod 0m why", "is zero"),
        ("request lb-prod --ip", "`--ip` needs an address"),
        ("request lb-prod --force why", "unknown option `--force`"),
        ("revoke", "usage: `/jit revoke"),
        ("revoke 42", "not a request id"),
        ("list everything", "takes no arguments"),
        ("request lb-prod 30m " + "x" * 600, "keep it under 500"),
    ],
)
def test_refuses(text: str, expected: str) -> None:
    """Malformed commands are refused with a message naming the problem."""
    with pytest.raises(CommandError) as caught:
        parse_command(text)
    assert expected in str(caught.value)


def test_request_built_from_policy() -> None:
    """A request takes the target's default duration, the principal's CIDR, and the pending TTL."""
    policy = parse_policy(valid())
    request = build_request(policy, "U0DEV1", RequestCommand("lb-prod", None, None, "why"), NOW)("jit-abcdef")
    assert (request.duration_seconds, request.cidr, request.pending_until) == (
        1800,
        "203.0.113.7/32",
        NOW + timedelta(minutes=15),
    )


@pytest.mark.parametrize(
    ("user", "command", "expected"),
    [
        ("U0DEV1", RequestCommand("lb-prod", timedelta(hours=2), None, "x"), "longer than `lb-prod` allows"),
        ("U0DEV1", RequestCommand("lb-prod", timedelta(seconds=5), None, "x"), "shorter than `lb-prod` allows"),
        ("U0DEV1", RequestCommand("lb-nope", None, None, "x"), "unknown target `lb-nope`"),
        ("U0STRANGER", RequestCommand("lb-prod", None, None, "x"), "not allowed to request"),
        ("U0DEV1", RequestCommand("lb-prod", None, "203.0.113.9", "x"), "does not let requesters name an address"),
    ],
)
def test_request_refused_by_policy(user: str, command: RequestCommand, expected: str) -> None:
    """Requests outside the policy are refused naming why."""
    with pytest.raises(CommandError) as caught:
        build_request(parse_policy(valid()), user, command, NOW)
    assert expected in str(caught.value)
