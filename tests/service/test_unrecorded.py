"""A request stored by a web that stopped before its `request.created` was written is never approved, and a worker
closes it on the record (a security review's finding: approvable from an App Home, granted with no record)."""

from __future__ import annotations

import asyncio
import atexit
from datetime import timedelta
from typing import Any

import pytest
import redis

from devtools.redis_proxy import HoldingProxy
from jit_lb.access import commands, requests
from jit_lb.access.connections import WORKER, RedisAddress, connect
from jit_lb.access.requests import AccessRequest, EndReason, Status
from jit_lb.access.store import RequestStore
from jit_lb.clock import utcnow
from jit_lb.metrics import CHORES
from tests.helpers import pending
from tests.service.world import DEVS, World, buttons
from workers import lockdown, reconcile
from workers.loops import ReconcileLoop


def closed_dms(world: World, user: str = "U0DEV1") -> list[dict[str, Any]]:
    """The DMs telling `user` a request of theirs was closed as never recorded, once the workers ran the notices."""
    world.post_notices()
    return [dm for dm in world.slack.dms(user) if "could not record" in str(dm.get("text"))]


def stored_unrecorded(world: World, text: str = "request lb-prod 30m debugging 502s") -> list[AccessRequest]:
    """What the web's first step stores for `/jit <text>` of U0DEV1 before it writes the record: the web is killed
    right after Redis answered, so neither the record, nor the take-back, nor the card ever comes."""
    parsed = commands.parse_command(text)
    assert isinstance(parsed, commands.RequestCommand)
    members = world.rt.approvers.directory.members
    if len(parsed.targets) > 1:
        group = commands.build_group(world.rt.policy, "U0DEV1", parsed, utcnow(), DEVS, members)
        return world.rt.store.create_group(group)
    return [world.rt.store.create(commands.build_request(world.rt.policy, "U0DEV1", parsed, utcnow(), DEVS, members))]


async def test_an_unrecorded_request_is_never_approved_and_a_worker_closes_it_on_the_record(world: World) -> None:
    """An approver's App Home click on a request whose creation was never recorded is refused, on the record (it was
    approved, and its grant queued); a worker later closes it, recording request.cancelled."""
    [request] = stored_unrecorded(world)
    world.decisions.decide("U0APPROVER1", "jit_approve", request.id, None)  # from the App Home: no card
    assert world.rt.store.get(request.id).status is Status.PENDING
    assert world.rt.queue.job_ids == []
    assert "not recorded" in world.slack.dms("U0APPROVER1")[-1]["text"]

    assert reconcile.close_unrecorded(utcnow()) == 0  # a web still writing it has time to
    assert world.rt.store.get(request.id).status is Status.PENDING
    assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=1)) == 1
    closed = world.rt.store.get(request.id)
    assert closed.status is Status.CANCELLED
    assert world.events(request.id) == ["approval.refused", "request.cancelled"]  # nothing else was done
    assert "never recorded" in world.record("request.cancelled", request.id)["why"]
    assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=2)) == 0  # once


async def test_an_unrecorded_request_is_neither_denied_nor_withdrawn_until_recorded(world: World) -> None:
    """A denial from an approver's App Home and the requester's `/jit cancel` of a request whose creation is not
    recorded are refused, as an approval is, and change nothing: the log never shows a request decided before it was
    created (before, either went through, and a web stopped meanwhile left a denial or a withdrawal with no
    request.created); the worker closes it, the one decision recorded."""
    world.edit_policy(lambda policy: policy["targets"]["lb-prod"].update(deny_reason="required"))
    [request] = stored_unrecorded(world)
    world.decisions.decide("U0APPROVER1", "jit_deny", request.id, None, reason="not now")
    assert "not recorded yet, so it cannot be denied" in world.slack.dms("U0APPROVER1")[-1]["text"]
    assert world.decisions.deny_form("U0APPROVER1", request.id, None) is None  # refused at once, no reason asked
    answer = await world.ask("U0DEV1", f"cancel {request.id}")
    assert "not recorded yet, so it cannot be cancelled" in answer
    assert world.rt.store.get(request.id).status is Status.PENDING
    [refused] = [record for record in world.audit() if record["event"] == "approval.refused"]
    assert (refused["request_id"], refused["action"], refused["actor"]) == (request.id, "jit_deny", "U0APPROVER1")
    assert "not recorded yet" in refused["why"]
    assert "not recorded yet" in [r for r in world.audit() if r["event"] == "request.refused"][-1]["why"]

    assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=1)) == 1
    assert world.rt.store.get(request.id).status is Status.CANCELLED
    assert [event for event in world.events(request.id) if event.startswith("request.")] == ["request.cancelled"]
    assert "never recorded" in world.record("request.cancelled", request.id)["why"]


