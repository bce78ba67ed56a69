"""Scheduled windows (`--at`): approved ahead, judged again and applied at their start, or ended `expired`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jit_lb.access.requests import AccessRequest, Status
from slack_out.home import home_of
from tests.service.world import World, buttons
from workers import jobs, lockdown

ASKED = timedelta(minutes=20)  # how long ago the requests that start now were asked
LEAD = timedelta(minutes=15)  # ... and how long after asking they start: five minutes ago


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def scheduled(world: World, start: datetime, *, asked: datetime | None = None) -> AccessRequest:
    """A request for lb-prod, 30m from `start`, asked at `asked` (default now) and approved a minute later."""
    if asked is not None:
        world.commands.clock = lambda: asked
        world.decisions.clock = lambda: asked + timedelta(minutes=1)
    request = await world.request("U0DEV1", f"request lb-prod 30m --at {iso(start)} OPS-1 change window")
    world.click("U0APPROVER1", "jit_approve", request)
    approved = world.rt.store.get(request.id)
    assert (approved.status, approved.starts_at) == (Status.APPROVED, start)
    return approved


async def started(world: World) -> AccessRequest:
    """A request whose start came five minutes ago, approved ahead of it."""
    now = datetime.now(UTC).replace(microsecond=0)
    return await scheduled(world, now - ASKED + LEAD, asked=now - ASKED)


async def test_a_scheduled_request_is_approved_ahead_and_not_applied_before_its_start(world: World) -> None:
    """Before its start a scheduled request stays `approved`: its grant job waits for the start, nothing is at moto,
    and the card, `/jit list` and the audit record name the start."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    request = await scheduled(world, start)

    assert jobs.grant_access(request.id) == "waits for its start"

    assert world.rt.store.get(request.id).status == Status.APPROVED
    assert world.rules_of(request.id) == []
    stamp = int(start.timestamp())
    assert f"start-{request.id}-{stamp}" in world.rt.queue.scheduled_job_registry.get_job_ids()
    assert world.record("request.created", request.id)["starts_at"] == start.isoformat()
    assert world.record("request.approved", request.id)["starts_at"] == start.isoformat()
    card = world.slack.message(str(request.card_channel), str(request.card_ts))
    assert card is not None and "(scheduled)" in str(card["blocks"]) and f"<!date^{stamp}^" in str(card["blocks"])
    listed = await world.ask("U0DEV1", "list")
    assert f"`{request.id}`" in listed and "approved, scheduled, starts" in listed


async def test_at_its_start_the_grant_is_applied_and_lasts_its_duration_from_the_start(world: World) -> None:
    """Judged at its start (its approvals older than `pending_ttl` still count), the grant is applied; its end is
    the start plus the duration, however late the job ran."""
    request = await started(world)

    assert jobs.grant_access(request.id) == "granted"

    granted = world.rt.store.get(request.id)
    assert granted.status == Status.GRANTED
    assert request.starts_at is not None
    assert granted.ends_at == request.starts_at + timedelta(minutes=30)
    assert len(world.rules_of(request.id)) == 2


async def test_a_requester_who_left_the_policy_before_the_start_gets_nothing(world: World) -> None:
    """A requester no longer among the target's requesters at the start: the request ends `expired` naming why,
    nothing reaches moto, and the requester's DM says so with Request again."""
    request = await started(world)
    world.edit_policy(lambda policy: policy["targets"]["lb-prod"].update(requesters=["U0DEV2"]))

    assert jobs.grant_access(request.id) == "expired"

    ended = world.rt.store.get(request.id)
    assert ended.status == Status.EXPIRED
    assert world.rules_of(request.id) == []
    record = world.record("request.expired", request.id)
    assert "<@U0DEV1> may no longer request `lb-prod`" in record["why"]
    assert record["starts_at"] == str(request.starts_at and request.starts_at.isoformat())
    assert "grant.applied" not in world.events(request.id)
    world.work()
    [dm] = [m for m in world.slack.dms("U0DEV1") if "expired at its start" in str(m.get("text"))]
    assert "may no longer request" in dm["text"]
    assert [b["action_id"] for b in buttons(dm["blocks"])] == ["jit_rerequest"]


async def test_a_freeze_over_the_window_at_its_start_ends_it(world: World) -> None:
    """A freeze added since the approval, over the window, is judged at the start: `expired`, naming the freeze."""
    request = await started(world)
    now = datetime.now(UTC)
    freeze = {"from": iso(now), "to": iso(now + timedelta(hours=2)), "reason": "db migration", "targets": ["lb-prod"]}
    world.edit_policy(lambda policy: policy.update(freezes=[freeze]))

    assert jobs.grant_access(request.id) == "expired"

    assert "db migration" in world.record("request.expired", request.id)["why"]
    assert world.rules_of(request.id) == []


