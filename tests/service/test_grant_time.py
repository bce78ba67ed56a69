"""What the grant job judges again when it applies an approved request (a security review's findings): a freeze
declared since the request was made, and an on-call auto-approval whose shift has ended or that has grown stale."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devtools.pagerduty_standin import TEST_TOKEN, PagerDutyStandin
from jit_lb.access.oncall import PagerDuty
from jit_lb.access.requests import Status
from tests.service.world import World
from workers import jobs, lockdown, notices


def freeze_now(reason: str = "incident freeze") -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "from": (now - timedelta(minutes=1)).isoformat(),
        "to": (now + timedelta(hours=2)).isoformat(),
        "reason": reason,
    }


async def test_a_request_approved_inside_a_freeze_declared_since_is_not_granted(world: World) -> None:
    """Asked before the freeze, approved once it is in force: the grant job refuses it, naming the freeze, and
    nothing reaches the load balancer (a freeze refuses requests; an approval must not carry one through it)."""
    request = await world.request()
    world.edit_policy(lambda p: p.update(freezes=[freeze_now()]))
    world.click("U0APPROVER1", "jit_approve", request)
    assert world.rt.store.get(request.id).status is Status.APPROVED

    assert jobs.grant_access(request.id) == "failed"

    assert world.rules_of(request.id) == []
    assert world.rt.store.get(request.id).status is Status.FAILED
    assert "incident freeze" in world.record("grant.failed", request.id)["error"]
    assert "grant.applied" not in world.events(request.id)


@pytest.fixture(name="pd")
def fixture_pd() -> Iterator[PagerDutyStandin]:
    with PagerDutyStandin() as standin:
        standin.add_user("PUSER01", "dev1@example.com", "Dev One")
        yield standin


def auto_approving(world: World, pd: PagerDutyStandin) -> None:
    """lb-prod auto-approves the primary of PSCHED01 (end_with_shift off); U0DEV1's e-mail is in the policy."""

    def change(policy: dict[str, object]) -> None:
        targets = policy["targets"]
        principals = policy["principals"]
        assert isinstance(targets, dict) and isinstance(principals, dict)
        targets["lb-prod"]["auto_approve"] = {"on_call": {"schedules": ["PSCHED01"]}}
        principals["U0DEV1"]["email"] = "dev1@example.com"

    world.rt.pagerduty = PagerDuty(TEST_TOKEN, pd.api_url)
    world.edit_policy(change)


async def auto_approved(world: World, pd: PagerDutyStandin, shift_end: datetime) -> str:
    now = datetime.now(UTC)
    pd.put_on_call("PUSER01", "PSCHED01", level=1, start=now - timedelta(hours=1), end=shift_end)
    answer = await world.ask("U0DEV1", "request lb-prod 30m paged for 502s")
    request_id = world.outbox()[0]
    assert request_id in answer
    assert notices.announce(request_id) == "posted"
    request = world.rt.store.get(request_id)
    assert request.status is Status.APPROVED and request.auto_approval is not None
    world.rt.queue.empty()
    return request_id


async def test_an_auto_approval_whose_shift_ended_before_the_grant_is_not_applied(
    world: World, pd: PagerDutyStandin
) -> None:
    """Approved on call; the grant job runs (late: a worker down, the sweep's retry) after the shift ended, which
    is what the approval stood on: refused, nothing applied, even without end_with_shift."""
    auto_approving(world, pd)
    request_id = await auto_approved(world, pd, datetime.now(UTC) + timedelta(hours=1))
    request = world.rt.store.get(request_id)
    assert request.auto_approval is not None and not request.auto_approval.end_with_shift
    # As the job finds it an hour later: the shift PagerDuty named is over.
    ended = request.auto_approval.model_copy(update={"shift_end": datetime.now(UTC) - timedelta(minutes=1)})
    world.rt.store.update(request_id, auto_approval=ended)

    assert jobs.grant_access(request_id) == "failed"

    assert world.rules_of(request_id) == []
    assert "shift" in world.record("grant.failed", request.id)["error"]


async def test_an_auto_approval_older_than_pending_ttl_is_not_applied(world: World, pd: PagerDutyStandin) -> None:
    """An approval on call counts no longer than a click does (`pending_ttl`): checked long ago, it is refused."""
    auto_approving(world, pd)
    request_id = await auto_approved(world, pd, datetime.now(UTC) + timedelta(hours=8))
    request = world.rt.store.get(request_id)
    assert request.auto_approval is not None
    stale = request.auto_approval.model_copy(
        update={"checked_at": request.auto_approval.checked_at - timedelta(minutes=20)}
    )
    world.rt.store.update(request_id, auto_approval=stale)

    assert jobs.grant_access(request_id) == "failed"

    assert world.rules_of(request_id) == []
    assert "too long ago" in world.record("grant.failed", request.id)["error"]


async def test_a_request_announced_during_a_lockdown_is_not_approved_on_call(
    world: World, pd: PagerDutyStandin
) -> None:
    """The lockdown begins after the request was made, before its card: the requester on call does not approve it (a
    click's approval counts for nothing during a lockdown, nor does PagerDuty's); the lockdown's pass cancels it."""
    auto_approving(world, pd)
    now = datetime.now(UTC)
    pd.put_on_call("PUSER01", "PSCHED01", level=1, start=now - timedelta(hours=1), end=now + timedelta(hours=2))
    await world.ask("U0DEV1", "request lb-prod 30m paged for 502s")
    [request_id] = world.outbox()
    world.rt.store.start_lockdown("U0ADMIN", now, "suspected credential leak")

    assert notices.announce(request_id) == "posted"

    request = world.rt.store.get(request_id)
    assert request.status is Status.PENDING and request.auto_approval is None
    assert "locked down" in (request.not_auto_approved or "")
    assert "request.approved" not in world.events(request_id)
    lockdown.enforce_lockdown()
    assert world.rt.store.get(request_id).status is Status.CANCELLED


async def test_a_lockdown_begun_while_pagerduty_is_asked_stops_the_on_call_approval(
    world: World, pd: PagerDutyStandin
) -> None:
    """A lockdown begins while PagerDuty is asked (the stand-in starts it as the call arrives): the answer "on call"
    no longer approves (before, the lockdown was looked at only before asking, up to 3 s before the approval)."""
    auto_approving(world, pd)
    now = datetime.now(UTC)
    pd.put_on_call("PUSER01", "PSCHED01", level=1, start=now - timedelta(hours=1), end=now + timedelta(hours=2))
    await world.ask("U0DEV1", "request lb-prod 30m paged for 502s")
    [request_id] = world.outbox()
    pd.while_asked = lambda: world.rt.store.start_lockdown("U0ADMIN", now, "suspected credential leak")

    assert notices.announce(request_id) == "posted"

    assert pd.calls("/oncalls"), "PagerDuty was asked"
    request = world.rt.store.get(request_id)
    assert request.status is Status.PENDING and request.auto_approval is None
    assert "locked down" in (request.not_auto_approved or "")
    assert "request.approved" not in world.events(request_id)
