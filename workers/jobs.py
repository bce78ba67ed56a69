"""RQ jobs: ids in, idempotent, so that a retry, a duplicate or a sweep that races a job is harmless."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from rq import get_current_job

from jit_lb.access import requests
from jit_lb.access.errors import AuditUnavailableError, ProviderError, TransitionError
from jit_lb.access.extensions import extension_refusal
from jit_lb.access.grant_time import grant_refusal
from jit_lb.access.policy import Target, parse_grant_spec, spec_record
from jit_lb.access.requests import AccessRequest, Activity, EndReason, Status
from jit_lb.access.store import RevokeSpan
from jit_lb.clock import utcnow
from jit_lb.runtime import Runtime
from workers import activity
from workers.context import current
from workers.judge import GRACE, applied_spec
from workers.notices import Notice, queue_notice, warn_expiry
from workers.orders import Released, holds_lease, order_of, release, release_many, roll_back
from workers.providers.registry import provider_for

log = structlog.get_logger("jit_lb.jobs")


# --- grant --------------------------------------------------------------------------------------


def grant_access(request_id: str) -> str:
    """Apply an approved request at the load balancer; its revoke is queued by the workers' loop at its end."""
    rt = current().rt
    request = rt.store.find(request_id)
    now = utcnow()
    not_now = _not_now(rt, request, now)
    if not_now is not None or request is None:
        return not_now or "unknown request"
    target = rt.policy.target_for(request.target)
    refusal = _why_not(rt, request, target, now)
    if refusal is not None or target is None:
        return _refuse(rt, request, refusal or "")
    # A scheduled window's duration counts from its start, however late this job runs.
    begins = request.starts_at or now
    try:
        _, request = rt.store.transition(
            request_id,
            lambda r: requests.fix_end(r, _whole_second(requests.grant_end(r, begins)), spec_record(target.grant)),
        )
    except TransitionError as err:
        return str(err)  # a twin job granted it, or it was closed, since we looked
    assert request.ends_at is not None
    assert request.grant_spec is not None
    spec = parse_grant_spec(request.grant_spec)
    order = order_of(request, request.ends_at, spec)
    provider = provider_for(spec, rt.store.redis, rt.policy)
    if order.ends_at <= now or request.grant_spec != spec_record(target.grant):
        # Retried after its end (a worker killed), or the target changed since the first attempt: take it back.
        roll_back(rt, provider, order)
        _fail(
            rt,
            request,
            "the grant was interrupted and its approved time ran out, or its target changed, before "
            "it could be applied",
        )
        return "failed"
    try:
        with rt.store.lock(provider.scope(order)):
            objects = provider.apply(order)
        verified = holds_lease(objects, order)
    except ProviderError as err:
        roll_back(rt, provider, order)
        _fail(rt, request, str(err))
        return "failed"
    created, refs = [obj.description for obj in objects], [obj.ref for obj in objects]
    # Recorded with the grant, in the same transition: what surrounds the target now, and the source's use so far.
    start = activity.observe(provider, order, utcnow())

    def record(_: AccessRequest, granted: AccessRequest) -> None:
        rt.audit.request_event(
            "grant.applied",
            granted,
            actor="system",
            granted_at=now,
            ends_at=order.ends_at,
            objects=refs,
            created=created,
            verified=verified,
            kind=spec.kind,
        )

    try:
        _, granted = rt.store.transition(
            request_id, lambda r: requests.grant(r, now, order.ends_at, created, verified, refs, start), record
        )
    except AuditUnavailableError as err:
        # No grant without its record: take the access back, and say why.
        roll_back(rt, provider, order)
        _fail(rt, request, str(err))
        return "failed"
    except TransitionError:
        current_request = rt.store.get(request_id)
        if current_request.status is not Status.GRANTED:
            # Cancelled or failed meanwhile: take back the lease this job just added.
            roll_back(rt, provider, order)
        return f"request is {current_request.status}"
    if rt.metrics is not None:
        rt.metrics.granted(spec.kind, utcnow() - (request.decided_at or now))
    schedule_warning(rt, granted)
    queue_notice(rt, granted, Notice.GRANTED, verified=verified)
    return "granted"


def _not_now(rt: Runtime, request: AccessRequest | None, now: datetime) -> str | None:
    """Why a grant job has nothing to apply now (gone, granted already, closed, or scheduled later); None to go on."""
    if request is None:
        return "unknown request"
    if request.status is Status.GRANTED:
        schedule_warning(rt, request)
        return "already granted"
    if request.status is not Status.APPROVED:
        return f"request is {request.status}"
    if request.starts_at is not None and now < request.starts_at:
        return _wait_for_start(rt, request)
    return None


