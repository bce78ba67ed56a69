"""The `/jit` grammar (docs/command-and-slack.md): command text in, a typed command or a CommandError out."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from jit_lb.access.durations import format_duration, parse_duration
from jit_lb.access.errors import CommandError
from jit_lb.access.policy import Members, Policy, Target, host_address
from jit_lb.access.requests import ID_PATTERN, MAX_TARGETS, AccessRequest, part_id
from jit_lb.access.schedules import parse_start

MAX_REASON = 500


@dataclass(frozen=True)
class RequestCommand:
    target: str  # one target, or several joined by commas (`lb-prod,lb-alb`), checked by `parse_targets`
    duration: timedelta | None
    ip: str | None
    reason: str
    at: str | None = None  # `--at`, as typed: read against the clock and the policy by `build_request`

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.target.split(","))


@dataclass(frozen=True)
class ListCommand:
    pass


@dataclass(frozen=True)
class TargetsCommand:
    pass


@dataclass(frozen=True)
class HelpCommand:
    unknown: str | None = None


@dataclass(frozen=True)
class RevokeCommand:
    request_id: str


@dataclass(frozen=True)
class ExtendCommand:
    request_id: str
    duration: timedelta
    reason: str


@dataclass(frozen=True)
class CancelCommand:
    request_id: str


@dataclass(frozen=True)
class FormCommand:
    """`/jit` with no text: open the request modal."""


@dataclass(frozen=True)
class BreakGlassCommand:
    target: str
    duration: timedelta
    reason: str


@dataclass(frozen=True)
class LockdownCommand:
    action: Literal["on", "off", "status"]
    reason: str = ""


@dataclass(frozen=True)
class MfaCommand:
    """`/jit mfa enroll | status | reset <user>`."""

    words: tuple[str, ...]


Command = (
    RequestCommand
    | ListCommand
    | TargetsCommand
    | HelpCommand
    | RevokeCommand
    | ExtendCommand
    | CancelCommand
    | FormCommand
    | MfaCommand
    | BreakGlassCommand
    | LockdownCommand
)

USAGE = (
    "`/jit request <target>[,<target>…] [<duration>] [--ip <address>] [--at <time>] <reason…>`  ask for access "
    "(`--at`: a window starting then, `2026-12-24T02:00Z` or `HH:MM` UTC)\n"
    "`/jit list`  pending and active requests you can see\n"
    "`/jit revoke <request-id>`  end a grant now\n"
    "`/jit cancel <request-id>`  withdraw your own pending (or scheduled) request\n"
    "`/jit extend <request-id> <duration> <reason…>`  ask for more time (needs approval again)\n"
    "`/jit targets`  what you may request, with its limits\n"
    "`/jit mfa enroll` | `status`  your authenticator for step-up; `/jit mfa reset <@user>` (admins)\n"
    "`/jit breakglass <target> <duration> <reason…>`  emergency access without approval, reviewed afterwards\n"
    "`/jit lockdown on <reason…>` | `off` | `status`  end every grant and refuse new ones (admins)\n"
    "`/jit help`  this text\n"
    "`/jit`  with nothing after it: a form to request access\n"
    "Durations: `90s`, `30m`, `1h`, `1h30m`."
)


def parse_command(text: str) -> Command:
    """Parse the text after `/jit`; raise CommandError naming what is wrong."""
    words = text.split()
    if not words:
        return FormCommand()
    verb, rest = words[0].lower(), words[1:]
    parse = _PARSERS.get(verb)
    return parse(verb, rest) if parse is not None else HelpCommand(unknown=verb)


def _parse_simple(verb: str, rest: list[str]) -> Command:
    if rest:
        raise CommandError(f"`/jit {verb}` takes no arguments")
    simple: dict[str, Command] = {"list": ListCommand(), "targets": TargetsCommand(), "help": HelpCommand()}
    return simple[verb]


def _parse_one_id(verb: str, rest: list[str]) -> Command:
    if len(rest) != 1:
        raise CommandError(f"usage: `/jit {verb} <request-id>`")
    return RevokeCommand(_request_id(rest[0])) if verb == "revoke" else CancelCommand(_request_id(rest[0]))


def _parse_extend(_: str, rest: list[str]) -> Command:
    if len(rest) < 2:
        raise CommandError("usage: `/jit extend <request-id> <duration> <reason…>`")
    reason = _reason(rest[2:])
    return ExtendCommand(_request_id(rest[0]), _duration(rest[1]), reason)


def _parse_breakglass(_: str, rest: list[str]) -> Command:
    if len(rest) < 3:
        raise CommandError("usage: `/jit breakglass <target> <duration> <reason…>`")
    return BreakGlassCommand(rest[0].lower(), _duration(rest[1]), _reason(rest[2:]))


def _parse_lockdown(_: str, rest: list[str]) -> Command:
    action = rest[0].lower() if rest else ""
    if action == "on":
        return LockdownCommand("on", _reason(rest[1:]))
    if action in {"off", "status"} and len(rest) == 1:
        return LockdownCommand("off" if action == "off" else "status")
    raise CommandError("usage: `/jit lockdown on <reason…>`, `/jit lockdown off`, `/jit lockdown status`")


_PARSERS: dict[str, Callable[[str, list[str]], Command]] = {
    "request": lambda _, rest: _parse_request(rest),
    "list": _parse_simple,
    "targets": _parse_simple,
    "help": _parse_simple,
    "revoke": _parse_one_id,
    "cancel": _parse_one_id,
    "extend": _parse_extend,
    "mfa": lambda _, rest: MfaCommand(tuple(rest[:3])),
    "breakglass": _parse_breakglass,
    "lockdown": _parse_lockdown,
}


def _parse_request(words: list[str]) -> RequestCommand:
    if not words:
        raise CommandError("name a target: `/jit request <target> [<duration>] <reason…>` (see `/jit targets`)")
    target, rest = parse_targets(words[0]), words[1:]
    if rest and rest[0].startswith(","):
        raise CommandError("no spaces around the commas between targets: `/jit request lb-prod,lb-alb …`")
    duration = None
    ip = None
    at = None
    while rest and (rest[0][:1].isdigit() or rest[0] in {"--ip", "--at"}):
        if rest[0] == "--ip":
            if ip is not None:
                raise CommandError("`--ip` is given twice")
            if len(rest) < 2:
                raise CommandError("`--ip` needs an address, e.g. `--ip 203.0.113.7`")
            ip, rest = rest[1], rest[2:]
        elif rest[0] == "--at":
            if at is not None:
                raise CommandError("`--at` is given twice")
            if len(rest) < 2:
                raise CommandError("`--at` needs a time, e.g. `--at 2026-12-24T02:00Z` or `--at 02:00` (UTC)")
            at, rest = rest[1], rest[2:]
        else:
            if duration is not None:
                # The reason may well start with a number ("2 users see 502s"), once the duration is read.
                break
            duration, rest = _duration(rest[0]), rest[1:]
    if rest and rest[0].startswith("--"):
        raise CommandError(f"unknown option `{rest[0]}` (only `--ip <address>` and `--at <time>` are known)")
    return RequestCommand(target=target, duration=duration, ip=ip, reason=_reason(rest), at=at)


def parse_targets(word: str) -> str:
    """One target, or several joined by commas (at most MAX_TARGETS, each once); the word as the command keeps it.

    CommandError names what is wrong: an empty item (`lb-prod,` or a space after a comma), a target named
    twice, too many.
    """
    names = word.lower().split(",")
    if any(not name for name in names):
        raise CommandError(
            f"`{word[:80]}` has an empty target between commas: name each target once, "
            "with no spaces around the commas (`lb-prod,lb-alb`)"
        )
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise CommandError(f"`{twice[0][:64]}` is named twice: name each target once")
    if len(names) > MAX_TARGETS:
        raise CommandError(f"{len(names)} targets in one request; at most {MAX_TARGETS}")
    return ",".join(names)


def _duration(word: str) -> timedelta:
    try:
        return parse_duration(word.lower())
    except ValueError as err:
        raise CommandError(str(err)) from None


def _request_id(word: str) -> str:
    if not re.fullmatch(ID_PATTERN, word.lower()):
        raise CommandError(f"`{word}` is not a request id (they look like `jit-4k7m2q`)")
    return word.lower()


def _reason(words: list[str]) -> str:
    reason = " ".join(words).strip()
    if not reason:
        raise CommandError("a reason is required: say why you need access")
    if len(reason) > MAX_REASON:
        raise CommandError(f"the reason is {len(reason)} characters; keep it under {MAX_REASON}")
    return reason


def build_request(
    policy: Policy,
    user: str,
    command: RequestCommand,
    now: datetime,
    channel: str | None = None,
    members: Members = lambda _: [],
    emergency: bool = False,
) -> Callable[[str], AccessRequest]:
    """Check a request against the policy; return a builder taking the new id, or raise CommandError.

    `members` reads a usergroup's members, for requesters named by usergroup (directly or in a role).
    An `emergency` (break-glass) request is judged by its own rules, which the caller checked: the
    target's requesters, reason rule and freezes do not apply; the principal must still fit it.
    """
    target = policy.target_for(command.target)
    if target is None:
        known = ", ".join(f"`{name}`" for name in policy.targets_for(user, members)) or "none"
        raise CommandError(f"unknown target `{command.target}`; targets you may request: {known}")
    principal = policy.principals.get(user)
    if emergency:
        if principal is None or (principal.source_cidr if target.is_network else principal.aws_role_name) is None:
            raise CommandError(f"you have no source address or role for `{command.target}` under principals")
    elif not policy.may_request(user, target, members):
        raise CommandError(f"you are not allowed to request `{command.target}`")
    duration = command.duration or target.default_duration
    starts_at = _start_of(policy, command, now, emergency)
    if not emergency:
        check_duration(command.target, target, duration)
        check_reason(command.target, target, command.reason)
        if starts_at is None:
            check_freeze(policy, command.target, now)
        else:
            check_window_freeze(policy, command.target, starts_at, starts_at + duration)
    assert principal is not None  # may_request, or the emergency check above, found it
    cidr = principal.source_cidr if target.is_network else None
    if command.ip is not None:
        if not target.allow_requester_ip:
            raise CommandError(f"`{command.target}` does not let requesters name an address with `--ip`")
        if not target.is_network:
            raise CommandError(f"`--ip` means nothing for `{command.target}`, which grants an IAM policy")
        try:
            cidr = str(host_address(command.ip, allow_private=target.allow_private_ip))
        except ValueError as err:
            raise CommandError(str(err)) from None

    def build(request_id: str) -> AccessRequest:
        return AccessRequest(
            id=request_id,
            target=command.target,
            requester=user,
            reason=command.reason,
            duration_seconds=int(duration.total_seconds()),
            cidr=cidr,
            role_name=None if target.is_network else principal.aws_role_name,
            created_at=now,
            # A scheduled request waits for approvals at most `pending_ttl`, and never past its start.
            pending_until=min(now + policy.pending_ttl, starts_at) if starts_at else now + policy.pending_ttl,
            starts_at=starts_at,
            approvals_required=target.approvals_required,
            origin_channel=channel,
        )

    return build


def build_group(
    policy: Policy,
    user: str,
    command: RequestCommand,
    now: datetime,
    channel: str | None = None,
    members: Members = lambda _: [],
) -> Callable[[str], list[AccessRequest]]:
    """`build_request` for several targets: each judged by its own policy, one reason, duration and start.

    Returns a builder taking the request's (the group's) id and giving one part a target, stored under
    `part_id`; CommandError names the first target refused, and then nothing is built. A duration
    left out is the shortest of the targets' defaults, which every target must then allow.
    """
    names = command.targets
    duration = command.duration
    if duration is None:
        found = [policy.target_for(name) for name in names]
        duration = min((t.default_duration for t in found if t is not None), default=None)
    builders = [
        build_request(policy, user, replace(command, target=name, duration=duration), now, channel, members)
        for name in names
    ]

    def build(group: str) -> list[AccessRequest]:
        parts = [make(part_id(group, index)) for index, make in enumerate(builders, start=1)]
        return [part.model_copy(update={"group": group, "group_targets": names}) for part in parts]

    return build


def check_freeze(policy: Policy, name: str, now: datetime) -> None:
    """Raise CommandError while `name` is inside a freeze window, naming it (break-glass is not asked this)."""
    freeze = policy.freeze_of(name, now)
    if freeze is not None:
        until = freeze.to.strftime("%Y-%m-%d %H:%M UTC")
        raise CommandError(f"`{name}` is frozen until {until}: {freeze.reason}; only break-glass may grant it now")


def _start_of(policy: Policy, command: RequestCommand, now: datetime, emergency: bool) -> datetime | None:
    """A scheduled window's start (`--at`), within `limits.schedule_ahead`; None for access now."""
    if command.at is None:
        return None
    if emergency:
        raise CommandError("break-glass is access now: it takes no `--at`")
    return parse_start(command.at, now, policy.limits.schedule_ahead)


