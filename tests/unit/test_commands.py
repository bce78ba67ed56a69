"""The `/jit` grammar: what parses, what is refused, and what a request is built from."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from jit_lb.access.commands import (
    CancelCommand,
    ExtendCommand,
    FormCommand,
    HelpCommand,
    ListCommand,
    RequestCommand,
    RevokeCommand,
    TargetsCommand,
    build_request,
    parse_command,
)
from jit_lb.access.errors import CommandError
from jit_lb.access.policy import host_address, parse_policy
from jit_lb.access.schedules import parse_start
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
        ("", FormCommand()),
        ("cancel jit-abcdef", CancelCommand("jit-abcdef")),
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
        # Several targets (docs/approvals.md): at most five, each once, no empty item, no space around a comma.
        ("request a,b,c,d,e,f why", "6 targets in one request; at most 5"),
        ("request lb-prod,lb-prod why", "`lb-prod` is named twice"),
        ("request lb-prod, why", "empty target between commas"),
        ("request lb-prod, lb-alb why", "empty target between commas"),
        ("request lb-prod ,lb-alb why", "no spaces around the commas"),
        ("request ,lb-alb why", "empty target between commas"),
        ("request lb-prod,,lb-alb why", "empty target between commas"),
        ("revoke jit-abcdef-9", "not a request id"),  # a part's id ends -1 … -5
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


@pytest.mark.parametrize(
    ("address", "allow_private", "expected"),
    [
        ("fe80::1%x;help;", False, "names a zone id"),
        ("fe80::1%eth0", True, "names a zone id"),
        ("127.0.0.1", False, "not a global unicast address"),
        ("10.1.2.3", False, "not a global unicast address"),
        ("169.254.169.254", False, "not a global unicast address"),
        ("100.64.0.1", False, "not a global unicast address"),
        ("192.0.2.10", False, "not a global unicast address"),
        ("2001:db8::1", False, "not a global unicast address"),
        ("fc00::1", False, "not a global unicast address"),
        ("1.2.3.4;help", False, "not a single IPv4 or IPv6 host address"),
        ("1.2.3.4\nhelp", False, "not a single IPv4 or IPv6 host address"),
        ("0.0.0.0", True, "not a host address"),  # noqa: S104 - the unspecified address is what is refused
    ],
)
def test_requester_ip_refusals(address: str, allow_private: bool, expected: str) -> None:
    """`--ip` takes one global unicast host; zone ids and separators never, private ranges only when allowed."""
    with pytest.raises(ValueError, match=re.escape(expected)):
        host_address(address, allow_private=allow_private)


@pytest.mark.parametrize(
    ("address", "allow_private", "expected"),
    [
        ("8.8.8.8", False, "8.8.8.8/32"),
        ("2606:4700::1111", False, "2606:4700::1111/128"),
        ("10.1.2.3", True, "10.1.2.3/32"),
        ("2001:DB8::1", True, "2001:db8::1/128"),
    ],
)
def test_requester_ip_accepts_hosts(address: str, allow_private: bool, expected: str) -> None:
    """A global host always passes; a private or documentation one when the target allows it."""
    assert expected == str(host_address(address, allow_private=allow_private))


def test_reason_rule_is_checked_with_its_hint() -> None:
    """A reason that does not follow the target's `reason_pattern` is refused, showing the target's hint."""
    data = valid()
    data["targets"]["lb-prod"].update(reason_pattern="^[A-Z]+-[0-9]+ ", reason_hint="start with the ticket, e.g. OPS-1")
    policy = parse_policy(data)
    with pytest.raises(CommandError, match=re.escape("start with the ticket, e.g. OPS-1")):
        build_request(policy, "U0DEV1", RequestCommand("lb-prod", None, None, "debugging"), NOW)
    build_request(policy, "U0DEV1", RequestCommand("lb-prod", None, None, "OPS-9 debugging"), NOW)


def test_at_is_read_as_typed_and_the_reason_follows() -> None:
    """`--at` may come before or after the duration; the reason is the rest of the line."""
    parsed = parse_command("request lb-prod --at 02:00 30m night window")
    assert parsed == RequestCommand("lb-prod", timedelta(minutes=30), None, "night window", "02:00")


def test_hh_mm_is_the_next_such_time_in_utc() -> None:
    """`HH:MM` is today's time in UTC when it is still ahead, else tomorrow's; ISO 8601 keeps its zone."""
    now = datetime(2026, 12, 2, 23, 45, tzinfo=UTC)
    ahead = timedelta(days=7)
    assert datetime(2026, 12, 3, 2, 0, tzinfo=UTC) == parse_start("02:00", now, ahead)
    assert datetime(2026, 12, 2, 23, 50, tzinfo=UTC) == parse_start("23:50", now, ahead)
    assert datetime(2026, 12, 3, 23, 45, tzinfo=UTC) == parse_start("23:45", now, ahead)
    assert datetime(2026, 12, 24, 1, 0, tzinfo=UTC) == parse_start("2026-12-24T02:00+01:00", now, ahead * 4)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2026-12-02T23:00Z", "is in the past"),
        ("2026-12-10T00:00Z", "more than 7d ahead"),
        ("2026-12-03T02:00", "names no time zone"),
        ("24:00", "is not a time"),
        ("soon", "is not a time"),
    ],
)
def test_a_start_that_is_past_too_far_or_unreadable_is_refused(text: str, why: str) -> None:
    """Each refusal names what was wrong with the time."""
    with pytest.raises(CommandError, match=why):
        parse_start(text, datetime(2026, 12, 2, 23, 45, tzinfo=UTC), timedelta(days=7))
