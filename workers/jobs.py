"""RQ jobs: ids in, idempotent, so that a retry, a duplicate or a sweep that races a job is harmless."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from rq import Retry, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from bot import blocks
from bot.access import requests
from bot.access.errors import TransitionError
from bot.access.requests import AccessRequest, EndReason, Status
from bot.runtime import Runtime, build_runtime
from bot.settings import load_settings
from workers.providers.base import GrantOrder, ManagedObject, Provider, ProviderError, objects_of
from workers.providers.registry import provider_for, specs_of

log = structlog.get_logger("jit_lb.jobs")

GRACE = timedelta(seconds=2)  # the sweep leaves a just-ended grant to its own revoke job this long
STUCK_APPROVED = timedelta(seconds=15)  # an approved request not granted by then lost its job
ENDED_HOLD = 3600  # seconds one end's revoke is not queued again; enqueue_due retries a lost or failed one sooner


def _retry_intervals() -> list[int]:
    """JIT_REVOKE_RETRY_INTERVALS, seconds between a failed revoke's retries; the sweep keeps trying after them."""
    text = os.environ.get("JIT_REVOKE_RETRY_INTERVALS", "1,2,5,10,30")
    return [max(1, int(part)) for part in text.split(",") if part.strip()]


REVOKE_RETRY = Retry(max=len(_retry_intervals()), interval=_retry_intervals())
# How long before the end the requester is warned (JIT_WARN_BEFORE seconds); only grants twice as long get one.
WARN_BEFORE = timedelta(seconds=float(os.environ.get("JIT_WARN_BEFORE", "300")))

_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """The worker's shared runtime, built from the environment on first use."""
    global _runtime  # noqa: PLW0603 - one runtime per worker process, built lazily
    with _runtime_lock:
        if _runtime is None:
            _runtime = build_runtime(load_settings())
        return _runtime


def use_runtime(value: Runtime | None) -> None:
    """Install a runtime (the worker's entry point does this once at start)."""
    global _runtime  # noqa: PLW0603
    with _runtime_lock:
        _runtime = value


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- grant --------------------------------------------------------------------------------------


def grant_access(request_id: str) -> str:
    """Apply an approved request at the load balancer and schedule its end."""
    rt = runtime()
    request = rt.store.find(request_id)
    if request is None:
        return "unknown request"
    if request.status is Status.GRANTED:
        schedule_warning(request)
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
        _fault_pause()
    except ProviderError as err:
        _rollback(rt, provider, order)
        _fail(rt, request, str(err))
        return "failed"
    created = [obj.description for obj in objects]
    try:
        _, granted = rt.store.transition(request_id, lambda r: requests.grant(r, now, order.ends_at, created, verified))
    except TransitionError:
        current = rt.store.get(request_id)
        if current.status is not Status.GRANTED:
            # Cancelled or failed meanwhile: take back the lease this job just added.
            _rollback(rt, provider, order)
        return f"request is {current.status}"
    schedule_warning(granted)
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
    _tell(rt, granted, blocks.granted_text(granted, created, verified))
    return "granted"


def schedule_warning(request: AccessRequest) -> None:
    """Schedule the warning before a grant's end; its revoke is queued by `enqueue_ended` when the end comes.

    The end is the grant's score in the store's granted index, which every worker checks every
    tenth of a second (RQ's scheduler polls once a second); the sweep covers a lost index.
    """
    assert request.ends_at is not None
    queue = runtime().queue
    if request.duration >= 2 * WARN_BEFORE:
        stamp = int(request.ends_at.timestamp())
        queue.enqueue_at(
            request.ends_at - WARN_BEFORE, warn_expiry, request.id, stamp, job_id=f"warn-{request.id}-{stamp}"
        )


def warn_expiry(request_id: str, ends_at: int) -> str:
    """Tell the requester their access ends soon, with the command that extends it."""
    rt = runtime()
    request = rt.store.find(request_id)
    if request is None or request.status is not Status.GRANTED or request.ends_at is None:
        return "not granted"
    if int(request.ends_at.timestamp()) != ends_at:
        return "extended since"
    minutes = max(1, round((request.ends_at - utcnow()).total_seconds() / 60))
    rt.notifier.dm(request.requester, blocks.warning_text(request, minutes))
    rt.audit.request_event("grant.warned", request, actor="system", ends_at=request.ends_at)
    return "warned"


def extend_access(request_id: str) -> str:
    """Move an extended grant's markers at the load balancer to its new end, and its revoke with them."""
    rt = runtime()
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
    schedule_warning(request)
    approver = request.extensions[-1].decided_by if request.extensions else None
    rt.audit.request_event(
        "grant.extended",
        request,
        actor=approver or "system",
        ends_at=request.ends_at,
        objects=[obj.ref for obj in objects],
        verified=verified,
    )
    _tell(rt, request, blocks.extended_text(request, verified))
    return "extended"


