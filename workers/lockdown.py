"""The lockdown: while an admin's `/jit lockdown on` holds, every grant is ended and every open request closed.

`enforce_lockdown` runs every second in every worker's loop (workers/loops.py); `clear_specs` is the
job that removes at once every object jit-lb holds at some grant specs (`clear_spec` for each),
before each grant's own revoke.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import structlog
from rq.job import Job, JobStatus

from jit_lb.access import requests
from jit_lb.access.errors import ProviderError, TransitionError
from jit_lb.access.policy import GrantSpec, parse_grant_spec, spec_record
from jit_lb.access.requests import AccessRequest, EndReason, Status
from jit_lb.clock import utcnow
from jit_lb.runtime import Runtime
from workers.context import current
from workers.jobs import revoke_access
from workers.notices import Notice, queue_notice
from workers.orders import record_removed
from workers.providers.base import PartialDropError
from workers.providers.registry import provider_for
from workers.reconcile import enqueue_many_once, specs_to_sweep

log = structlog.get_logger("jit_lb.lockdown")

LOCKDOWN_HOLD = 3600  # a lockdown's job is queued once (a slow queue must not run it twice)


# Kinds whose objects all go at once (HAProxy's entries over one connection, NGINX's lines in one reload): their
# clearing jobs go first. Kinds that take one call an object, in threads of their own (ALB rules): one job a spec.
ONE_SHOT = frozenset({"haproxy_acl", "nginx_allowlist"})
PER_OBJECT = frozenset({"aws_alb_listener_rule", "aws_iam_policy"})
CLEAR_THREADS = 4  # specs one clearing job clears side by side: their calls wait on the load balancers, not the CPU
CLEAR_WAIT = timedelta(seconds=5)  # the grants' revokes wait this long at most for the clearing jobs to finish
_FINISHED = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


def enforce_lockdown(now: datetime | None = None) -> int:
    """While a lockdown is on: cancel every pending (or scheduled) request (once its creation is recorded), fail every
    approved one, and end every grant.

    Run every second by every worker's loop, so that a grant a job applied after the lockdown began
    (it was running when it started) is ended too; each job is queued once (`enqueue_many_once`). The
    clearing jobs go first, the workers to themselves; each grant's own revoke follows once they have
    finished (or after CLEAR_WAIT), to record its end.
    """
    rt = current().rt
    lockdown = rt.store.lockdown()
    if lockdown is None:
        return 0
    now = now or utcnow()
    stamp = int(lockdown.at.timestamp())
    open_requests = rt.store.open_requests()
    # First, at once and side by side: the clearing jobs remove every object jit-lb holds at every grant spec.
    clears = []
    for pack in clearing_packs(specs_to_sweep(rt, open_requests)):
        records = [json.dumps(spec_record(spec), sort_keys=True) for spec in pack]
        digest = hashlib.sha256("\n".join(records).encode()).hexdigest()[:16]
        clears.append((f"clear-{digest}-{stamp}", clear_specs, tuple(records)))
    acted = enqueue_many_once(rt, clears, LOCKDOWN_HOLD)
    marked = rt.store.unrecorded_ids()
    for request in open_requests:
        if request.status is Status.PENDING and request.visible_id in marked:
            # Its request.created is not written yet: no record goes before it. A pass once it is cancels it (it
            # cannot be approved meanwhile), or a worker closes it as never recorded.
            continue
        if request.status in {Status.PENDING, Status.APPROVED}:
            acted += _close_for_lockdown(rt, request, now)
    if now - lockdown.at < CLEAR_WAIT and not _finished(rt, [job_id for job_id, _, _ in clears]):
        return acted  # the revokes would take the workers (and the load balancers' API) from the clearing jobs
    # Then each grant's own revoke records its end (verified by reading its objects back) and tells people.
    revokes = [
        (f"revoke-lockdown-{request.id}-{stamp}", revoke_access, (request.id, EndReason.LOCKDOWN.value, lockdown.by))
        for request in open_requests
        if request.status is Status.GRANTED
    ]
    return acted + enqueue_many_once(rt, revokes, LOCKDOWN_HOLD)


def clearing_packs(specs: list[GrantSpec]) -> list[list[GrantSpec]]:
    """The clearing jobs, as the grant specs each clears, in the order they are queued.

    A kind that takes one call an object (ALB rules, 16 calls at a time) has a job a spec; the
    others' specs go CLEAR_THREADS to a job, cleared side by side. The kinds whose objects go at once
    come first; then the per-object jobs and the others take turns, so that both run from the start
    (three ALB jobs on three workers would leave the security groups for last).
    """
    by_kind: dict[str, list[GrantSpec]] = {}
    for spec in specs:
        by_kind.setdefault(spec.kind, []).append(spec)
    first: list[list[GrantSpec]] = []
    single: list[list[GrantSpec]] = []
    packed: list[list[GrantSpec]] = []
    for kind, kind_specs in by_kind.items():
        if kind in PER_OBJECT:
            single += [[spec] for spec in kind_specs]
            continue
        packs = [kind_specs[start : start + CLEAR_THREADS] for start in range(0, len(kind_specs), CLEAR_THREADS)]
        (first if kind in ONE_SHOT else packed).extend(packs)
    turns = itertools.zip_longest(single, packed)
    return first + [pack for turn in turns for pack in turn if pack is not None]


def _finished(rt: Runtime, job_ids: list[str]) -> bool:
    """Whether every one of these jobs has run (a job RQ no longer keeps ran long ago), in one round trip."""
    jobs = Job.fetch_many(job_ids, connection=rt.store.redis)
    return all(job is None or job.get_status(refresh=False) in _FINISHED for job in jobs)


def _close_for_lockdown(rt: Runtime, request: AccessRequest, now: datetime) -> int:
    why = "cancelled by the lockdown"
    # Pending, or approved ahead of a scheduled start, it is withdrawn; approved to be applied now, it fails.
    withdrawn = request.status is Status.PENDING or request.waits_for_start
    change = (lambda r: requests.cancel(r, why, now)) if withdrawn else (lambda r: requests.fail(r, why, now))
    event = "request.cancelled" if withdrawn else "grant.failed"

    def record(_: AccessRequest, after: AccessRequest) -> None:
        rt.audit.request_event(event, after, actor="system", why=why, error=why, must=True)

    try:
        _, after = rt.store.transition(request.id, change, record)
    except TransitionError:
        return 0
    queue_notice(rt, after, Notice.CANCELLED if event == "request.cancelled" else Notice.FAILED)
    return 1


def clear_specs(*specs: str) -> str:
    """A lockdown's first move on some grant specs (JSON records): `clear_spec` for each, side by side in threads."""
    if len(specs) == 1:
        return clear_spec(specs[0])
    with ThreadPoolExecutor(min(CLEAR_THREADS, len(specs))) as pool:
        return "; ".join(pool.map(clear_spec, specs))


