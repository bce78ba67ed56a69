"""Emergencies in-process: break-glass and its review, lockdown, freezes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jit_lb.access.commands import BreakGlassCommand
from jit_lb.access.errors import CommandError
from jit_lb.access.requests import EndReason, Status
from jit_lb.audit.writer import AuditLog
from slack_out.ids import ActionId
from tests.service.world import APPROVALS, World, buttons, id_in
from workers import jobs, lockdown, notices, reconcile


@pytest.fixture(name="emergency")
def fixture_emergency(world: World) -> World:
    """U0DEV2 may break glass on lb-prod for up to 1h; U0ADMIN is an admin."""

    def change(policy: dict[str, Any]) -> None:
        policy["admins"] = ["U0ADMIN"]
        policy["roles"] = {"oncall": ["U0DEV2"]}
        policy["break_glass"] = {"users": ["role:oncall"], "targets": ["lb-prod"], "max_duration": "1h"}
        policy["break_glass"]["review_within"] = "1h"

    world.edit_policy(change)
    return world


def test_break_glass_is_refused_to_anyone_not_listed(emergency: World) -> None:
    """U0DEV1 is not in break_glass.users: refused, recorded, nothing stored."""
    with pytest.raises(CommandError, match="you may not use break-glass"):
        emergency.commands.breakglass("U0DEV1", _glass("lb-prod", 30))
    assert emergency.rt.store.open_requests() == []


async def test_break_glass_is_applied_without_a_click_and_reviewed(emergency: World) -> None:
    """A listed user's break-glass is granted at once, announced with its approvers, and an approver reviews it."""
    world = emergency
    answer = await world.ask("U0DEV2", "breakglass lb-prod 30m prod is down, INC-7")
    request_id = id_in(answer)
    assert world.rt.store.get(request_id).status is Status.APPROVED
    assert world.queued() == [("workers.jobs.grant_access", (request_id,))]
    world.work()
    assert world.rt.store.get(request_id).status is Status.GRANTED
    assert len(world.rules_of(request_id)) == 2
    assert [e for e in world.events(request_id) if e in {"request.created", "grant.breakglass", "grant.applied"}] == [
        "request.created",
        "grant.breakglass",
        "grant.applied",
    ]

    assert world.outbox() == [request_id]
    assert notices.announce(request_id) == "posted"
    [card] = [m for m in world.slack.messages(APPROVALS) if "Break-glass" in m["text"]]
    assert "<@U0APPROVER1>" in json.dumps(card["blocks"])
    assert {"jit_review_ok", "jit_review_flag"} == {b["action_id"] for b in buttons(card["blocks"])}

    request = world.rt.store.get(request_id)
    card_at = (str(request.card_channel), str(request.card_ts))
    world.decisions.review("U0DEV2", ActionId.REVIEW_OK, request_id, card_at)  # its own requester
    assert world.rt.store.get(request_id).review is None
    world.decisions.review("U0APPROVER1", ActionId.REVIEW_FLAG, request_id, card_at)
    after = world.rt.store.get(request_id)
    assert (after.review, after.reviewed_by) == ("flagged", "U0APPROVER1")
    assert world.record("review.flagged", request_id)["actor"] == "U0APPROVER1"
    assert "flagged break-glass" in world.texts(world.slack.dms("U0ADMIN"))


def test_an_unreviewed_break_glass_is_announced_again(emergency: World) -> None:
    """Past review_within with no review, the reconciler queues a second announcement, once a period."""
    world = emergency
    reply = world.commands.breakglass("U0DEV2", _glass("lb-prod", 30))
    request_id = id_in(reply.text)
    later = datetime.now(UTC) + timedelta(hours=1, minutes=1)
    assert reconcile.announce_overdue_reviews(later) == 1
    assert reconcile.announce_overdue_reviews(later) == 0
    assert any(job.func_name == "workers.notices.announce_review" for job in world.rt.notices.jobs)
    assert request_id


async def test_lockdown_ends_everything_refuses_and_lifts(emergency: World) -> None:
    """Lockdown: grants end (reason lockdown), pending requests are cancelled, requests refused until lifted."""
    world = emergency
    granted = await world.granted()
    pending = await world.request(user="U0DEV2", text="request lb-prod 30m pending one")

    assert "only an admin" in await world.ask("U0DEV1", "lockdown on because")
    assert "Lockdown on" in await world.ask("U0ADMIN", "lockdown on suspected credential leak")
    assert "since" in await world.ask("U0DEV1", "lockdown status")
    # One clearing job for the policy's two security groups and a cancel for the pending; once the clearing job has
    # run, the grant's own revoke, which records its end.
    assert lockdown.enforce_lockdown() == 2
    world.work()
    assert lockdown.enforce_lockdown() == 1
    world.work()

    assert world.rules_of(granted.id) == []
    revoked = world.record("grant.revoked", granted.id)
    assert (revoked["reason"], revoked["actor"]) == (EndReason.LOCKDOWN.value, "U0ADMIN")
    assert world.rt.store.get(pending.id).status is Status.CANCELLED
    assert "locked down" in await world.ask("U0DEV1", "request lb-prod 30m now")
    with pytest.raises(CommandError, match="locked down"):
        world.commands.breakglass("U0DEV2", _glass("lb-prod", 30))

    assert "lifted" in await world.ask("U0ADMIN", "lockdown off")
    assert "waiting for approval" in await world.ask("U0DEV1", "request lb-prod 30m after")
    assert [e for e in world.events() if e.startswith("lockdown.")] == ["lockdown.started", "lockdown.ended"]


