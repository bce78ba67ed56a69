"""RQ jobs: ids in, idempotent, so that a retry, a duplicate or a sweep that races a job is harmless."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import structlog
from rq import get_current_job

from jit_lb.access import requests
from jit_lb.access.errors import TransitionError
from jit_lb.access.requests import AccessRequest, EndReason, Status
from jit_lb.runtime import Runtime
from workers.context import current
from workers.notices import Notice, queue_notice, warn_expiry
from workers.providers.base import GrantOrder, ManagedObject, Provider, ProviderError, objects_of
from workers.providers.registry import provider_for

log = structlog.get_logger("jit_lb.jobs")

GRACE = timedelta(seconds=2)  # the sweep leaves a just-ended grant to its own revoke job this long


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- grant --------------------------------------------------------------------------------------


def grant_access(request_id: str) -> str:
    """Apply an approved request at the load balancer; its revoke is queued by the workers' loop at its end."""
    rt = current().rt
    request = rt.store.find(request_id)
    if request is None:
        return "unknown request"
    if request.status is Status.GRANTED:
        schedule_warning(rt, request)
        return "already granted"
    if request.status is not Status.APPROVED:
        return f"request is {request.status}"
    target = rt.policy.target_for(request.target)
    if target is None:
        _fail(rt, request, f"target `{request.target}` is no longer in the policy")
        return "failed"
    now = utcnow()
    try:
        _, request = rt.store.transition(request_id, lambda r: requests.fix_end(r, _whole_second(now + r.duration)))
    except TransitionError as err:
        return str(err)  # a twin job granted it, or it was closed, since we looked
    assert request.ends_at is not None
    order = _order(request, request.ends_at, target.grant)
    provider = provider_for(target.grant, rt.store.redis, rt.policy)
    if order.ends_at <= now:
        # A grant interrupted (worker killed) and retried after its end: the approved time is over.
        _rollback(rt, provider, order)
        _fail(rt, request, "the grant was interrupted and its approved time ran out before it could be applied")
        return "failed"
    try:
        with rt.store.lock(provider.scope(order)):
            objects = provider.apply(order)
        verified = _holds_lease(objects, order)
        if rt.settings.jit_fault_pause_after_apply:
            time.sleep(rt.settings.jit_fault_pause_after_apply)  # a test kills the worker here
    except ProviderError as err:
        _rollback(rt, provider, order)
        _fail(rt, request, str(err))
        return "failed"
    created = [obj.description for obj in objects]
    try:
        _, granted = rt.store.transition(request_id, lambda r: requests.grant(r, now, order.ends_at, created, verified))
    except TransitionError:
        current_request = rt.store.get(request_id)
        if current_request.status is not Status.GRANTED:
            # Cancelled or failed meanwhile: take back the lease this job just added.
            _rollback(rt, provider, order)
        return f"request is {current_request.status}"
    schedule_warning(rt, granted)
    rt.audit.request_event(
        "grant.applied",
        granted,
        actor="system",
        granted_at=now,
        ends_at=order.ends_at,
        objects=[obj.ref for obj in objects],
        created=created,
        verified=verified,
        kind=target.grant.kind,
    )
    queue_notice(rt, granted, Notice.GRANTED, verified=verified)
    return "granted"


def schedule_warning(rt: Runtime, request: AccessRequest) -> None:
    """Schedule the warning before a grant's end; its revoke is queued by `enqueue_ended` when the end comes.

    The end is the grant's score in the store's granted index, which every worker checks every
    tenth of a second (RQ's scheduler polls once a second); the sweep covers a lost index.
    """
    assert request.ends_at is not None
    warn_before = rt.settings.warn_before
    if request.duration >= 2 * warn_before:
        stamp = int(request.ends_at.timestamp())
        rt.notices.enqueue_at(
            request.ends_at - warn_before, warn_expiry, request.id, stamp, job_id=f"warn-{request.id}-{stamp}"
        )


def extend_access(request_id: str) -> str:
    """Move an extended grant's markers at the load balancer to its new end, and its warning with them."""
    rt = current().rt
    request = rt.store.find(request_id)
    if request is None or request.status is not Status.GRANTED or request.ends_at is None:
        return "not granted"
    target = rt.policy.target_for(request.target)
    if target is None:
        return "target gone"
    provider = provider_for(target.grant, rt.store.redis, rt.policy)
    order = _order(request, request.ends_at, target.grant)
    with rt.store.lock(provider.scope(order)):
        objects = provider.apply(order)
    verified = _holds_lease(objects, order) and all(
        lease.ends_at >= order.ends_at for obj in objects for lease in obj.leases if lease.request_id == request_id
    )
    schedule_warning(rt, request)
    approver = request.extensions[-1].decided_by if request.extensions else None
    rt.audit.request_event(
        "grant.extended",
        request,
        actor=approver or "system",
        ends_at=request.ends_at,
        objects=[obj.ref for obj in objects],
        verified=verified,
    )
    queue_notice(rt, request, Notice.EXTENDED, verified=verified)
    return "extended"