def _wait_for_start(rt: Runtime, request: AccessRequest) -> str:
    """A scheduled request approved ahead: its grant job runs again at its start (RQ's scheduler; the sweep's
    check of approved requests not granted covers a lost one)."""
    assert request.starts_at is not None
    stamp = int(request.starts_at.timestamp())
    rt.queue.enqueue_at(request.starts_at, grant_access, request.id, job_id=f"start-{request.id}-{stamp}")
    return "waits for its start"


def _refuse(rt: Runtime, request: AccessRequest, why: str) -> str:
    """An approved request that may not be applied: a scheduled one ends `expired`, any other `failed`."""
    if request.starts_at is not None:
        _expire_at_start(rt, request, why)
        return "expired"
    _fail(rt, request, why)
    return "failed"


def _expire_at_start(rt: Runtime, request: AccessRequest, why: str) -> None:
    """A scheduled request refused when judged again at its start ends `expired`, saying why; nothing applied."""
    _close(
        rt,
        request,
        lambda r: requests.expire_at_start(r, why, utcnow()),
        "request.expired",
        {"why": why},
        Notice.EXPIRED,
    )


def _why_not(rt: Runtime, request: AccessRequest, target: Target | None, now: datetime) -> str | None:
    """Why an approved request is not applied now: the policy in force, a lockdown, or an audit log down.

    A scheduled request is judged at its start as if asked then: freezes over its window count too.
    """
    refusal = grant_refusal(rt.policy, rt.approvers, request, target, now)
    if refusal is None and rt.store.lockdown() is not None:
        refusal = "jit-lb is locked down: nothing is granted until an admin lifts it"
    if refusal is None and request.starts_at is not None:
        freeze = rt.policy.freeze_during(request.target, now, request.starts_at + request.duration)
        if freeze is not None:
            refusal = f"`{request.target}` is frozen until {freeze.to:%Y-%m-%d %H:%M} UTC: {freeze.reason}"
    if refusal is None and not rt.audit.flush():
        refusal = "the audit log cannot be written, so nothing was applied; ask again once it is fixed"
    return refusal


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
    spec = applied_spec(rt.policy, request)
    target = rt.policy.target_for(request.target)
    if spec is None or target is None:
        return "target gone"  # the reconciler ends it (reason `policy`)
    # Judged again as a request is, now that the markers are to move (the policy may have changed since).
    refusal = extension_refusal(rt.policy, rt.approvers, request, target, rt.store.lockdown() is not None, utcnow())
    if refusal is not None:
        return _refuse_extension(rt, request, refusal)
    provider = provider_for(spec, rt.store.redis, rt.policy)
    order = order_of(request, request.ends_at, spec)
    with rt.store.lock(provider.scope(order)):
        # Read again under the lock: a revoke that began since this job read the grant (it marks the grant before
        # it takes the lock, and ends its state after) has removed the rule, which must not come back.
        now = rt.store.find(request_id)
        if rt.store.ending(request_id) or now is None or now.status is not Status.GRANTED:
            return "ended since"
        objects = provider.apply(order)
    verified = holds_lease(objects, order) and all(
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
        must=True,
    )
    queue_notice(rt, request, Notice.EXTENDED, verified=verified)
    return "extended"


def _refuse_extension(rt: Runtime, request: AccessRequest, why: str) -> str:
    """Take an approved extension back (its end moves back; the markers never moved), record it, and say why."""
    number = len(request.extensions)

    def record(_: AccessRequest, after: AccessRequest) -> None:
        rt.audit.request_event("extension.refused", after, actor="system", why=why, ends_at=after.ends_at, must=True)

    try:
        _, after = rt.store.transition(request.id, lambda r: requests.refuse_extension(r, number, why), record)
    except TransitionError:
        return "moved on"  # revoked, or extended again, meanwhile: the next job judges that
    queue_notice(rt, after, Notice.EXTENSION_REFUSED, error=why)
    return "refused"


def _whole_second(moment: datetime) -> datetime:
    """Round down to the second: markers carry whole seconds, and a grant never lasts longer than approved."""
    return moment.replace(microsecond=0)


def _fail(rt: Runtime, request: AccessRequest, why: str) -> None:
    """Close an approved request that could not be applied (nothing is left at the load balancer), and say why."""
    _close(rt, request, lambda r: requests.fail(r, why, utcnow()), "grant.failed", {"error": why}, Notice.FAILED)


