"""Bringing the load balancer and Redis in line: revokes of ended grants, lost jobs, and the sweep.

None of these is an RQ job: every worker's loop (workers/loops.py) calls them, and what they find
to do they queue as jobs, each claimed once in the store so that many loops queue it once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from jit_lb.access.requests import AccessRequest, EndReason, Status
from jit_lb.runtime import Runtime
from workers.context import current
from workers.jobs import GRACE, expire_request, extend_access, finish_revoke, grant_access, revoke_access
from workers.providers.base import ManagedObject, Provider, ProviderError
from workers.providers.registry import provider_for, specs_of

log = structlog.get_logger("jit_lb.reconcile")

STUCK_APPROVED = timedelta(seconds=15)  # an approved request not granted by then lost its job
ENDED_HOLD = 3600  # seconds one end's revoke is not queued again; enqueue_due retries a lost or failed one sooner


def utcnow() -> datetime:
    return datetime.now(UTC)


def enqueue_ended(now: datetime | None = None) -> int:
    """Queue the revoke of each grant whose end has come, once per end; two Redis round trips, run every 0.1 s."""
    rt = current().rt
    ended = list(rt.store.grants_ended(now or utcnow()).items())
    if not ended:
        return 0
    # One claim per (request, end) across every worker's loop; an extension's new end is claimed anew.
    claimed = rt.store.claim_many([f"revoke-{request_id}-{end}" for request_id, end in ended], ENDED_HOLD)
    for (request_id, _), won in zip(ended, claimed, strict=True):
        if won:
            rt.queue.enqueue(
                revoke_access,
                request_id,
                EndReason.EXPIRED.value,
                "system",
                job_id=f"revoke-{request_id}",
                retry=rt.revoke_retry,
            )
    return len(ended)


def enqueue_due(now: datetime | None = None) -> int:
    """Enqueue revokes for grants past their end plus GRACE whose revoke is not queued or running (it was lost,
    or failed and waits for a retry), and expire pending requests nobody decided; run every second."""
    rt = current().rt
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
    if rt.store.claim(job_id, hold):
        retry = rt.revoke_retry if func is revoke_access else None
        rt.queue.enqueue(func, *args, job_id=job_id, retry=retry)


def sweep(now: datetime | None = None) -> int:
    """Judge every object at the load balancer by its leases, and bring Redis in line; returns objects removed.

    A lease is dropped when its end has passed, or when Redis knows its request is over. A lease
    whose request Redis does not know (its data was lost) is judged by its end alone.
    """
    rt = current().rt
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
    provider.restore(now)
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