def _fault_pause() -> None:
    """Test hook: JIT_FAULT_PAUSE_AFTER_APPLY seconds between applying and recording, to kill a worker there."""
    pause = float(os.environ.get("JIT_FAULT_PAUSE_AFTER_APPLY", "0"))
    if pause > 0:
        time.sleep(pause)


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
    _tell(rt, failed, blocks.failed_text(failed))


# --- telling people -----------------------------------------------------------------------------


def _tell(rt: Runtime, request: AccessRequest, text: str, summary: list[dict[str, Any]] | None = None) -> None:
    """Queue an outcome's Slack posts on the notices queue, which workers take only when no grant or revoke waits.

    The state change and its audit record come first and stand alone; the posts (card edit,
    thread reply, DM) are an RQ job of their own, so they survive this worker and never hold
    up the next grant or revoke.
    """
    rt.notices.enqueue(tell, request.id, text, summary)


def tell(request_id: str, text: str, summary: list[dict[str, Any]] | None = None) -> str:
    """Edit the request's card to its state now, reply `text` in its thread, and DM the requester."""
    rt = runtime()
    request = rt.store.find(request_id)
    if request is None:
        return "unknown request"
    rt.notifier.update_card(request)
    rt.notifier.thread(request, text, summary)
    rt.notifier.dm(request.requester, text)
    return "told"


# --- revoke -------------------------------------------------------------------------------------


def revoke_access(request_id: str, reason: str = EndReason.EXPIRED.value, actor: str = "system") -> str:
    """End a grant: drop its leases at the load balancer, verify, record, tell everyone."""
    rt = runtime()
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
    _tell(rt, ended, blocks.summary_text(ended), blocks.summary_blocks(ended))


def _revoke_failed(rt: Runtime, request: AccessRequest, error: str) -> None:
    job = get_current_job()
    retries_left = job.retries_left if job is not None and job.retries_left is not None else 0
    rt.audit.request_event("grant.revoke_failed", request, actor="system", error=error, retries_left=retries_left)
    if retries_left == 0:
        target = rt.policy.target_for(request.target)
        approvers = sorted(rt.notifier.expand(target.approvers)) if target else []
        rt.notifier.thread(request, blocks.revoke_failed_text(request, error, approvers))


# --- pending expiry -----------------------------------------------------------------------------


def expire_request(request_id: str) -> str:
    """Close a request nobody decided within `pending_ttl`."""
    rt = runtime()
    try:
        _, expired = rt.store.transition(request_id, lambda r: requests.expire(r, utcnow()))
    except TransitionError as err:
        return str(err)
    rt.audit.request_event("request.expired", expired, actor="system")
    _tell(rt, expired, blocks.expired_text(expired))
    return "expired"


# --- sweep --------------------------------------------------------------------------------------


def enqueue_ended(now: datetime | None = None) -> int:
    """Queue the revoke of each grant whose end has come, once per end; two Redis round trips, run every 0.1 s."""
    rt = runtime()
    ended = list(rt.store.grants_ended(now or utcnow()).items())
    if not ended:
        return 0
    # One claim per (request, end) across every worker's loop; an extension's new end is claimed anew.
    with rt.store.redis.pipeline(transaction=False) as pipe:
        for request_id, end in ended:
            pipe.set(f"jit:enqueued:revoke-{request_id}-{end}", 1, nx=True, ex=ENDED_HOLD)
        claimed = pipe.execute()
    for (request_id, _), won in zip(ended, claimed, strict=True):
        if won:
            rt.queue.enqueue(
                revoke_access,
                request_id,
                EndReason.EXPIRED.value,
                "system",
                job_id=f"revoke-{request_id}",
                retry=REVOKE_RETRY,
            )
    return len(ended)


def enqueue_due(now: datetime | None = None) -> int:
    """Enqueue revokes for grants past their end plus GRACE whose revoke is not queued or running (it was lost,
    or failed and waits for a retry), and expire pending requests nobody decided; run every second."""
    rt = runtime()
    now = now or utcnow()
    due = rt.store.granted_until(now - GRACE)
    for request_id in due:
        if _waiting_in_queue(rt, f"revoke-{request_id}"):
            continue  # its scheduled revoke is in the queue already, only behind others
        _enqueue_once(rt, f"revoke-due-{request_id}", revoke_access, request_id, EndReason.EXPIRED.value, "system")
    for request_id in rt.store.pending_until(now):
        _enqueue_once(rt, f"expire-due-{request_id}", expire_request, request_id)
    return len(due)