def _close(
    rt: Runtime,
    request: AccessRequest,
    close: Callable[[AccessRequest], AccessRequest],
    event: str,
    fields: dict[str, Any],
    notice: Notice,
) -> None:
    """Move the request by `close`, record `event` by the system with `fields`, and queue the `notice`; nothing when
    the request has moved on meanwhile (the transition refused)."""

    def record(_: AccessRequest, closed: AccessRequest) -> None:
        rt.audit.request_event(event, closed, actor="system", **fields, must=True)

    try:
        _, closed = rt.store.transition(request.id, close, record)
    except TransitionError:
        return
    queue_notice(rt, closed, notice)


# --- revoke -------------------------------------------------------------------------------------


def revoke_access(
    request_id: str, reason: str = EndReason.EXPIRED.value, actor: str = "system", for_end: int | None = None
) -> str:
    """End a grant: drop its leases where it was applied, verify, record, tell everyone.

    It works from what the grant recorded (its spec and objects), never from today's policy: a
    target that left the policy, or moved to another group, is revoked where it was applied. The
    workers' loop queues an expiry a little before the end (`for_end`, whole epoch seconds), so that
    access is gone by the approved end; an extension since moves the end, and this job stands down.
    """
    rt = current().rt
    request = rt.store.find(request_id)
    if request is None or request.status is not Status.GRANTED:
        return "not granted"
    assert request.ends_at is not None
    now = utcnow()
    if for_end is not None and int(request.ends_at.timestamp()) != for_end:
        return "extended since"  # enqueue_ended queues it again before the new end
    if reason == EndReason.EXPIRED and for_end is None and request.ends_at > now + GRACE:
        return "not yet"  # extended since this job was queued; enqueue_ended queues it again at the new end
    spec = applied_spec(rt.policy, request)
    if spec is None:
        log.error("granted request records no spec and its target left the policy", request_id=request_id)
        return "target gone"
    provider = provider_for(spec, rt.store.redis, rt.policy)
    order = order_of(request, request.ends_at, spec)
    rt.store.mark_ending(request_id)  # before the lock: an extension waiting for it stands down (extend_access)
    try:
        removed, verified, dropped = release(rt, provider, order, request, now)
    except ProviderError as err:
        _revoke_failed(rt, request, str(err))
        raise
    finish_revoke(rt, request_id, EndReason(reason), actor, removed, verified, dropped_leases=dropped or None)
    return "revoked"


def revoke_expired(request_ids: list[str], ends: list[int]) -> str:
    """End grants of one grant spec at their ends, together: access first, for all of them, then their records.

    The workers' loop queues the grants whose revoke leads open at the same moment in one job a
    grant spec (`reconcile.enqueue_ended`); `ends` are the ends they were queued for, and a grant
    extended since stands down, as in `revoke_access`. Access is taken away in as few calls as the
    load balancer allows (`orders.release_many`); then each grant's end is recorded and told, as one
    revoke does. The time each part took, and how long the job waited in the queue, are kept for the
    costs the next leads are measured by.
    """
    rt = current().rt
    started = time.time()
    job = get_current_job()
    queued = job.enqueued_at if job is not None and job.enqueued_at is not None else None
    # RQ keeps naive UTC datetimes; a job run outside RQ (a test) waited for nothing.
    waited = started - queued.replace(tzinfo=UTC).timestamp() if queued is not None else 0.0
    found = rt.store.find_many(set(request_ids))
    batch = {
        request_id: found[request_id]
        for request_id, end in zip(request_ids, ends, strict=True)
        if request_id in found
        and found[request_id].status is Status.GRANTED
        and found[request_id].ends_at is not None
        and int(found[request_id].ends_at.timestamp()) == end  # type: ignore[union-attr]
    }
    if not batch:
        return "none to revoke"
    spec = applied_spec(rt.policy, next(iter(batch.values())))
    if spec is None:
        for request_id, request in batch.items():
            revoke_access(request_id, for_end=int(request.ends_at.timestamp()))  # type: ignore[union-attr]
        return f"{len(batch)} revoked one by one"
    provider = provider_for(spec, rt.store.redis, rt.policy)
    orders = [order_of(request, request.ends_at, spec) for request in batch.values() if request.ends_at]
    for request_id in batch:
        rt.store.mark_ending(request_id)  # as revoke_access does: an extension waiting for the lock stands down
    try:
        released = release_many(rt, provider, orders, batch, utcnow())
    except ProviderError as err:
        for request in batch.values():
            _revoke_failed(rt, request, str(err))
        raise
    gone = time.time()
    times = []  # when each grant's record was done
    seen: activity.Seen = {}  # the surroundings at the end, read once for the batch (with the first record)
    refused = {rid: _refused_text(result) for rid, result in released.items() if result.refused}
    for order in orders:
        result = released[order.request_id]
        if order.request_id in refused:
            _revoke_failed(rt, batch[order.request_id], refused[order.request_id])
            continue
        finish_revoke(
            rt,
            order.request_id,
            EndReason.EXPIRED,
            "system",
            result.removed,
            result.verified,
            seen=seen,
            dropped_leases=result.dropped or None,
        )
        times.append(time.time())
    if times:
        rt.store.note_revoke_work(RevokeSpan(waited, started, gone, times[0], times[-1], len(times)))
    if refused:
        # Tried again by RQ's retry: the grants ended here are no longer granted, and stand down.
        raise ProviderError(f"{len(refused)} of {len(batch)} grants not revoked: {next(iter(refused.values()))}")
    return f"{len(batch)} revoked"