async def test_a_lockdown_cancels_a_new_request_only_once_its_creation_is_recorded(world: World) -> None:
    """A lockdown's pass a second finds a request whose web has stored it but not yet written its request.created: it
    leaves it (before, it recorded request.cancelled first, and request.created came after it); the first pass
    after the web records and announces it cancels it, so its log reads created, then cancelled."""
    [request] = stored_unrecorded(world)
    world.rt.store.start_lockdown("U0ADMIN", utcnow(), "suspected credential leak")
    lockdown.enforce_lockdown()
    assert world.rt.store.get(request.id).status is Status.PENDING
    assert world.events(request.id) == []

    world.rt.audit.request_event("request.created", request, actor="U0DEV1")  # the web carries on
    await world.rt.store.announce_async(request.id)
    lockdown.enforce_lockdown()
    assert world.rt.store.get(request.id).status is Status.CANCELLED
    assert world.events(request.id) == ["request.created", "request.cancelled"]
    assert world.record("request.cancelled", request.id)["why"] == "cancelled by the lockdown"


async def test_a_request_of_several_targets_waits_for_its_record_to_be_denied_expired_or_cancelled(
    world: World,
) -> None:
    """The group's mark holds for every part: a denial and a withdrawal are refused, its expiry (its approval window
    closed) and a lockdown's pass leave every part pending; a worker closes each part as never recorded."""
    parts = stored_unrecorded(world, "request lb-prod,lb-two 30m debugging 502s")
    group = parts[0].visible_id
    world.decisions.decide("U0APPROVER1", "jit_deny", group, None, reason="not now")
    assert "not recorded yet" in await world.ask("U0DEV1", f"cancel {group}")
    reconcile.enqueue_due(parts[0].pending_until + timedelta(seconds=1))
    assert world.rt.queue.job_ids == []  # no expiry queued
    world.rt.store.start_lockdown("U0ADMIN", utcnow(), "suspected credential leak")
    lockdown.enforce_lockdown()
    assert [world.rt.store.get(part.id).status for part in parts] == [Status.PENDING] * len(parts)
    assert [e for e in world.events(group) if e.startswith("request.")] == []

    assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=1)) == len(parts)
    assert [world.rt.store.get(part.id).status for part in parts] == [Status.CANCELLED] * len(parts)
    assert [e for e in world.events(group) if e.startswith("request.")] == ["request.cancelled"] * len(parts)


async def test_expiry_waits_for_the_record(world: World) -> None:
    """A request whose approval window closes before its web wrote request.created is not expired before it (before,
    request.expired came first, or alone when the web had stopped); once recorded, its expiry is queued."""
    [request] = stored_unrecorded(world)
    later = request.pending_until + timedelta(seconds=1)
    reconcile.enqueue_due(later)
    assert world.rt.queue.job_ids == []
    world.rt.audit.request_event("request.created", request, actor="U0DEV1")  # the web carries on
    await world.rt.store.announce_async(request.id)
    reconcile.enqueue_due(later)
    assert world.rt.queue.job_ids == [f"expire-due-{request.id}"]


