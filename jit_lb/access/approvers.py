"""Who may approve a target's requests (and who may see or revoke them): the policy's names, groups expanded."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from jit_lb.access.policy import Target
from jit_lb.access.requests import AccessRequest


class GroupDirectory(Protocol):
    """Where a usergroup's members are looked up (Slack's usergroups.users.list, in production)."""

    def members(self, group: str) -> list[str]:
        """The group's user ids; an empty list when they cannot be read, so that nobody gains a right by a failure."""
        ...


class Approvers:
    """The authorisation rule for decisions: approvers are the target's listed users and its groups' members."""

    def __init__(self, directory: GroupDirectory) -> None:
        self.directory = directory

    def expand(self, names: Iterable[str]) -> set[str]:
        """User ids for policy names: user ids as they are, usergroups (S…) by their members."""
        users: set[str] = set()
        for name in names:
            users.update(self.directory.members(name) if name.startswith("S") else [name])
        return users

    def of(self, target: Target | None) -> set[str]:
        """Every user who may approve `target`'s requests; nobody for a target that left the policy."""
        return self.expand(target.approvers) if target is not None else set()

    def may_approve(self, user: str, target: Target | None) -> bool:
        if target is None:
            return False
        if user in target.approvers:
            return True  # named outright: no usergroup need be read
        return user in self.of(target)

    def may_see(self, user: str, request: AccessRequest, target: Target | None) -> bool:
        """Its requester and the target's approvers see a request in `/jit list`, and may revoke its grant."""
        return user == request.requester or self.may_approve(user, target)