def _refused_text(result: Released) -> str:
    """Why a grant of a batch was not revoked, and what of it did go (its revoke_failed record is all that says so)."""
    text = "; ".join(result.refused)
    return f"{text} (removed meanwhile: {', '.join(result.removed)})" if result.removed else text


def finish_revoke(
    rt: Runtime,
    request_id: str,
    reason: EndReason,
    actor: str,
    removed: list[str],
    verified: bool,
    at: datetime | None = None,
    seen: activity.Seen | None = None,
    **details: Any,
) -> None:
    """Record a grant's end once its leases are gone, with what happened during it; a second caller does nothing.

    The end stands whatever the audit log does: its record is spooled until the log takes it. `at` is
    when the access was removed, when that was before now (a sweep while Redis was gone). `seen`: the
    surroundings read for a batch of grants of one spec (`activity.observe`).
    """
    request = rt.store.find(request_id)
    if request is None or request.status is not Status.GRANTED:
        return
    happened = _session_activity(rt, request, seen)

    def record(_: AccessRequest, ended: AccessRequest) -> None:
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
            must=True,
            **details,
        )
        rt.audit.request_event("grant.activity", ended, actor="system", **activity.audit_fields(happened), must=True)

    try:
        _, ended = rt.store.transition(
            request_id,
            lambda r: requests.end(r, at or utcnow(), reason, actor, removed, verified, happened),
            record,
            strict=False,  # the access is gone: its end is told even if a failover may yet lose the record
        )
    except TransitionError:
        return
    if rt.metrics is not None and ended.ended_at is not None and ended.ends_at is not None:
        rt.metrics.access_ended(_kind_of(ended), ended.ended_at - ended.ends_at)
    queue_notice(rt, ended, Notice.ENDED)


def _session_activity(rt: Runtime, request: AccessRequest, seen: activity.Seen | None = None) -> Activity:
    """What happened during a grant that is ending: the load balancer read now, compared with the grant's start."""
    spec = applied_spec(rt.policy, request)
    if spec is None:
        return Activity(unknown="the grant records no spec and its target left the policy: nothing could be read")
    provider = provider_for(spec, rt.store.redis, rt.policy)
    now = utcnow()
    end = activity.observe(provider, order_of(request, request.ends_at or now, spec), now, seen)
    return activity.compare(request.start_snapshot, end)


def _kind_of(request: AccessRequest) -> str:
    return str((request.grant_spec or {}).get("kind", "unknown"))


def _revoke_failed(rt: Runtime, request: AccessRequest, error: str) -> None:
    if rt.metrics is not None:
        rt.metrics.revoke_failed(_kind_of(request))
    job = get_current_job()
    retries_left = job.retries_left if job is not None and job.retries_left is not None else 0
    rt.audit.request_event(
        "grant.revoke_failed", request, actor="system", error=error, retries_left=retries_left, must=True
    )
    if retries_left == 0:
        queue_notice(rt, request, Notice.REVOKE_FAILED, error=error)


# --- pending expiry -----------------------------------------------------------------------------


def expire_request(request_id: str) -> str:
    """Close a request nobody decided within `pending_ttl`."""
    rt = current().rt

    def record(_: AccessRequest, expired: AccessRequest) -> None:
        rt.audit.request_event("request.expired", expired, actor="system", must=True)

    try:
        _, expired = rt.store.transition(request_id, lambda r: requests.expire(r, utcnow()), record)
    except TransitionError as err:
        return str(err)
    queue_notice(rt, expired, Notice.EXPIRED)
    return "expired"
