"""What the policy says of one person and one target, judged as the product judges it: the policy tools' one source.

A request is judged by `build_request`, the function the web uses, so that `policy explain` and
`policy test` can never say yes where `/jit request` says no. Usergroups are expanded through a
directory when one is given (Slack's, or `--usergroup` on the command line); without one their
members are unknown, and the tools say so rather than guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from jit_lb.access.commands import RequestCommand, build_request
from jit_lb.access.durations import format_duration
from jit_lb.access.errors import CommandError
from jit_lb.access.policy import ROLE_PREFIX, SLACK_USERGROUP, Policy, Target

# A usergroup's members; the function, or its answer for one group, is None when nobody here can say.
Directory = Callable[[str], list[str] | None] | None
Outcome = Literal["refused", "needs_approval", "auto_approved", "break_glass"]

# The reason a judged request carries when the tool was given none: its target's reason rule is then not judged.
_ANY_REASON = "(reason not judged)"


@dataclass
class People:
    """Who a list of policy names stands for, each user with every way the policy reaches them."""

    users: dict[str, list[str]] = field(default_factory=dict)  # user id -> how ("role:netops > usergroup S0NET")
    unknown_groups: dict[str, list[str]] = field(default_factory=dict)  # usergroups whose members nobody told us

    def add(self, user: str, how: str) -> None:
        self.users.setdefault(user, []).append(how)


def people_of(policy: Policy, names: Iterable[str], where: str, directory: Directory) -> People:
    """Expand a policy list (`where` names it: `targets.lb-prod.approvers`) to users, saying where each comes from."""
    people = People()

    def expand(name: str, how: str) -> None:
        if SLACK_USERGROUP.match(name):
            members = directory(name) if directory is not None else None
            if members is None:
                people.unknown_groups.setdefault(name, []).append(how)
                return
            for member in members:
                people.add(member, f"{how} > usergroup {name}")
            return
        people.add(name, how)

    for name in names:
        if name.startswith(ROLE_PREFIX):
            role = name.removeprefix(ROLE_PREFIX)
            for member in policy.roles.get(role, []):
                expand(member, f"{where} > {name} (roles.{role})")
        else:
            expand(name, where)
    return people


@dataclass(frozen=True)
class Verdict:
    """What would become of a request (or a break-glass) by one user for one target at one instant."""

    outcome: Outcome
    why: str = ""  # the refusal as the person would read it, or why the outcome is what it is
    approvers: frozenset[str] = frozenset()  # who could approve it (the requester never counts)
    approvals_required: int = 0
    unknown_groups: tuple[str, ...] = ()  # approver usergroups whose members nobody told us
    mfa: bool = False

    def describe(self) -> str:
        """One line a person reads: `needs approval: 1 of U0A, U0B` or `refused: …`."""
        if self.outcome == "refused":
            return f"refused: {self.why}"
        if self.outcome == "needs_approval":
            who = ", ".join(sorted(self.approvers)) or "nobody known"
            if self.unknown_groups:
                who += f" (and the members of {', '.join(self.unknown_groups)}, not known here)"
            text = f"needs approval: {self.approvals_required} of {who}"
            return text + (f"; {self.why}" if self.why else "")
        if self.outcome == "auto_approved":
            return f"auto-approved: {self.why}"
        return f"break-glass: {self.why}"


def judge_request(
    policy: Policy,
    user: str,
    name: str,
    now: datetime,
    directory: Directory = None,
    duration: timedelta | None = None,
    reason: str | None = None,
    on_call: bool = False,
) -> Verdict:
    """Judge `/jit request <name> [duration] <reason>` by `user` at `now`, as the web would (lockdown aside)."""
    judged = policy if reason is not None else _without_reason_rule(policy, name)
    members = known_members(directory)
    command = RequestCommand(target=name, duration=duration, ip=None, reason=reason or _ANY_REASON)
    try:
        build_request(judged, user, command, now, members=members)
    except CommandError as err:
        return Verdict("refused", str(err))
    target = policy.targets[name]
    asked = duration or target.default_duration
    approvers = people_of(policy, target.approvers, f"targets.{name}.approvers", directory)
    could = frozenset(approvers.users) - {user}
    auto = _auto_approval(target, asked, on_call)
    if auto is not None:
        return Verdict("auto_approved", auto, could, target.approvals_required, mfa=target.require_mfa)
    short = len(could) < target.approvals_required and not approvers.unknown_groups
    why = f"only {len(could)} approver(s) other than the requester: it cannot be approved" if short else ""
    return Verdict(
        "needs_approval",
        why,
        could,
        target.approvals_required,
        tuple(sorted(approvers.unknown_groups)),
        target.require_mfa,
    )


def judge_break_glass(
    policy: Policy, user: str, name: str, now: datetime, directory: Directory = None, duration: timedelta | None = None
) -> Verdict:
    """Judge `/jit breakglass <name> <duration>` by `user`, by the rules bot/service/commands.py applies."""
    rules = policy.break_glass
    if rules is None:
        return Verdict("refused", "the policy has no break_glass section")
    users = people_of(policy, rules.users, "break_glass.users", directory)
    if user not in users.users:
        unknown = (
            f" (members of {', '.join(sorted(users.unknown_groups))} not known here)" if users.unknown_groups else ""
        )
        return Verdict("refused", f"you may not use break-glass (`break_glass.users` in the policy){unknown}")
    target = policy.target_for(name)
    if target is None or not policy.break_glass_covers(name):
        return Verdict("refused", f"break-glass does not cover `{name}`")
    asked = duration or min(target.default_duration, rules.max_duration)
    if asked > rules.max_duration:
        return Verdict("refused", f"break-glass grants at most {format_duration(rules.max_duration)}")
    command = RequestCommand(target=name, duration=asked, ip=None, reason=_ANY_REASON)
    try:
        build_request(policy, user, command, now, members=known_members(directory), emergency=True)
    except CommandError as err:
        return Verdict("refused", str(err))
    why = f"granted at once for {format_duration(asked)}, reviewed within {format_duration(rules.review_within)}"
    return Verdict("break_glass", why, mfa=target.require_mfa)


def known_members(directory: Directory) -> Callable[[str], list[str]]:
    """The directory as the product asks it: a group nobody can read has no members (nobody gains a right by it)."""
    return lambda group: (directory(group) if directory is not None else None) or []


def _without_reason_rule(policy: Policy, name: str) -> Policy:
    """The policy with `name`'s reason rule lifted, for a judgement that was given no reason to judge."""
    target = policy.targets.get(name)
    if target is None or target.reason_pattern is None:
        return policy
    relaxed = target.model_copy(update={"reason_pattern": None})
    return policy.model_copy(update={"targets": {**policy.targets, name: relaxed}})


def _auto_approval(target: Target, duration: timedelta, on_call: bool) -> str | None:
    """Why the request would be approved without a click (on call), or None; `on_call`: PagerDuty says yes."""
    longest = target.auto_approve_limit()
    if longest is None or not on_call:
        return None
    if duration > longest:
        return None
    return f"the requester is on call, and {format_duration(duration)} is within {format_duration(longest)}"