def _whole_second(moment: datetime) -> datetime:
    """Round down to the second: markers carry whole seconds, and a grant never lasts longer than approved."""
    return moment.replace(microsecond=0)


def _order(request: AccessRequest, ends_at: datetime, spec: object) -> GrantOrder:
    return GrantOrder(
        request_id=request.id,
        target=request.target,
        spec=spec,  # type: ignore[arg-type]
        ends_at=ends_at,
        cidr=request.cidr,
        role_name=request.role_name,
    )


def _holds_lease(objects: list[ManagedObject], order: GrantOrder) -> bool:
    return all(order.request_id in obj.request_ids() for obj in objects)


def _rollback(rt: Runtime, provider: Provider, order: GrantOrder) -> None:
    """Take back whatever part of a grant was applied; what cannot be taken back the sweep removes."""
    try:
        with rt.store.lock(provider.scope(order)):
            for obj in objects_of(provider, order.request_id):
                provider.drop(obj, {order.request_id}, fresh=True)
    except ProviderError as err:
        log.error("rollback failed; the sweep will remove the leftovers", request_id=order.request_id, error=str(err))


def _fail(rt: Runtime, request: AccessRequest, why: str) -> None:
    try:
        _, failed = rt.store.transition(request.id, lambda r: requests.fail(r, why, utcnow()))
    except TransitionError:
        return
    rt.audit.request_event("grant.failed", failed, actor="system", error=why)
    queue_notice(rt, failed, Notice.FAILED)


# --- revoke -------------------------------------------------------------------------------------


def revoke_access(request_id: str, reason: str = EndReason.EXPIRED.value, actor: str = "system") -> str:
    """End a grant: drop its leases at the load balancer, verify, record, tell everyone."""
    rt = current().rt
    request = rt.store.find(request_id)
    if request is None or request.status is not Status.GRANTED:
        return "not granted"
    assert request.ends_at is not None
    now = utcnow()
    if reason == EndReason.EXPIRED and request.ends_at > now + GRACE:
        return "not yet"  # extended since this job was queued; enqueue_ended queues it again at the new end
    target = rt.policy.target_for(request.target)
    if target is None:
        log.error("granted request's target left the policy; the sweep cannot find it", request_id=request_id)
        return "target gone"
    provider = provider_for(target.grant, rt.store.redis, rt.policy)
    order = _order(request, request.ends_at, target.grant)
    try:
        removed, verified = _release(rt, provider, order)
    except ProviderError as err:
        _revoke_failed(rt, request, str(err))
        raise
    finish_revoke(rt, request_id, EndReason(reason), actor, removed, verified)
    return "revoked"


def _release(rt: Runtime, provider: Provider, order: GrantOrder) -> tuple[list[str], bool]:
    """Drop the request's leases; verified when each object it held, read back, is gone or holds no lease of it.

    Under the scope lock no grant adds a lease of this request elsewhere, so reading back the
    objects it held answers what a second full listing would, at one lookup per object.
    """
    with rt.store.lock(provider.scope(order)):
        removed = []
        held = objects_of(provider, order.request_id)
        for obj in held:
            deleted = provider.drop(obj, {order.request_id}, fresh=True)
            removed.append(obj.description + ("" if deleted else " (kept: still leased by another grant)"))
        after = [provider.read(obj.ref) for obj in held]
        verified = all(obj is None or order.request_id not in obj.request_ids() for obj in after)
    return removed, verified


def finish_revoke(
    rt: Runtime, request_id: str, reason: EndReason, actor: str, removed: list[str], verified: bool
) -> None:
    """Record a grant's end once its leases are gone; a second caller finds it ended and does nothing."""
    try:
        _, ended = rt.store.transition(
            request_id, lambda r: requests.end(r, utcnow(), reason, actor, removed, verified)
        )
    except TransitionError:
        return
    rt.audit.request_event(
        "grant.revoked",
        ended,
        actor=actor,
        reason=reason,
        granted_at=ended.granted_at,
        ended_at=ended.ended_at,
        ends_at=ended.ends_at,
        lasted_seconds=ended.lasted(),
        removed=removed,
        verified=verified,
    )
    queue_notice(rt, ended, Notice.ENDED)


def _revoke_failed(rt: Runtime, request: AccessRequest, error: str) -> None:
    job = get_current_job()
    retries_left = job.retries_left if job is not None and job.retries_left is not None else 0
    rt.audit.request_event("grant.revoke_failed", request, actor="system", error=error, retries_left=retries_left)
    if retries_left == 0:
        queue_notice(rt, request, Notice.REVOKE_FAILED, error=error)


# --- pending expiry -----------------------------------------------------------------------------


def expire_request(request_id: str) -> str:
    """Close a request nobody decided within `pending_ttl`."""
    rt = current().rt
    try:
        _, expired = rt.store.transition(request_id, lambda r: requests.expire(r, utcnow()))
    except TransitionError as err:
        return str(err)
    rt.audit.request_event("request.expired", expired, actor="system")
    queue_notice(rt, expired, Notice.EXPIRED)
    return "expired"
