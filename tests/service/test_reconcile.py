"""The reconciler in this process, with time as a parameter: the sweep, and the queueing of ended and lost work."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from jit_lb.access import requests
from jit_lb.access.requests import EndReason, Status
from tests.service.world import APPROVALS, MISSING_GROUP, World, id_in
from workers import jobs, lockdown, reconcile
from workers.judge import GRACE
from workers.loops import ENDED_CHECK_SECONDS


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
    """Grants of one spec due together are one revoke job, queued once a little before their ends (the lead)."""
    first = await world.granted("U0DEV1")
    second = await world.granted("U0DEV2")
    assert first.ends_at is not None and second.ends_at is not None
    earlier, later = sorted([first.ends_at, second.ends_at])

    # One job (one spec): its lead is JIT_REVOKE_LEAD (1 s) plus JIT_REVOKE_JOB_SECONDS (0.5 s, nothing measured).
    assert reconcile.enqueue_ended(now=earlier - timedelta(seconds=5)) == 0
    assert world.queued() == []

    assert reconcile.enqueue_ended(now=later - timedelta(seconds=1)) == 2  # before the end, not after it
    assert reconcile.enqueue_ended(now=later + timedelta(seconds=1)) == 2

    by_end = sorted([first, second], key=lambda r: (r.ends_at, r.id))
    ids, ends = [r.id for r in by_end], [int(r.ends_at.timestamp()) for r in by_end if r.ends_at]
    assert [("workers.jobs.revoke_expired", (ids, ends))] == world.queued()
    assert [f"revoke-{ids[0]}-{ends[0]}-2"] == world.rt.queue.job_ids
    assert world.rt.store.revoke_job(first.id) == world.rt.store.revoke_job(second.id) == world.rt.queue.job_ids[0]


async def test_access_is_gone_at_the_load_balancer_by_the_approved_end(world: World) -> None:
    """The loop, ticking every 0.1 s towards the end, queues the revoke; from the moment its job starts, the clock
    moving on by the time the work took, the rules are gone at moto before the approved end. (The in-process
    worker's own start-up is left out: a running worker takes a queued job at once.)"""
    request = await world.granted()
    assert request.ends_at is not None
    end = request.ends_at.timestamp()
    clock = end - 10.0
    while not world.queued():
        clock += ENDED_CHECK_SECONDS
        reconcile.enqueue_ended(now=datetime.fromtimestamp(clock, UTC))
    gone: list[float] = []

    def watch() -> None:
        while world.rules_of(request.id):
            time.sleep(0.01)
        gone.append(time.time())

    watcher = threading.Thread(target=watch)
    watcher.start()
    world.work()
    watcher.join(timeout=30)

    job = world.rt.queue.fetch_job(world.rt.store.revoke_job(request.id) or "")
    assert job is not None and job.started_at is not None
    assert world.rules_of(request.id) == []
    assert clock + (gone[0] - job.started_at.replace(tzinfo=UTC).timestamp()) <= end
    assert world.record("grant.revoked", request.id)["verified"] is True


async def test_a_batch_of_grants_is_revoked_together_and_their_records_follow(world: World) -> None:
    """Grants of one spec due together go in one job: every rule of theirs removed, each end recorded and verified."""
    grants = [await world.granted(user, f"request lb-prod 30m batch {user}") for user in ("U0DEV1", "U0DEV2")]
    due = [(r.id, int(r.ends_at.timestamp())) for r in grants if r.ends_at]

    assert jobs.revoke_expired([rid for rid, _ in due], [end for _, end in due]) == "2 revoked"

    assert world.ingress() == []
    for request in grants:
        revoked = world.record("grant.revoked", request.id)
        assert (revoked["reason"], revoked["verified"], len(revoked["removed"])) == ("expired", True, 2)
        assert world.rt.store.get(request.id).status is Status.REVOKED
    assert world.rt.store.revoke_costs(time.time()) is not None  # the job's costs measured for the next leads


async def test_a_batch_leaves_a_rule_another_live_grant_shares(world: World) -> None:
    """A grant ending in a batch drops only its own lease from a rule a longer grant of the same source holds."""
    short = await world.granted("U0DEV1", "request lb-prod 30m short one")
    long = await world.granted("U0DEV1", "request lb-prod 1h long one")
    assert short.ends_at is not None

    assert jobs.revoke_expired([short.id], [int(short.ends_at.timestamp())]) == "1 revoked"

    assert len(world.rules_of(long.id)) == 2
    assert world.rules_of(short.id) == []
    revoked = world.record("grant.revoked", short.id)
    assert all("kept: still leased by another grant" in line for line in revoked["removed"])
    assert revoked["verified"] is True


async def test_a_batch_stands_down_for_a_grant_extended_since(world: World) -> None:
    """A grant whose end moved after its batch was queued is left granted; the rest of the batch ends."""
    moved = await world.granted("U0DEV1")
    ending = await world.granted("U0DEV2")
    assert moved.ends_at is not None and ending.ends_at is not None
    old_end = int(moved.ends_at.timestamp()) - 600

    assert jobs.revoke_expired([moved.id, ending.id], [old_end, int(ending.ends_at.timestamp())]) == "1 revoked"

    assert world.rt.store.get(moved.id).status is Status.GRANTED
    assert len(world.rules_of(moved.id)) == 2
    assert world.rt.store.get(ending.id).status is Status.REVOKED


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


async def test_a_stored_request_that_cannot_be_read_blinds_neither_the_sweep_nor_a_lockdown(world: World) -> None:
    """One open request's stored data cannot be read (a bad write, a record of a newer version): the sweep still ends a
    grant past its end, and a lockdown still ends a live one (before, reading the open requests raised, and with it
    every sweep and every lockdown pass, every second, for as long as that record stayed)."""
    ended = await world.granted()
    assert ended.ends_at is not None
    unreadable = id_in(await world.ask("U0DEV2", "request lb-prod 30m unreadable"))
    assert world.outbox() == [unreadable]  # its card is not the subject
    world.rt.store.redis.set(f"jit:req:{unreadable}", "{not a request")

    assert reconcile.sweep(now=ended.ends_at + GRACE + timedelta(seconds=1)) == 2
    assert world.ingress() == []
    assert world.rt.store.get(ended.id).status is Status.REVOKED

    live = await world.granted(text="request lb-prod 30m after the first")
    assert world.ingress() != []
    world.rt.store.start_lockdown("U0ADMIN", datetime.now(UTC), "suspected credential leak")
    lockdown.enforce_lockdown()
    world.work()
    lockdown.enforce_lockdown()  # the clearing jobs have run: the grant's own revoke records its end
    world.work()
    assert world.ingress() == []
    assert world.record("grant.revoked", live.id)["reason"] == EndReason.LOCKDOWN.value