def check_window_freeze(policy: Policy, name: str, start: datetime, end: datetime) -> None:
    """Raise CommandError when a freeze of `name` overlaps a scheduled window [start, end), naming it."""
    freeze = policy.freeze_during(name, start, end)
    if freeze is not None:
        span = f"{freeze.from_:%Y-%m-%d %H:%M} UTC until {freeze.to:%Y-%m-%d %H:%M} UTC"
        raise CommandError(f"`{name}` is frozen from {span}: {freeze.reason}; the window would fall into it")


def check_reason(name: str, target: Target, reason: str) -> None:
    """Raise CommandError when the reason does not match the target's `reason_pattern`, with its hint."""
    if not target.matches_reason(reason):
        hint = target.reason_hint or f"it must match `{target.reason_pattern}`"
        raise CommandError(f"the reason for `{name}` does not follow its rule: {hint}")


def check_duration(name: str, target: Target, duration: timedelta) -> None:
    """Raise CommandError when `duration` is outside the target's limits."""
    if duration > target.max_duration:
        raise CommandError(
            f"{format_duration(duration)} is longer than `{name}` allows "
            f"(at most {format_duration(target.max_duration)})"
        )
    if duration < target.min_duration:
        raise CommandError(
            f"{format_duration(duration)} is shorter than `{name}` allows "
            f"(at least {format_duration(target.min_duration)})"
        )
