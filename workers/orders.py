"""A grant order at the load balancer and what a job does with it under its scope lock: check, undo, release."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import GrantSpec
from jit_lb.access.requests import AccessRequest
from jit_lb.runtime import Runtime
from workers.judge import lease_verdict, longest_grant
from workers.providers.base import GrantOrder, ManagedObject, PartialDropError, Provider, objects_of

log = structlog.get_logger("jit_lb.jobs")


def order_of(request: AccessRequest, ends_at: datetime, spec: GrantSpec) -> GrantOrder:
    return GrantOrder(
        request_id=request.id,
        target=request.target,
        spec=spec,
        ends_at=ends_at,
        cidr=request.cidr,
        role_name=request.role_name,
    )


def holds_lease(objects: list[ManagedObject], order: GrantOrder) -> bool:
    return all(order.request_id in obj.request_ids() for obj in objects)


def roll_back(rt: Runtime, provider: Provider, order: GrantOrder) -> None:
    """Take back whatever part of a grant was applied; what cannot be taken back the sweep removes."""
    try:
        with rt.store.lock(provider.scope(order)):
            for obj in objects_of(provider, order.request_id):
                provider.drop(obj, {order.request_id}, fresh=True)
    except ProviderError as err:
        log.error("rollback failed; the sweep will remove the leftovers", request_id=order.request_id, error=str(err))


def release(
    rt: Runtime, provider: Provider, order: GrantOrder, request: AccessRequest, now: datetime
) -> tuple[list[str], bool, dict[str, str]]:
    """Drop the request's leases, and any other lease on the same objects that is judged over (a forged one).

    Verified when each object the grant recorded or the load balancer shows holding its lease,
    read back, is gone or holds no lease of it. Finding nothing is not verification: a grant that
    recorded no object and shows none is reported unverified.
    """
    with rt.store.lock(provider.scope(order)):
        held = objects_of(provider, order.request_id)
        refs = {obj.ref for obj in held}
        for ref in set(request.object_refs) - refs:
            obj = provider.read(ref)  # a recorded object the listing did not show
            if obj is not None and order.request_id in obj.request_ids():
                held.append(obj)
        refs |= set(request.object_refs)
        others = rt.store.find_many({rid for obj in held for rid in obj.request_ids()} - {order.request_id})
        longest = longest_grant(rt.policy, order.spec)
        removed, dropped = [], {}
        for obj in held:
            over = {order.request_id}
            for lease in obj.leases:
                why = lease_verdict(lease.ends_at, others.get(lease.request_id), now, longest)
                if lease.request_id != order.request_id and why is not None:
                    over.add(lease.request_id)
                    dropped[lease.request_id] = why
            deleted = provider.drop(obj, over, fresh=True)
            removed.append(obj.description + ("" if deleted else " (kept: still leased by another grant)"))
        after = [provider.read(ref) for ref in sorted(refs)]
        verified = bool(refs) and all(obj is None or order.request_id not in obj.request_ids() for obj in after)
    return removed, verified, dropped


@dataclass
class Released:
    """What releasing one grant did: the objects removed (or kept for another grant), verified, leases dropped."""

    removed: list[str] = field(default_factory=list)
    verified: bool = False
    dropped: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # why the load balancer would not remove some object of it


def release_many(
    rt: Runtime, provider: Provider, orders: list[GrantOrder], requests: dict[str, AccessRequest], now: datetime
) -> dict[str, Released]:
    """`release` for many grants of one grant spec at once, as a lockdown removes objects.

    One listing finds every object holding their leases; the objects no live grant still holds are
    removed together (`drop_all`: a security group's rules in one RevokeSecurityGroupIngress a
    hundred, an ALB's rules without reading each again, HAProxy's entries on one connection); an
    object another grant still holds loses only these leases. One listing after verifies them all.
    """
    ids = {order.request_id for order in orders}
    with contextlib.ExitStack() as locks:
        for scope in sorted({provider.scope(order) for order in orders}):  # sorted: two batches never deadlock
            locks.enter_context(rt.store.lock(scope))
        held = [obj for obj in provider.list_managed() if obj.request_ids() & ids]
        listed = {obj.ref for obj in held}
        for request in requests.values():
            for ref in set(request.object_refs) - listed:
                obj = provider.read(ref)  # a recorded object the listing did not show
                if obj is not None and request.id in obj.request_ids():
                    held.append(obj)
                    listed.add(ref)
        released = {request_id: Released() for request_id in ids}
        whole: list[tuple[ManagedObject, set[str]]] = []
        partial: list[tuple[ManagedObject, set[str]]] = []
        for obj, over in _leases_over(rt, held, ids, orders[0].spec, now, released):
            (whole if over >= obj.request_ids() else partial).append((obj, over))
        _drop_whole(provider, whole, ids, released)
        for obj, over in partial:
            deleted = provider.drop(obj, over, fresh=True)
            for request_id in over & ids:
                released[request_id].removed.append(
                    obj.description + ("" if deleted else " (kept: still leased by another grant)")
                )
        after = {obj.ref: obj for obj in provider.list_managed()}
    for request_id, result in released.items():
        refs = {obj.ref for obj in held if request_id in obj.request_ids()} | set(requests[request_id].object_refs)
        result.verified = bool(refs) and all(
            ref not in after or request_id not in after[ref].request_ids() for ref in refs
        )
    return released


def _drop_whole(
    provider: Provider, whole: list[tuple[ManagedObject, set[str]]], ids: set[str], released: dict[str, Released]
) -> None:
    """Remove the objects no live grant holds, together; each grant is told the ones gone and why any was refused."""
    refused: dict[str, str] = {}
    try:
        provider.drop_all([obj for obj, _ in whole])
    except PartialDropError as err:  # the others are gone, and are recorded as such
        refused = {obj.ref: str(why) for obj, why in err.failed}
    for obj, over in whole:
        for request_id in over & ids:
            if obj.ref in refused:
                released[request_id].refused.append(refused[obj.ref])
            else:
                released[request_id].removed.append(obj.description)


def _leases_over(
    rt: Runtime, held: list[ManagedObject], ids: set[str], spec: GrantSpec, now: datetime, released: dict[str, Released]
) -> list[tuple[ManagedObject, set[str]]]:
    """Each object with the leases to drop from it: the batch's own, and any other judged over (a forged one)."""
    others = rt.store.find_many({rid for obj in held for rid in obj.request_ids()} - ids)
    longest = longest_grant(rt.policy, spec)
    judged = []
    for obj in held:
        over = obj.request_ids() & ids
        for lease in obj.leases:
            why = lease_verdict(lease.ends_at, others.get(lease.request_id), now, longest)
            if lease.request_id not in ids and why is not None:
                over.add(lease.request_id)
                for request_id in obj.request_ids() & ids:
                    released[request_id].dropped[lease.request_id] = why
        judged.append((obj, over))
    return judged


def record_removed(
    rt: Runtime, kind: str, obj: ManagedObject, dropped: list[str], why: str | dict[str, str], deleted: bool
) -> None:
    """The record of an object the sweep or a lockdown removed (or whose leases it dropped): kept whatever the log."""
    rt.audit.record(
        "sweep.removed",
        actor="system",
        target=None,
        kind=kind,
        object=obj.ref,
        description=obj.description,
        leases_dropped=dropped,
        why=why,
        deleted=deleted,
        must=True,
    )