async def test_a_grant_applied_by_a_job_running_when_the_lockdown_began_is_removed(emergency: World) -> None:
    """The job applied it after the lockdown began: the reconciler's next round ends it."""
    world = emergency
    request = await world.request()
    world.click("U0APPROVER1", "jit_approve", request)
    assert jobs.grant_access(request.id) == "granted"  # as if it was already running
    world.rt.store.start_lockdown("U0ADMIN", datetime.now(UTC), "during a grant job")
    lockdown.enforce_lockdown()
    world.work()
    assert world.rules_of(request.id) == []
    lockdown.enforce_lockdown()  # the clearing jobs have run: the grant's own revoke records its end
    world.work()
    assert world.record("grant.revoked", request.id)["reason"] == EndReason.LOCKDOWN.value


async def test_a_clearing_job_that_never_runs_holds_the_revokes_back_no_longer_than_clear_wait(
    emergency: World,
) -> None:
    """The grants' own revokes wait for the clearing jobs, but not for one whose worker died: CLEAR_WAIT after the
    lockdown began they are queued whatever became of the clearing jobs."""
    world = emergency
    granted = await world.granted()
    began = datetime.now(UTC)
    world.rt.store.start_lockdown("U0ADMIN", began, "a worker dies")
    assert lockdown.enforce_lockdown(began) == 1  # the clearing job, left in the queue
    assert lockdown.enforce_lockdown(began + lockdown.CLEAR_WAIT - timedelta(seconds=1)) == 0
    assert lockdown.enforce_lockdown(began + lockdown.CLEAR_WAIT) == 1
    assert ("workers.jobs.revoke_access", (granted.id, EndReason.LOCKDOWN.value, "U0ADMIN")) in world.queued()


async def test_a_frozen_target_is_refused_naming_the_freeze_and_break_glass_still_works(emergency: World) -> None:
    """Inside a freeze window lb-prod is refused with the freeze's reason; break-glass still grants it."""
    world = emergency
    now = datetime.now(UTC)
    freeze = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
        "targets": ["lb-prod"],
        "reason": "holiday change freeze",
    }
    world.edit_policy(lambda policy: policy.update(freezes=[freeze]))
    answer = await world.ask("U0DEV1", "request lb-prod 30m please")
    assert "frozen until" in answer
    assert "holiday change freeze" in answer
    assert "waiting for approval" in await world.ask("U0DEV1", "request lb-two 30m another target")
    reply = world.commands.breakglass("U0DEV2", _glass("lb-prod", 30))
    assert "Break-glass" in reply.text


def _glass(target: str, minutes: int) -> BreakGlassCommand:
    return BreakGlassCommand(target, timedelta(minutes=minutes), "prod is down")


async def test_no_way_in_during_a_lockdown(emergency: World) -> None:
    """During a lockdown the form is refused too, and a click on a pending card counts for nothing."""
    world = emergency
    pending = await world.request()
    world.rt.store.start_lockdown("U0ADMIN", datetime.now(UTC), "drill")
    errors = await world.forms.submit_request("U0DEV1", {"target": "lb-prod", "duration": "30m", "reason": "x"})
    assert errors is not None
    assert "locked down" in str(errors)
    world.click("U0APPROVER1", "jit_approve", pending)
    assert world.rt.store.get(pending.id).status is Status.PENDING
    assert "locked down" in world.record("approval.refused", pending.id)["why"]


async def test_a_lockdown_is_not_lifted_without_its_record(emergency: World) -> None:
    """With the audit log full, `/jit lockdown off` is refused and the lockdown stays on."""
    world = emergency
    assert "Lockdown on" in await world.ask("U0ADMIN", "lockdown on drill")
    world.rt.audit = AuditLog.open("/dev/full")
    assert "audit log cannot be written" in await world.ask("U0ADMIN", "lockdown off")
    assert world.rt.store.lockdown() is not None


async def test_a_lockdown_fails_an_approved_request_not_yet_applied(emergency: World) -> None:
    """Approved, its grant job queued but not run when the lockdown begins: nothing is applied, the request ends
    failed ("cancelled by the lockdown"), and the requester is told."""
    world = emergency
    request = await world.request()
    world.click("U0APPROVER1", "jit_approve", request)
    assert world.rt.store.get(request.id).status is Status.APPROVED

    assert "Lockdown on" in await world.ask("U0ADMIN", "lockdown on suspected credential leak")
    lockdown.enforce_lockdown()
    world.work()

    ended = world.rt.store.get(request.id)
    assert (ended.status, ended.failure) == (Status.FAILED, "cancelled by the lockdown")
    assert world.rules_of(request.id) == []
    assert "grant.applied" not in world.events(request.id)
    assert "cancelled by the lockdown" in world.texts(world.slack.dms("U0DEV1"))


async def test_lockdown_status_says_who_since_when_and_why(emergency: World) -> None:
    """`/jit lockdown status`, asked by anyone: off before; on, naming the admin, since when and the reason."""
    world = emergency
    assert await world.ask("U0DEV1", "lockdown status") == "No lockdown: requests are open."
    await world.ask("U0ADMIN", "lockdown on suspected credential leak")

    status = await world.ask("U0DEV1", "lockdown status")

    assert "<@U0ADMIN>" in status
    assert "suspected credential leak" in status
    assert "since" in status
