"""Bringing the load balancer and Redis in line: revokes of ended grants, lost jobs, and the sweep.

None of these is an RQ job: every worker's loop (workers/loops.py) calls them, and what they find
to do they queue as jobs, each claimed once in the store so that many loops queue it once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from rq import worker_registration
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from jit_lb.access import requests
from jit_lb.access.errors import NotFoundError, ProviderError, TransitionError
from jit_lb.access.policy import BreakGlass, GrantSpec, parse_grant_spec, spec_record
from jit_lb.access.requests import AccessRequest, EndReason, Status, audit_ids, group_of
from jit_lb.access.store import UNRECORDED_SECONDS
from jit_lb.clock import utcnow
from jit_lb.policytools.diff import ended_by
from jit_lb.runtime import Runtime
from workers import activity
from workers.context import current
from workers.jobs import expire_request, extend_access, finish_revoke, grant_access, revoke_access, revoke_expired
from workers.judge import GRACE, applied_spec, lease_verdict, longest_grant
from workers.notices import Notice, announce_review, queue_notice
from workers.orders import record_removed
from workers.providers.base import ManagedObject, Provider
from workers.providers.registry import provider_for, specs_of

log = structlog.get_logger("jit_lb.reconcile")

STUCK_APPROVED = timedelta(seconds=15)  # an approved request not granted by then lost its job
ENDED_HOLD = 3600  # seconds one end's revoke is not queued again; enqueue_due retries a lost or failed one sooner
LOOKAHEAD = timedelta(seconds=60)  # the furthest ahead of its end a revoke is queued
REPORT_EVERY = 86400  # seconds between two reports of the same object the sweep leaves alone


@dataclass(frozen=True)
class RevokeCosts:
    """What a revoke costs the workers, as measured from their jobs over the last minute (or assumed before any).

    `wait`: seconds a `revoke_expired` job waits in the queue before a worker takes it (the workers
    are busy with grants, notices, other revokes); `per_job`: seconds from its start until access is
    gone (its locks, one listing, the removal, one listing to verify); `first_record`: seconds its
    first grant's record takes (the surroundings are read then, once for the batch); `per_grant`:
    seconds each further grant's record and notice take; `workers`: how many take jobs side by side.
    Clamped where made (`clamped`), so that a wild measurement cannot queue revokes at the end or a
    minute early.
    """

    wait: float
    per_job: float
    first_record: float
    per_grant: float
    workers: int

    @classmethod
    def clamped(cls, wait: float, per_job: float, first_record: float, per_grant: float, workers: int) -> RevokeCosts:
        def within(value: float, low: float, high: float) -> float:
            return min(max(value, low), high)

        return cls(
            within(wait, 0.0, 10.0),
            within(per_job, 0.01, 10.0),
            within(first_record, 0.0, 10.0),
            within(per_grant, 0.0, 1.0),
            max(workers, 1),
        )


def revoke_lead(jobs: int, grants: int, costs: RevokeCosts, margin: float) -> float:
    """The lead of a revoke with `grants` grants in `jobs` jobs ahead of it (its own included): `margin`, plus the
    wait in the queue, plus the time until the workers have access gone for the last of those jobs; at most
    LOOKAHEAD.

    The jobs run `costs.workers` at a time: every round but the last takes a whole job (its grants'
    records included, as they keep the worker from the next job), the last only until access is gone.
    """
    rounds = -(-jobs // costs.workers)
    whole_job = costs.per_job + costs.first_record + costs.per_grant * (grants / jobs - 1)
    lead = margin + costs.wait + (rounds - 1) * whole_job + costs.per_job
    return min(lead, LOOKAHEAD.total_seconds())


def revoke_leads(
    ends: list[tuple[str, int, str]], now: float, margin: float, costs: RevokeCosts
) -> tuple[list[tuple[str, int]], float]:
    """The grants whose revoke is to be queued now, first to end first, from (request id, end, batch key) sorted by
    their ends; and the lead that opened (the longest of theirs: none of them is cut short by more).

    Each grant's own lead is `revoke_lead` of the work queued ahead of it: the grants ending at or
    before it (itself and those ending with it included), in one job for each batch key among them, as
    `enqueue_ended` batches them. Its revoke is due once its lead reaches its end. The grants ending
    before a due one are due with it, so that the queue runs in the order of the ends, and each goes
    only as early as the work ahead of it needs.
    """
    due, opened = 0, 0.0
    keys: set[str] = set()
    index = 0
    while index < len(ends):
        moment = ends[index][1]
        while index < len(ends) and ends[index][1] == moment:  # ties end together: each counts the others ahead
            keys.add(ends[index][2])
            index += 1
        lead = revoke_lead(len(keys), index, costs, margin)
        if now + lead >= moment:
            due, opened = index, lead
    return [(request_id, end) for request_id, end, _ in ends[:due]], opened


class BatchKeys:
    """Each coming grant's batch key (its grant spec as JSON), read from Redis once a process: a grant's spec is
    recorded when it is applied and never changes; forgotten once the grant is no longer coming."""

    def __init__(self) -> None:
        self.known: dict[str, str] = {}

    def of(self, rt: Runtime, request_ids: list[str]) -> dict[str, str]:
        missing = set(request_ids) - self.known.keys()
        for request_id, request in rt.store.find_many(missing).items():
            spec = request.grant_spec
            # A grant recording no spec (from before specs were recorded) goes alone; the job finds its spec.
            self.known[request_id] = json.dumps(spec, sort_keys=True) if spec is not None else f"alone-{request_id}"
        self.known = {rid: self.known.get(rid, f"alone-{rid}") for rid in request_ids}
        return self.known


_batch_keys = BatchKeys()  # the loop's: only the reconcile loop's thread queues ended grants


def revoke_costs(rt: Runtime, now: float) -> RevokeCosts:
    """The costs measured over the last minute (JIT_REVOKE_JOB_SECONDS and JIT_REVOKE_GRANT_SECONDS where nothing
    was), and the workers alive on the queue now."""
    job, grant = rt.settings.jit_revoke_job_seconds, rt.settings.jit_revoke_grant_seconds
    measured = rt.store.revoke_costs(now)
    if measured is None:
        return RevokeCosts.clamped(0.0, job, grant, grant, live_workers(rt))
    per_grant = grant if measured.record is None else measured.record
    return RevokeCosts.clamped(measured.wait, measured.job, measured.first_record, per_grant, live_workers(rt))


def live_workers(rt: Runtime) -> int:
    """Workers taking jobs from the queue: those registered on it whose key has not expired (a worker killed
    outright is still counted until RQ's worker TTL runs out)."""
    names = list(worker_registration.get_keys(queue=rt.queue))
    with rt.store.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(name)
        return sum(map(bool, pipe.execute()))


def enqueue_ended(now: datetime | None = None) -> int:
    """Queue the revokes whose leads have opened, once per end, batched by grant spec; run every 0.1 s.

    The lead is each grant's own (`revoke_leads`): JIT_REVOKE_LEAD plus the time the workers take to
    revoke the grants ending at or before it, at the costs measured from their jobs over the last
    minute (`revoke_costs`). The revokes due together of one grant spec are one `revoke_expired` job,
    and every job is queued in one round trip.
    """
    rt = current().rt
    now = now or utcnow()
    coming = rt.store.grants_ended(now + LOOKAHEAD)
    if not coming:
        return 0
    keys = _batch_keys.of(rt, list(coming))
    costs = revoke_costs(rt, time.time())
    ends = [(request_id, end, keys[request_id]) for request_id, end in coming.items()]
    due, lead = revoke_leads(ends, now.timestamp(), rt.settings.jit_revoke_lead, costs)
    if not due:
        return 0
    # One claim per (request, end) across every worker's loop; an extension's new end is claimed anew.
    claimed = rt.store.claim_many([f"revoke-{request_id}-{end}" for request_id, end in due], ENDED_HOLD)
    won = [(request_id, end) for (request_id, end), first in zip(due, claimed, strict=True) if first]
    if won:
        meta = {
            "lead": round(lead, 3),
            "wait_s": round(costs.wait, 4),
            "job_s": round(costs.per_job, 4),
            "first_record_s": round(costs.first_record, 4),
            "grant_s": round(costs.per_grant, 4),
            "workers": costs.workers,
        }
        _enqueue_revokes(rt, won, keys, meta)
    return len(due)


def _enqueue_revokes(rt: Runtime, won: list[tuple[str, int]], keys: dict[str, str], meta: dict[str, float]) -> None:
    """One `revoke_expired` job a batch key (grant spec), in the order of the ends, all queued in one round trip;
    each job's meta says the lead it was queued at and the costs that lead assumed."""
    batches: dict[str, list[tuple[str, int]]] = {}
    for request_id, end in won:
        batches.setdefault(keys[request_id], []).append((request_id, end))
    datas, jobs = [], {}
    for batch in batches.values():
        (first, first_end), count = batch[0], len(batch)
        job_id = f"revoke-{first}-{first_end}-{count}"
        ids, ends = [request_id for request_id, _ in batch], [end for _, end in batch]
        datas.append(
            rt.queue.prepare_data(revoke_expired, (ids, ends), job_id=job_id, meta=meta, retry=rt.revoke_retry)
        )
        jobs.update(dict.fromkeys(ids, job_id))
    with rt.store.redis.pipeline() as pipe:
        rt.queue.enqueue_many(datas, pipeline=pipe)
        pipe.execute()
    rt.store.note_revoke_jobs(jobs, ENDED_HOLD)


def enqueue_due(now: datetime | None = None) -> int:
    """Enqueue revokes for grants past their end plus GRACE whose revoke is not queued or running (it was lost,
    or failed and waits for a retry), and expire pending requests nobody decided (once their creation is recorded);
    run every second."""
    rt = current().rt
    now = now or utcnow()
    due = rt.store.granted_until(now - GRACE)
    for request_id in due:
        if _waiting_in_queue(rt, rt.store.revoke_job(request_id) or f"revoke-{request_id}"):
            continue  # its scheduled revoke is in the queue already, only behind others
        enqueue_once(rt, f"revoke-due-{request_id}", revoke_access, request_id, EndReason.EXPIRED.value, "system")
    expiring = rt.store.pending_until(now)
    marked = rt.store.unrecorded_ids() if expiring else set()
    for request_id in expiring:
        if group_of(request_id) in marked:
            continue  # its request.created is not written yet: no record goes before it (close_unrecorded, else)
        enqueue_once(rt, f"expire-due-{request_id}", expire_request, request_id)
    return len(due)


def _waiting_in_queue(rt: Runtime, job_id: str) -> bool:
    """Whether that job is queued or running now (a job still `scheduled` past its time lost its scheduler)."""
    try:
        status = Job.fetch(job_id, connection=rt.store.redis).get_status(refresh=False)
    except NoSuchJobError:
        return False
    return status in {JobStatus.QUEUED, JobStatus.STARTED}


def enqueue_once(rt: Runtime, job_id: str, func: Callable[..., str], *args: str, hold: int = 10) -> int:
    """Enqueue unless the same job was enqueued within `hold` seconds, so that a loop does not pile up jobs."""
    if not rt.store.claim(job_id, hold):
        return 0
    retry = rt.revoke_retry if func is revoke_access else None
    rt.queue.enqueue(func, *args, job_id=job_id, retry=retry)
    return 1


def enqueue_many_once(rt: Runtime, jobs: Sequence[tuple[str, Callable[..., str], tuple[str, ...]]], hold: int) -> int:
    """`enqueue_once` for many jobs (id, function, arguments): every claim in one round trip, and the jobs won in
    one more, queued in the order given; returns how many were queued."""
    if not jobs:
        return 0
    claimed = rt.store.claim_many([job_id for job_id, _, _ in jobs], hold)
    datas = [
        rt.queue.prepare_data(func, args, job_id=job_id, retry=rt.revoke_retry if func is revoke_access else None)
        for (job_id, func, args), won in zip(jobs, claimed, strict=True)
        if won
    ]
    if datas:
        with rt.store.redis.pipeline() as pipe:
            rt.queue.enqueue_many(datas, pipeline=pipe)
            pipe.execute()
    return len(datas)


def sweep(now: datetime | None = None) -> int:
    """Judge every object at the load balancer by its leases, and bring Redis in line; returns objects removed.

    The sweep looks wherever grants were applied: at the specs of today's policy and at the specs
    recorded with open grants (a target that left the policy, or moved, still has objects out there).
    One unreachable load balancer, or one object that cannot be removed, never stops the rest.
    """
    rt = current().rt
    now = now or utcnow()
    open_requests = rt.store.open_requests()
    listings: list[tuple[GrantSpec, Provider, list[ManagedObject]]] = []
    for spec in specs_to_sweep(rt, open_requests):
        provider = provider_for(spec, rt.store.redis, rt.policy)
        try:
            provider.restore(now)
            listings.append((spec, provider, provider.list_managed()))
        except ProviderError as err:
            log.error("sweep of one grant spec failed", kind=spec.kind, error=str(err))
    # Two targets may share a load balancer (one group, other ports): an object odd to one spec is another's own.
    conforming = {(spec.kind, obj.ref) for spec, _, objects in listings for obj in objects if not obj.anomaly}
    removed = 0
    for spec, provider, objects in listings:
        mine = [obj for obj in objects if not obj.anomaly or (spec.kind, obj.ref) not in conforming]
        removed += _sweep_objects(rt, spec, provider, mine, now, open_requests)
    _reconcile(rt, now, open_requests)
    return removed


def specs_to_sweep(rt: Runtime, open_requests: list[AccessRequest]) -> list[GrantSpec]:
    specs = {json.dumps(spec_record(spec), sort_keys=True): spec for spec in specs_of(rt.policy)}
    for request in open_requests:
        if request.grant_spec is not None:
            specs.setdefault(json.dumps(request.grant_spec, sort_keys=True), parse_grant_spec(request.grant_spec))
    return list(specs.values())


def _sweep_objects(
    rt: Runtime,
    spec: GrantSpec,
    provider: Provider,
    objects: list[ManagedObject],
    now: datetime,
    open_requests: list[AccessRequest],
) -> int:
    known = rt.store.find_many({rid for obj in objects for rid in obj.request_ids()})
    longest = longest_grant(rt.policy, spec, open_requests)
    removed = 0
    ended: dict[str, list[ManagedObject]] = {}
    for obj in objects:
        if obj.anomaly or (not obj.leases and not provider.owns_unleased):
            _report(rt, spec, obj, obj.anomaly or "it is marked as jit-lb's but carries no lease")
            continue
        verdicts = {}
        for lease in obj.leases:
            request = known.get(lease.request_id)
            why = lease_verdict(lease.ends_at, request, now, longest)
            if why is None and request is not None and request.ends_at is not None and request.ends_at > lease.ends_at:
                # Extended, but the markers have not moved yet (its extend job was lost or is late).
                enqueue_once(rt, f"extend-markers-{lease.request_id}", extend_access, lease.request_id)
            if why is not None:
                verdicts[lease.request_id] = why
        if obj.leases and not verdicts:
            continue
        try:
            with rt.store.lock(obj.scope or f"{spec.kind}:{obj.ref}"):
                deleted = provider.drop(obj, set(verdicts))
        except ProviderError as err:
            log.error("sweep could not remove an object; the next sweep tries again", object=obj.ref, error=str(err))
            continue
        removed += int(deleted)
        because = verdicts or "no lease backs it, in a place only jit-lb writes"
        record_removed(rt, spec.kind, obj, sorted(verdicts), because, deleted)
        for request_id in verdicts:
            ended.setdefault(request_id, []).append(obj)
    for request_id, objs in ended.items():
        close_swept(rt, provider, request_id, objs, known.get(request_id))
    return removed


def _report(rt: Runtime, spec: GrantSpec, obj: ManagedObject, why: str) -> None:
    """Leave an object alone and say so, once a day an object: it may be someone's own, tagged by mistake."""
    if rt.store.claim(f"reported-{spec.kind}-{obj.ref}", REPORT_EVERY):
        log.warning("sweep left an object alone", object=obj.ref, why=why)
        rt.audit.record(
            "sweep.reported",
            actor="system",
            target=None,
            kind=spec.kind,
            object=obj.ref,
            description=obj.description,
            why=why,
            leases=sorted(obj.request_ids()) or None,
            must=True,
        )


def close_swept(
    rt: Runtime,
    provider: Provider,
    request_id: str,
    objs: list[ManagedObject],
    request: AccessRequest | None,
    at: datetime | None = None,
) -> None:
    """Close in Redis what the sweep removed, once a request, naming every object it dropped for it.

    Verified when each object the grant recorded or the sweep dropped, read back, holds no lease of
    it; finish_revoke's own transition makes a race with the revoke job safe. `at`: when a sweep
    made while Redis was gone removed them (its end is recorded once Redis is back).
    """
    removed = [obj.description for obj in objs]
    if request is not None and request.status is Status.GRANTED:
        refs = sorted({obj.ref for obj in objs} | set(request.object_refs))
        after = [provider.read(ref) for ref in refs]
        verified = all(obj is None or request_id not in obj.request_ids() for obj in after)
        details: dict[str, Any] = {"removed_while_redis_was_gone": True} if at is not None else {}
        finish_revoke(rt, request_id, EndReason.SWEEP, "system", removed, verified, at=at, **details)
    elif request is None:
        rt.audit.record(
            "grant.revoked",
            actor="system",
            **audit_ids(request_id),
            target=None,
            reason=EndReason.SWEEP,
            removed=removed,
            note="request unknown to Redis; judged by the marker at the load balancer",
            must=True,
        )
        activity.record_unknown(rt, request_id, objs[0].kind)


def end_orphans(open_requests: list[AccessRequest] | None = None) -> int:
    """End at once (reason `policy`) each grant whose target left the policy or whose grant spec changed."""
    rt = current().rt
    orphans = 0
    for request in rt.store.open_requests() if open_requests is None else open_requests:
        if ended_by(rt.policy, request) is not None:  # the rule `policy diff` shows an author before the edit
            orphans += 1
            enqueue_once(rt, f"revoke-policy-{request.id}", revoke_access, request.id, EndReason.POLICY.value, "system")
    return orphans


def end_idle(now: datetime | None = None) -> int:
    """End (reason `idle`) each grant on a target with `idle_timeout` whose source has not used it for that long.

    Use is what the load balancer counts for the source (HAProxy's stick table: its connection count,
    and connections open now): a count higher than at the last look, or an open connection, is use now;
    a count that fell (an entry expired, HAProxy restarted) is not. A
    grant is idle from its start, or from its last use. A count that cannot be read is logged and
    judged again next time, never guessed: access then ends at its end, as without `idle_timeout`.
    """
    rt = current().rt
    if not any(target.idle_timeout for target in rt.policy.targets.values()):
        return 0  # nothing to watch: no read of the open requests every second
    now = now or utcnow()
    ended = 0
    for request in rt.store.open_requests():
        target = rt.policy.target_for(request.target)
        if request.status is not Status.GRANTED or target is None or target.idle_timeout is None or not request.cidr:
            continue
        spec = applied_spec(rt.policy, request)
        if spec is None:
            continue
        try:
            use = provider_for(spec, rt.store.redis, rt.policy).use_of(request.cidr)
        except ProviderError as err:
            log.warning("use of a grant could not be read; it ends at its end", request_id=request.id, error=str(err))
            continue
        if use is None:
            continue
        last_use = rt.store.note_use(request.id, use.connections or 0, bool(use.open_connections), now)
        idle_since = max(filter(None, [request.granted_at, last_use]))
        if now - idle_since >= target.idle_timeout:
            ended += enqueue_once(rt, f"revoke-idle-{request.id}", revoke_access, request.id, EndReason.IDLE.value)
    return ended


def review_within(rt: Runtime) -> timedelta:
    """How long a break-glass grant waits for its review: the policy's, or its default when the policy no longer
    allows break-glass (a grant made before the edit is still reviewed)."""
    rules = rt.policy.break_glass
    return rules.review_within if rules else BreakGlass.model_fields["review_within"].default


def announce_overdue_reviews(now: datetime | None = None) -> int:
    """Announce again, once a `review_within`, each break-glass grant nobody has reviewed."""
    rt = current().rt
    now = now or utcnow()
    due = rt.store.reviews_due(now)
    for request_id in due:
        rt.store.review_due(request_id, now + review_within(rt))
        rt.notices.enqueue(announce_review, request_id)
    return len(due)


NEVER_RECORDED = (
    "its creation was never recorded (the web stopped between storing it and writing its record): closed unannounced"
)


def close_unrecorded(now: datetime | None = None) -> int:
    """Close, on the record, each new request whose `request.created` was not written within UNRECORDED_SECONDS of
    its storing (its web was killed between the two, or its take-back was lost with it): it was never approved,
    denied nor withdrawn (bot/service/decisions.py, bot/service/commands.py), and `request.cancelled` is what the
    log says of it. A break-glass grant found still marked was recorded, its web stopped before queuing its
    announcement and review: they are queued instead. The requester is told, once a request people see (a notice:
    Slack never holds this thread up), unless every part was closed otherwise meanwhile. How many parts were
    closed."""
    rt = current().rt
    now = now or utcnow()
    moment = now - timedelta(seconds=UNRECORDED_SECONDS)
    closed = 0
    for visible in rt.store.unrecorded_before(moment):
        if not rt.store.claim_unrecorded(visible, moment, now):
            continue  # recorded meanwhile (its card is queued), or another worker's to close
        try:
            parts = rt.store.parts(visible)
        except NotFoundError:
            parts = []  # taken back meanwhile
        ours: list[AccessRequest] = []  # closed as never recorded: by this worker, or by one that died before telling
        for part in parts:
            if part.break_glass and part.status is not Status.PENDING:
                # Its web stopped after the grant was recorded, before queuing its announcement and review.
                rt.store.breakglass_granted(part.id, (part.decided_at or utcnow()) + review_within(rt))
                continue
            try:
                _, after = rt.store.transition(part.id, _never_recorded, _record_never_recorded)
            except (NotFoundError, TransitionError):
                if part.status is Status.CANCELLED and part.failure == NEVER_RECORDED:
                    ours.append(part)  # a claim taken over: its worker closed it and may have died before telling
                continue  # taken back, or closed otherwise meanwhile (no path does so while it is marked): as recorded
            closed += 1
            ours.append(after)
            current().homes.refresh(after)
        if ours:  # the notice tells the person once however often it is queued (store.tell_closed)
            queue_notice(rt, ours[0], Notice.NEVER_RECORDED)
        rt.store.forget_unrecorded(visible)  # after the closing: a worker stopped before it leaves the claim
    return closed


def _never_recorded(request: AccessRequest) -> AccessRequest:
    return requests.cancel(request, NEVER_RECORDED, utcnow())


def _record_never_recorded(_: AccessRequest, after: AccessRequest) -> None:
    current().rt.audit.request_event("request.cancelled", after, actor="system", why=NEVER_RECORDED, must=True)


def record_refusal_summaries(now: datetime | None = None) -> int:
    """Write one `request.refused` record for each user and minute whose refusals past a limit were counted."""
    rt = current().rt
    summaries = rt.store.take_refusal_summaries(now or utcnow())
    for summary in summaries:
        if summary.count > 1:
            rt.audit.record(
                "request.refused",
                actor=summary.user,
                why="limit: further commands refused in this minute, counted rather than recorded one by one",
                summary=True,
                refused=summary.count - 1,
                window_start=summary.window_start,
                window_seconds=60,
                must=True,
            )
    return len(summaries)


def _reconcile(rt: Runtime, now: datetime, open_requests: list[AccessRequest]) -> None:
    """Grants past their end whose objects are already gone, orphans of a policy edit, and lost grant jobs."""
    for request_id in rt.store.granted_until(now - GRACE):
        enqueue_once(rt, f"revoke-sweep-{request_id}", revoke_access, request_id, EndReason.SWEEP.value, "system")
    end_orphans(open_requests)
    for request in open_requests:
        # A scheduled request's grant job is due at its start, not at its approval.
        due = max(filter(None, (request.decided_at, request.starts_at)), default=None)
        if request.status is Status.APPROVED and due and now - due > STUCK_APPROVED:
            enqueue_once(rt, f"grant-again-{request.id}", grant_access, request.id)
