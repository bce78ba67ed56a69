"""Who a person is to the policy: who may approve a target, who may request it, who is an admin.

The policy names people three ways: Slack user ids, usergroup ids (S…, their members read from
Slack) and roles (`role:<name>`, the policy's own sets of both). Every judgement of a person
goes through here, so that roles and usergroups count the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from jit_lb.access.policy import Policy, Target
from jit_lb.access.requests import AccessRequest


class GroupDirectory(Protocol):
    """Where a usergroup's members are looked up (Slack's usergroups.users.list, in production)."""

    def members(self, group: str) -> list[str]:
        """The group's user ids; an empty list when they cannot be read, so that nobody gains a right by a failure."""
        ...


class Approvers:
    """The authorisation rules for people, over the policy in force (which a SIGHUP may replace)."""

    def __init__(self, directory: GroupDirectory, policy: Callable[[], Policy]) -> None:
        self.directory = directory
        self._policy = policy

    @property
    def policy(self) -> Policy:
        return self._policy()

    def of(self, target: Target | None) -> set[str]:
        """Every user who may approve `target`'s requests; nobody for a target that left the policy."""
        return self.policy.people(target.approvers, self.directory.members) if target is not None else set()

    def named(self, target: Target, requester: str) -> tuple[list[str], list[str]]:
        """Who may approve a request of `requester`, as the policy names them, without asking Slack: the user ids
        (roles expanded; never the requester) and the usergroups whose members may. The request modal shows it."""
        names = self.policy.expand_roles(target.approvers)
        users = sorted({who for who in names if who.startswith(("U", "W"))} - {requester})
        return users, sorted(who for who in names if who.startswith("S"))

    def may_approve(self, user: str, target: Target | None) -> bool:
        if target is None:
            return False
        if user in self.policy.named_users(target.approvers):
            return True  # named outright or through a role's user ids: no usergroup need be read
        return user in self.of(target)

    def may_see(self, user: str, request: AccessRequest, target: Target | None) -> bool:
        """Its requester and the target's approvers see a request in `/jit list`, and may revoke its grant."""
        return user == request.requester or self.may_approve(user, target)

    def may_request(self, user: str, target: Target) -> bool:
        return self.policy.may_request(user, target, self.directory.members)

    def targets_for(self, user: str) -> dict[str, Target]:
        """The targets `user` may request, by name."""
        return self.policy.targets_for(user, self.directory.members)

    def is_admin(self, user: str) -> bool:
        return self.policy.is_admin(user, self.directory.members)
