"""Break-glass rules (docs/operating.md): who may take access without approval, on which targets, for how long.

Beside the request transitions (requests.py `break_glass`): the web judges a break-glass here before
it is stored, and a worker judges it again here before it is applied or extended.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from jit_lb.access.durations import format_duration
from jit_lb.access.errors import LOCKED, CommandError
from jit_lb.access.policy import BreakGlass, Policy, Target
from jit_lb.access.requests import AccessRequest

Members = Callable[[str], list[str]]  # a usergroup's members (the approvers' directory)


def check_breakglass(
    policy: Policy, user: str, target_name: str, duration: timedelta, members: Members, locked: bool
) -> tuple[Target, BreakGlass]:
    """The target and rules of a break-glass `user` may take now; CommandError saying why not."""
    rules = policy.break_glass
    if locked:
        raise CommandError(LOCKED)
    if rules is None or user not in policy.people(rules.users, members):
        raise CommandError("you may not use break-glass (`break_glass.users` in the policy)")
    target = policy.target_for(target_name)
    if target is None or not policy.break_glass_covers(target_name):
        raise CommandError(f"break-glass does not cover `{target_name}`")
    if duration > rules.max_duration:
        raise CommandError(f"break-glass grants at most {format_duration(rules.max_duration)}")
    return target, rules


def still_covers(policy: Policy, request: AccessRequest, members: Members) -> bool:
    """Whether break-glass still covers this break-glass request's requester on its target, under `policy`."""
    rules = policy.break_glass
    users = policy.people(rules.users, members) if rules else set()
    return request.requester in users and policy.break_glass_covers(request.target)
