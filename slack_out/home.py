"""The App Home of one person, built from the store, and whose homes a request shows in (workers/homes.py publishes)."""

from __future__ import annotations

from jit_lb.access.requests import AccessRequest, Status
from jit_lb.runtime import Runtime
from slack_out.views import View, home_view

MAX_REFRESHED = 50  # people whose home one change republishes (the requester first, then approvers)


def home_of(rt: Runtime, user: str, open_requests: list[AccessRequest]) -> View:
    """`user`'s grants, pending requests, and what waits for their decision, by the card's rules exactly."""
    grants = [r for r in open_requests if r.requester == user and r.status is Status.GRANTED]
    pending = [r for r in open_requests if r.requester == user and (r.status is Status.PENDING or r.waits_for_start)]
    awaiting = [r for r in open_requests if _awaits(rt, user, r)]
    return home_view(grants, pending, awaiting)


def _awaits(rt: Runtime, user: str, request: AccessRequest) -> bool:
    """A request waits for `user` when they may decide it now: an approver, not its requester, not yet approved."""
    if user == request.requester:
        return False
    extension = request.extension
    if request.status is Status.PENDING:
        already = user in request.approvers
    elif request.status is Status.GRANTED and extension is not None and extension.outcome == "pending":
        already = user in extension.approvers
    else:
        return False
    return not already and rt.approvers.may_approve(user, rt.policy.target_for(request.target))


def viewers_of(rt: Runtime, request: AccessRequest) -> list[str]:
    """Whose homes show `request`, of those who opened one: its requester's, then its approvers' (MAX_REFRESHED)."""
    viewers = rt.store.home_users()
    if not viewers:
        return []
    concerned = [request.requester, *sorted(rt.approvers.of(rt.policy.target_for(request.target)))]
    return [user for user in dict.fromkeys(concerned) if user in viewers][:MAX_REFRESHED]
