"""The reconciler in this process, with time as a parameter: the sweep, and the queueing of ended and lost work."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jit_lb.access import requests
from jit_lb.access.requests import EndReason, Status
from tests.service.world import APPROVALS, MISSING_GROUP, World
from workers import jobs, reconcile
from workers.judge import GRACE


async def test_sweep_removes_a_grant_whose_lease_ended_and_closes_it(world: World) -> None:
    """Past a grant's end plus GRACE the sweep removes its rules at moto and records the end as `sweep`."""
    request = await world.granted()
    assert request.ends_at is not None

    assert reconcile.sweep(now=request.ends_at + GRACE + timedelta(seconds=1)) == 2

    assert world.ingress() == []
    after = world.rt.store.get(request.id)
    assert (after.status, after.end_reason, after.ended_by) == (Status.REVOKED, EndReason.SWEEP, "system")
    revoked = world.record("grant.revoked", request.id)
    assert (revoked["actor"], revoked["reason"]) == ("system", "sweep")
    swept = [r for r in world.audit() if r["event"] == "sweep.removed"]
    assert [[request.id], [request.id]] == [r["leases_dropped"] for r in swept]
    assert all(r["deleted"] for r in swept)
    assert world.rt.store.open_requests() == []
    assert [(request.id, "ended")] == world.notices_queued()
    world.work()
    assert "ended (sweep)" in world.texts(world.slack.thread(APPROVALS, str(request.card_ts)))


async def test_sweep_records_every_rule_it_removed(world: World) -> None:
    """The sweep's `grant.revoked` record (and the request's removed objects) name every rule it removed."""
    request = await world.granted()
    assert request.ends_at is not None

    reconcile.sweep(now=request.ends_at + GRACE + timedelta(seconds=1))

    assert len(world.record("grant.revoked", request.id)["removed"]) == 2
    assert len(world.rt.store.get(request.id).removed_objects) == 2


async def test_sweep_leaves_a_grant_within_its_time(world: World) -> None:
    """Before the grant's end (and within GRACE after it, the revoke job's turn) the sweep removes nothing."""
    request = await world.granted()
    assert request.ends_at is not None

    assert reconcile.sweep(now=request.ends_at - timedelta(seconds=1)) == 0
    assert reconcile.sweep(now=request.ends_at + GRACE - timedelta(seconds=1)) == 0

    assert len(world.rules_of(request.id)) == 2
    assert world.rt.store.get(request.id).status == Status.GRANTED
    assert "sweep.removed" not in world.events()


async def test_sweep_removes_a_leftover_of_a_closed_request(world: World) -> None:
    """A rule still leased to a request Redis has closed (its release was lost) is removed at once, whatever its end."""
    request = await world.granted()
    granted_at = request.granted_at
    assert granted_at is not None
    world.rt.store.transition(request.id, lambda r: requests.end(r, granted_at, EndReason.REVOKED, "U0DEV1", [], False))

    assert reconcile.sweep(now=granted_at) == 2

    assert world.ingress() == []
    assert [[request.id], [request.id]] == [r["leases_dropped"] for r in world.audit() if r["event"] == "sweep.removed"]
    assert "grant.revoked" not in world.events(request.id)  # closed already: the sweep records no second end


async def test_sweep_of_one_broken_target_does_not_stop_the_others(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The policy's target on a missing group fails its part of the sweep, logged; the other group is still swept."""
    request = await world.granted()
    assert request.ends_at is not None
    capsys.readouterr()

    assert reconcile.sweep(now=request.ends_at + timedelta(minutes=5)) == 2

    assert world.ingress() == []
    logged = "".join(capsys.readouterr())
    assert "sweep of one grant spec failed" in logged
    assert f"Security group {MISSING_GROUP} in us-east-1 not found" in logged


async def test_enqueue_ended_queues_one_revoke_per_end(world: World) -> None:
    """Each grant's revoke is queued once, a little before its end (the lead), however many loops look."""
    first = await world.granted("U0DEV1")
    second = await world.granted("U0DEV2")
    assert first.ends_at is not None and second.ends_at is not None
    earlier, later = sorted([first.ends_at, second.ends_at])

    # The lead is JIT_REVOKE_LEAD (2 s) plus the two revokes due at 15 a second: about 2.1 s.
    assert reconcile.enqueue_ended(now=earlier - timedelta(seconds=5)) == 0
    assert world.queued() == []

    assert reconcile.enqueue_ended(now=later - timedelta(seconds=1)) == 2  # before the end, not after it
    assert reconcile.enqueue_ended(now=later + timedelta(seconds=1)) == 2

    ends = {first.id: int(first.ends_at.timestamp()), second.id: int(second.ends_at.timestamp())}
    expected = [
        ("workers.jobs.revoke_access", (request_id, "expired", "system", ends[request_id]))
        for request_id in sorted([first.id, second.id])
    ]
    assert expected == sorted(world.queued())
    assert sorted([f"revoke-{first.id}", f"revoke-{second.id}"]) == sorted(world.rt.queue.job_ids)


async def test_enqueue_due_expires_pending_requests_past_their_window(world: World) -> None:
    """`enqueue_due` queues the expiry of a pending request whose window closed, once within its hold."""
    request = await world.request()

    assert reconcile.enqueue_due(now=request.pending_until - timedelta(seconds=1)) == 0
    assert world.queued() == []

    reconcile.enqueue_due(now=request.pending_until)
    reconcile.enqueue_due(now=request.pending_until + timedelta(seconds=1))

    assert [("workers.jobs.expire_request", (request.id,))] == world.queued()
    assert [f"expire-due-{request.id}"] == world.rt.queue.job_ids


async def test_sweep_requeues_an_approval_whose_grant_job_was_lost(world: World) -> None:
    """An approved request left ungranted (its job lost) gets its grant queued again by the sweep."""
    request = await world.request()
    world.click("U0APPROVER1", "jit_approve", request)
    world.rt.queue.empty()
    approved = world.rt.store.get(request.id)
    assert approved.decided_at is not None

    reconcile.sweep(now=approved.decided_at + timedelta(seconds=10))
    assert world.queued() == []

    reconcile.sweep(now=approved.decided_at + reconcile.STUCK_APPROVED + timedelta(seconds=1))

    assert [("workers.jobs.grant_access", (request.id,))] == world.queued()
    world.work()
    assert world.rt.store.get(request.id).status == Status.GRANTED


async def test_an_early_revoke_stands_down_when_the_grant_was_extended(world: World) -> None:
    """A revoke queued before the old end finds a new end and leaves the grant alone; the loop queues the new one."""
    request = await world.granted()
    assert request.ends_at is not None
    old_end = int(request.ends_at.timestamp()) - 600  # the end it was queued for, before an extension moved it
    assert jobs.revoke_access(request.id, "expired", "system", old_end) == "extended since"
    assert world.rt.store.get(request.id).status is Status.GRANTED
    assert jobs.revoke_access(request.id, "expired", "system", int(request.ends_at.timestamp())) == "revoked"