def clear_spec(spec: str) -> str:
    """A lockdown's first move on one grant spec: every object jit-lb holds there is removed, at once.

    Each grant's own revoke job follows to record its end (it finds its objects gone, and verifies
    that by reading them back). Objects that are not jit-lb's to judge (an anomaly, no lease on an
    AWS object) are left alone, as the sweep leaves them.
    """
    rt = current().rt
    if rt.store.lockdown() is None:
        return "no lockdown"
    grant_spec = parse_grant_spec(json.loads(spec))
    provider = provider_for(grant_spec, rt.store.redis, rt.policy)
    try:
        objects = provider.list_managed()
    except ProviderError as err:
        log.error("lockdown could not list a load balancer; its grants' revoke jobs try again", error=str(err))
        return "unreachable"
    ours = [obj for obj in objects if not obj.anomaly and (obj.leases or provider.owns_unleased)]
    try:
        # No scope locks: nothing is granted during a lockdown, and a revoke job that races this finds the object gone.
        removed = provider.drop_all(ours)
    except PartialDropError as err:
        for obj, why in err.failed:
            log.error("lockdown could not remove an object; its revoke jobs try again", object=obj.ref, error=str(why))
        gone = err.removed
        outcome = f"{len(gone)} removed, {len(err.failed)} failed"
    except ProviderError as err:
        log.error("lockdown could not remove objects; their revoke jobs try again", error=str(err))
        return "failed"
    else:
        gone, outcome = ours, f"{removed} removed"
    for obj in gone:
        record_removed(rt, grant_spec.kind, obj, sorted(obj.request_ids()), "lockdown", True)
    return outcome