async def test_a_recorded_request_is_denied_and_withdrawn_as_ever(world: World) -> None:
    """Once recorded (the ordinary path), a denial and a withdrawal go through at once."""
    await world.ask("U0DEV1", "request lb-prod 30m first")
    await world.ask("U0DEV1", "request lb-prod 30m second")
    first, second = world.outbox()
    world.decisions.decide("U0APPROVER1", "jit_deny", first, None, reason="not now")
    assert "withdrew" in await world.ask("U0DEV1", f"cancel {second}")
    assert world.events(first) == ["request.created", "request.denied"]
    assert world.events(second) == ["request.created", "request.cancelled"]


async def test_the_requester_of_a_request_closed_as_never_recorded_is_told_with_request_again(
    world: World,
) -> None:
    """The person who asked (told "submitted", or nothing, as their web stopped) learns by DM that the request was
    closed because its creation could not be recorded, nothing granted, with Request again filling the form in
    (before, the request silently disappeared); told once."""
    [request] = stored_unrecorded(world)
    assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=1)) == 1

    [dm] = closed_dms(world)
    assert request.id in dm["text"] and "`lb-prod`" in dm["text"] and "nothing was granted" in dm["text"]
    assert [("jit_rerequest", request.id)] == [(b["action_id"], b["value"]) for b in buttons(dm["blocks"])]
    view = world.forms.rerequest_view("U0DEV1", request.id)
    assert view is not None
    target = next(block for block in view["blocks"] if block.get("block_id") == "target")
    assert [option["value"] for option in target["element"]["initial_options"]] == ["lb-prod"]
    assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=2)) == 0
    assert len(closed_dms(world)) == 1


async def test_a_request_closed_otherwise_before_the_worker_closes_it_is_not_told_as_never_recorded(
    world: World,
) -> None:
    """Should anything close a marked request otherwise before the worker comes (no path does now: approval, denial,
    withdrawal, expiry and a lockdown wait for its record), the worker leaves it as it is: no DM saying it was
    closed as never recorded."""
    [request] = stored_unrecorded(world)
    world.rt.store.transition(request.id, lambda r: requests.cancel(r, "cancelled by the lockdown", utcnow()))
    assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=1)) == 0
    assert world.rt.store.get(request.id).status is Status.CANCELLED
    assert closed_dms(world) == []


async def test_every_part_of_an_unrecorded_request_of_several_targets_is_closed(world: World) -> None:
    """A request of several targets stored, its web killed before the records: no part may be approved, and each
    is closed on the record."""
    parts = stored_unrecorded(world, "request lb-prod,lb-two 30m debugging 502s")
    world.decisions.decide("U0APPROVER1", "jit_approve", parts[0].visible_id, None)
    assert [world.rt.store.get(part.id).status for part in parts] == [Status.PENDING] * len(parts)
    assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=1)) == len(parts)
    assert [world.rt.store.get(part.id).status for part in parts] == [Status.CANCELLED] * len(parts)
    closed = [record for record in world.audit(parts[0].visible_id) if record["event"] == "request.cancelled"]
    assert sorted(record["part"] for record in closed) == sorted(part.id for part in parts)
    assert "request.approved" not in world.events(parts[0].visible_id)
    [dm] = closed_dms(world)  # one for the request people see, not one a target
    assert parts[0].visible_id in dm["text"] and "`lb-prod`, `lb-two`" in dm["text"]
    assert [("jit_rerequest", parts[0].visible_id)] == [(b["action_id"], b["value"]) for b in buttons(dm["blocks"])]


async def test_a_recorded_request_is_approved_from_the_app_home_and_never_closed(world: World) -> None:
    """The ordinary path: recorded, then announced; approvable from the App Home, and the worker leaves it be."""
    await world.ask("U0DEV1", "request lb-prod 30m debugging 502s")
    [request_id] = world.outbox()
    assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=1)) == 0
    world.decisions.decide("U0APPROVER1", "jit_approve", request_id, None)
    assert world.rt.store.get(request_id).status is Status.APPROVED
    assert world.events(request_id) == ["request.created", "request.approved"]