async def test_a_lockdown_at_the_start_means_nothing_is_applied(world: World) -> None:
    """A start that falls in a lockdown: the request ends `expired` naming the lockdown, nothing applied."""
    request = await started(world)
    world.rt.store.start_lockdown("U0ADMIN", datetime.now(UTC), "incident")

    assert jobs.grant_access(request.id) == "expired"

    assert "locked down" in world.record("request.expired", request.id)["why"]
    assert world.rules_of(request.id) == []


async def test_a_lockdown_before_the_start_cancels_the_scheduled_request(world: World) -> None:
    """A lockdown ends a scheduled request waiting for its start (`request.cancelled`, naming the lockdown); lifted
    before the start, the request stays ended and nothing is applied at its start."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    request = await scheduled(world, start)
    world.rt.store.start_lockdown("U0ADMIN", datetime.now(UTC), "incident")

    assert lockdown.enforce_lockdown() >= 1

    world.rt.store.end_lockdown()
    cancelled = world.rt.store.get(request.id)
    assert (cancelled.status, cancelled.failure) == (Status.CANCELLED, "cancelled by the lockdown")
    assert "lockdown" in world.record("request.cancelled", request.id)["why"]
    assert jobs.grant_access(request.id) == "request is cancelled"
    assert world.rules_of(request.id) == []


async def test_the_requester_cancels_a_scheduled_request(world: World) -> None:
    """`/jit cancel` withdraws an approved scheduled request before its start; its start then applies nothing."""
    request = await scheduled(world, datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1))

    answer = await world.ask("U0DEV1", f"cancel {request.id}")

    assert "withdrew" in answer
    assert world.rt.store.get(request.id).status == Status.CANCELLED
    assert world.record("request.cancelled", request.id)["actor"] == "U0DEV1"
    assert jobs.grant_access(request.id) == "request is cancelled"
    assert world.rules_of(request.id) == []


def refusals(world: World) -> list[dict[str, Any]]:
    return [r for r in world.audit() if r["event"] == "request.refused"]


@pytest.mark.parametrize(
    ("at", "why"),
    [
        ("2020-01-01T00:00Z", "is in the past"),
        ("LATER", "more than 7d ahead (`limits.schedule_ahead`)"),
        ("2030-01-01T00:00", "names no time zone"),
        ("tomorrow", "is not a time"),
    ],
)
async def test_at_in_the_past_too_far_ahead_or_unreadable_is_refused(world: World, at: str, why: str) -> None:
    """`--at` in the past, further than `limits.schedule_ahead`, without a zone or not a time: refused naming why,
    nothing stored, the refusal recorded."""
    if at == "LATER":
        at = iso(datetime.now(UTC) + timedelta(days=7, minutes=1))

    answer = await world.ask("U0DEV1", f"request lb-prod 30m --at {at} OPS-1 change window")

    assert why in answer
    assert world.rt.store.open_requests() == []
    assert world.outbox() == []
    assert why in refusals(world)[-1]["why"]


async def test_the_forms_start_field_schedules_the_request_or_names_what_is_wrong(world: World) -> None:
    """The request form's optional Starting field takes `--at`'s grammar: a bad one is an error on `start` and
    nothing is stored; a good one makes a scheduled request."""
    values = {"target": "lb-prod", "duration": "30m", "reason": "OPS-1 change window"}
    past = await world.forms.submit_request("U0DEV1", values | {"start": "2020-01-01T00:00Z"})
    assert isinstance(past, dict) and "is in the past" in past["start"]
    assert world.rt.store.open_requests() == []

    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    assert await world.forms.submit_request("U0DEV1", values | {"start": iso(start)}) is None

    [request] = world.rt.store.open_requests()
    assert (request.starts_at, request.duration_seconds) == (start, 1800)


async def test_the_home_shows_a_scheduled_request_with_its_start_and_cancel(world: World) -> None:
    """The requester's App Home lists an approved scheduled request with its start, and Cancel."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    request = await scheduled(world, start)

    home = home_of(world.rt, "U0DEV1", world.rt.store.open_requests())

    text = str(home["blocks"])
    assert f"approved, scheduled: starts <!date^{int(start.timestamp())}^" in text
    assert [("jit_cancel", request.id)] == [(b["action_id"], b["value"]) for b in buttons(home["blocks"])]
