"""What is judged of what is at the load balancer (docs/operating.md): whether a lease still holds, by Redis's word
or its marker's, and the spec a grant was applied under. (An approval judged again at grant time is a core rule:
jit_lb/access/grant_time.py.)

A lease whose request Redis knows is judged by Redis's word: it is over when the request is no
longer granted, or its end (plus GRACE, the grant's own revoke job's turn) has passed. A lease
whose request Redis does not know (its data was lost, or someone wrote the marker by hand) is
judged by its marker: over when the end has passed, and over at once when the end lies further
ahead than any grant of that spec could last: nobody may keep access by writing a far end.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from jit_lb.access.policy import GrantSpec, Policy, parse_grant_spec, spec_record
from jit_lb.access.requests import AccessRequest, Status
from jit_lb.clock import CLOCK_SKEW

GRACE = timedelta(seconds=2)  # the sweep leaves a just-ended grant to its own revoke job this long


def longest_grant(policy: Policy, spec: GrantSpec, requests: Sequence[AccessRequest] = ()) -> timedelta:
    """The longest a lease on an object of `spec` may legitimately run from now.

    The longest `max_duration` of the targets that grant this spec today, or of the targets of
    granted requests recorded under it; a spec no target grants any more gets the policy's longest.
    """
    wanted = spec_record(spec)
    durations = [t.max_duration for t in policy.targets.values() if spec_record(t.grant) == wanted]
    for request in requests:
        target = policy.target_for(request.target)
        if target is not None and request.grant_spec == wanted:
            durations.append(target.max_duration)
    if not durations:
        durations = [t.max_duration for t in policy.targets.values()]
    return max(durations)


def lease_verdict(lease_end: datetime, request: AccessRequest | None, now: datetime, longest: timedelta) -> str | None:
    """Why a lease is over, in words for the audit record; None while it still holds."""
    if request is None or request.status is Status.APPROVED:
        # Unknown to Redis, or being applied right now: the marker decides, within the spec's limits.
        if lease_end > now + longest + CLOCK_SKEW:
            return "its end lies further ahead than any grant of this target may last"
        return "its end has passed" if lease_end <= now else None
    if request.status is not Status.GRANTED or request.ends_at is None:
        return f"its request is {request.status}"
    return "its end has passed" if request.ends_at + GRACE <= now else None


def applied_spec(policy: Policy, request: AccessRequest) -> GrantSpec | None:
    """The spec a grant was applied under: recorded with it, or (granted before specs were recorded) today's."""
    if request.grant_spec is not None:
        return parse_grant_spec(request.grant_spec)
    target = policy.target_for(request.target)
    return target.grant if target is not None else None