def test_a_card_queuing_whose_answer_was_lost_and_tried_again_keeps_the_request(redis_url: str) -> None:
    """The web's client tries a broken connection once more: the script that unmarked a recorded request and queued
    its card ran, its answer alone lost, and is run again. That second run is told what the first did: the request
    stands, its card queued once (before, the second run found it no longer marked, the web took the recorded request
    back as closed, a card perhaps already posted, and told the person to try again)."""
    upstream = redis.Redis.from_url(redis_url)
    with HoldingProxy(upstream.connection_pool.connection_kwargs["port"]) as proxy:
        store = RequestStore(connect(RedisAddress(proxy.url), WORKER), proxy.url)  # the web's client

        async def announce() -> str:
            warm = await store.create_async(pending)
            await store.announce_async(warm.id)  # the scripts loaded and the connections made
            made = await store.create_async(pending)
            proxy.lose(b"EVALSHA")
            await store.announce_async(made.id)
            return made.id

        request_id = asyncio.run(announce())
        assert store.get(request_id).status is Status.PENDING
        assert upstream.lrange("jit:outbox", 0, -1).count(request_id.encode()) == 1
        assert not store.unrecorded(store.get(request_id))
    upstream.close()


async def test_a_break_glass_grant_whose_web_stopped_before_announcing_it_is_announced_and_reviewed(
    world: World,
) -> None:
    """The web is killed (or Redis drops it) right after a break-glass request turned approved and was recorded, before
    its announcement and review were queued: a worker finds it still marked, and queues both (before, it only dropped
    the mark; the sweep granted it later, and the approvers were never told nor asked to review it)."""
    world.edit_policy(lambda policy: policy.update(break_glass={"users": ["U0DEV2"], "targets": ["lb-prod"]}))
    parsed = commands.RequestCommand("lb-prod", timedelta(minutes=30), None, "prod is down, INC-9")
    members = world.rt.approvers.directory.members
    build = commands.build_request(world.rt.policy, "U0DEV2", parsed, utcnow(), None, members, emergency=True)
    request = world.rt.store.create(build)
    world.rt.audit.request_event("request.created", request, actor="U0DEV2", break_glass=True)
    world.rt.store.transition(
        request.id,
        lambda r: requests.break_glass(r, "U0DEV2", utcnow()),
        lambda _, after: world.rt.audit.request_event("grant.breakglass", after, actor="U0DEV2"),
    )  # the web stops here

    assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=1)) == 0  # nothing to close: it stands
    assert world.rt.store.get(request.id).status is Status.APPROVED
    assert world.outbox() == [request.id]
    assert world.rt.store.reviews_due(utcnow() + timedelta(days=2)) == [request.id]
    assert not world.rt.store.unrecorded(request)
    assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=2)) == 0
    assert world.outbox() == []  # once