def _waiting_in_queue(rt: Runtime, job_id: str) -> bool:
    """Whether that job is queued or running now (a job still `scheduled` past its time lost its scheduler)."""
    try:
        status = Job.fetch(job_id, connection=rt.store.redis).get_status(refresh=False)
    except NoSuchJobError:
        return False
    return status in {JobStatus.QUEUED, JobStatus.STARTED}


def _enqueue_once(rt: Runtime, job_id: str, func: Callable[..., str], *args: str, hold: int = 10) -> None:
    """Enqueue unless the same job was enqueued within `hold` seconds, so that a loop does not pile up jobs."""
    if rt.store.redis.set(f"jit:enqueued:{job_id}", 1, nx=True, ex=hold):
        retry = REVOKE_RETRY if func is revoke_access else None
        rt.queue.enqueue(func, *args, job_id=job_id, retry=retry)


def sweep(now: datetime | None = None) -> int:
    """Judge every object at the load balancer by its leases, and bring Redis in line; returns objects removed.

    A lease is dropped when its end has passed, or when Redis knows its request is over. A lease
    whose request Redis does not know (its data was lost) is judged by its end alone.
    """
    rt = runtime()
    now = now or utcnow()
    removed = 0
    for spec in specs_of(rt.policy):
        provider = provider_for(spec, rt.store.redis, rt.policy)
        try:
            removed += _sweep_provider(rt, spec.kind, provider, now)
        except ProviderError as err:
            # One unreachable load balancer must not stop the sweep of the others.
            log.error("sweep of one grant spec failed", kind=spec.kind, error=str(err))
    _reconcile(rt, now)
    return removed


def _sweep_provider(rt: Runtime, kind: str, provider: Provider, now: datetime) -> int:
    removed = 0
    restore = getattr(provider, "restore", None)
    if restore is not None:
        restore(now)
    objects = provider.list_managed()
    known = rt.store.find_many({rid for obj in objects for rid in obj.request_ids()})
    for obj in objects:
        stale = {rid for rid in obj.request_ids() if _lease_over(rt, rid, obj, now, known.get(rid))}
        if obj.leases and not stale:
            continue
        with rt.store.lock(obj.scope or f"{kind}:{obj.ref}"):
            deleted = provider.drop(obj, stale)
        removed += int(deleted)
        rt.audit.record(
            "sweep.removed",
            actor="system",
            target=None,
            kind=kind,
            object=obj.ref,
            description=obj.description,
            leases_dropped=sorted(stale),
            deleted=deleted,
        )
        for request_id in stale:
            _sweep_request(rt, request_id, obj, known.get(request_id))
    return removed


def _lease_over(rt: Runtime, request_id: str, obj: ManagedObject, now: datetime, request: AccessRequest | None) -> bool:
    """Whether a lease has ended: by Redis's word for a granted request, by the marker when Redis lost it."""
    lease_end = max(lease.ends_at for lease in obj.leases if lease.request_id == request_id)
    if request is None or request.status is Status.APPROVED:
        # Unknown (Redis lost it) or being applied right now: the marker alone decides.
        return lease_end <= now
    if request.status is not Status.GRANTED or request.ends_at is None:
        return True
    if request.ends_at > lease_end:
        # Extended, but the markers have not moved yet (its extend job was lost or is late).
        _enqueue_once(rt, f"extend-markers-{request_id}", extend_access, request_id)
    # Past its end plus GRACE the grant's own revoke job has had its turn; the sweep takes over.
    return request.ends_at + GRACE <= now


def _sweep_request(rt: Runtime, request_id: str, obj: ManagedObject, request: AccessRequest | None) -> None:
    """Close in Redis what the sweep removed; finish_revoke's own transition makes a race with the revoke job safe."""
    if request is not None and request.status is Status.GRANTED:
        finish_revoke(rt, request_id, EndReason.SWEEP, "system", [obj.description], True)
    elif request is None:
        rt.audit.record(
            "grant.revoked",
            actor="system",
            request_id=request_id,
            target=None,
            reason=EndReason.SWEEP,
            removed=[obj.description],
            note="request unknown to Redis; judged by the marker at the load balancer",
        )


def _reconcile(rt: Runtime, now: datetime) -> None:
    """Grants past their end whose objects are already gone, and approvals whose grant job was lost."""
    for request_id in rt.store.granted_until(now - GRACE):
        _enqueue_once(rt, f"revoke-sweep-{request_id}", revoke_access, request_id, EndReason.SWEEP.value, "system")
    for request in rt.store.open_requests():
        if request.status is Status.APPROVED and request.decided_at and now - request.decided_at > STUCK_APPROVED:
            _enqueue_once(rt, f"grant-again-{request.id}", grant_access, request.id)