async def test_a_web_recording_a_request_after_a_worker_closed_it_queues_no_card_and_leaves_it_closed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit log is slow: a worker closes the request as never recorded while the web still writes its
    request.created. The web then queues no card, the request stays closed (never approvable), the person is told
    it does not count, and the log closes it once."""
    write = world.rt.audit.request_event_async

    async def slow(event: str, request: AccessRequest, **fields: object) -> None:
        if event == "request.created":
            assert reconcile.close_unrecorded(utcnow() + timedelta(minutes=1)) == 1  # 30 s went by meanwhile
        await write(event, request, **fields)  # type: ignore[arg-type]

    monkeypatch.setattr(world.rt.audit, "request_event_async", slow)
    answer = await world.ask("U0DEV1", "request lb-prod 30m debugging 502s")
    [request_id] = [record["request_id"] for record in world.audit() if record["event"] == "request.created"]
    assert world.outbox() == []
    assert world.rt.store.get(request_id).status is Status.CANCELLED
    assert "nothing was requested" in answer
    assert sorted(world.events(request_id)) == ["request.cancelled", "request.created"]
    assert closed_dms(world) == []  # told by its web's answer; not told twice


async def test_a_request_one_worker_is_closing_is_left_to_it_and_taken_over_when_that_worker_died(
    world: World,
) -> None:
    """Every worker looks each second: one that finds a request another worker claimed a moment ago leaves it to that
    worker (before, both closed it at once, and a break-glass grant's announcement was queued twice); a claim that
    was never finished (its worker died between claim and close) is taken over once it is as old as a mark."""
    [request] = stored_unrecorded(world)
    later = utcnow() + timedelta(minutes=1)
    assert world.rt.store.claim_unrecorded(request.id, later - timedelta(seconds=30), later)  # a worker, then gone
    assert reconcile.close_unrecorded(later) == 0  # another, the same second
    assert world.rt.store.get(request.id).status is Status.PENDING
    assert world.rt.store.unrecorded(request)  # still never approvable meanwhile
    assert reconcile.close_unrecorded(later + timedelta(minutes=1)) == 1
    assert world.rt.store.get(request.id).status is Status.CANCELLED
    assert world.events(request.id) == ["request.cancelled"]
    assert len(closed_dms(world)) == 1


async def test_a_worker_that_died_after_closing_and_before_telling_is_taken_over_and_the_person_told(
    world: World,
) -> None:
    """A worker closed the request on the record and died before queuing the requester's DM (its claim left): the
    worker that takes the claim over finds it closed as never recorded and tells the person, once."""
    [request] = stored_unrecorded(world)
    later = utcnow() + timedelta(minutes=1)
    assert world.rt.store.claim_unrecorded(request.id, later - timedelta(seconds=30), later)
    world.rt.store.transition(request.id, reconcile._never_recorded, reconcile._record_never_recorded)  # then died
    assert reconcile.close_unrecorded(later + timedelta(minutes=1)) == 0  # nothing left to close
    assert world.events(request.id) == ["request.cancelled"]
    assert len(closed_dms(world)) == 1


async def test_a_chore_that_fails_every_second_holds_up_no_other(world: World) -> None:
    """A request marked unrecorded whose stored data cannot be read makes closing it fail every turn: the chores after
    it still run, the expiry of another request and the sweep among them, which removes a closed request's leftover
    rules (before, the first chore to fail ended the turn, and with it every second's expiries, lost revokes and the
    sweep that ends access at the load balancer)."""
    leftover = await world.granted()
    world.rt.store.transition(leftover.id, lambda r: requests.end(r, utcnow(), EndReason.REVOKED, "U0DEV1", [], False))
    [broken] = stored_unrecorded(world)
    client = world.rt.store.redis
    client.set(f"jit:req:{broken.id}", "{not a request")
    client.zadd("jit:unrecorded", {broken.id: (utcnow() - timedelta(minutes=1)).timestamp()})
    await world.ask("U0DEV1", "request lb-prod 30m another")
    [waiting] = world.outbox()
    client.zadd("jit:pending", {waiting: (utcnow() - timedelta(seconds=1)).timestamp()})  # its window closed

    loop = ReconcileLoop(world.rt)
    atexit.unregister(world.rt.audit.checkpoint)  # the worker's checkpoint at stop: this world is gone by then
    loop.chore_turn()
    loop.sweeping.join(timeout=30)

    assert f"expire-due-{waiting}" in world.rt.queue.job_ids
    assert world.ingress() == []  # the sweep's turn came, and it removed the leftover
    assert world.rt.metrics is not None  # the failure is counted, by chore, for JitChoreFailing
    failures = world.rt.metrics.registry.get_sample_value("jit_chore_failures_total", {"chore": "close_unrecorded"})
    assert failures == 1


def test_every_chore_of_the_loop_has_its_failure_series_from_the_start(world: World) -> None:
    """jit_chore_failures_total has a series for each chore the loop runs before any fails (JitChoreFailing's
    increase() then sees the first failure), named as the loop names them."""
    loop = ReconcileLoop(world.rt)
    atexit.unregister(world.rt.audit.checkpoint)
    assert tuple(chore.__name__ for chore in loop.due_each_second()) == CHORES
