"""Extensions judged as requests are (requesters, freezes, lockdown, MFA, limits): when asked, and again when the
worker is to move the markers at the load balancer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jit_lb.access.requests import AccessRequest
from tests.service.test_mfa import enrol, next_code
from tests.service.world import APPROVALS, World
from workers import jobs, notices


def lease_ends(world: World, request_id: str) -> list[str]:
    """The lease ends the request's rules carry at moto."""
    key = f"jit-lb:lease:{request_id}"
    return [{t["Key"]: t["Value"] for t in rule["Tags"]}[key] for rule in world.rules_of(request_id)]


def freeze_from(start: datetime, reason: str = "year-end freeze") -> dict[str, Any]:
    return {"from": start.isoformat(), "to": (start + timedelta(hours=4)).isoformat(), "reason": reason}


async def approved_extension(world: World, request: AccessRequest, minutes: int = 10) -> AccessRequest:
    """`/jit extend` by the requester, its card posted, one approver's click: the end moved in Redis only."""
    await world.approved_extension(request, minutes)
    after = world.rt.store.get(request.id)
    assert after.extension is None and after.extensions[-1].outcome == "approved"
    return after


async def test_a_requester_removed_from_the_target_cannot_extend(world: World) -> None:
    """U0DEV1 is no longer among lb-prod's requesters: `/jit extend` is refused, naming why."""
    request = await world.granted()
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(requesters=["U0DEV2"]))
    answer = await world.ask("U0DEV1", f"extend {request.id} 10m more")
    world.refused_extension(request, answer, f"you may no longer request `lb-prod`, so you cannot extend {request.id}")


async def test_an_extension_into_a_freeze_is_refused(world: World) -> None:
    """A freeze that starts before the extended end refuses the extension, naming the freeze."""
    request = await world.granted()
    assert request.ends_at is not None
    world.edit_policy(lambda p: p.update(freezes=[freeze_from(request.ends_at + timedelta(minutes=5))]))
    answer = await world.ask("U0DEV1", f"extend {request.id} 10m more")
    assert "an extension may not reach into a freeze" in answer
    assert "year-end freeze" in answer
    assert world.rt.store.get(request.id).extension is None
    assert "waiting for approval" in await world.ask("U0DEV1", f"extend {request.id} 4m just before it")


async def test_no_extension_during_a_lockdown(world: World) -> None:
    """`/jit extend` is refused while jit-lb is locked down."""
    request = await world.granted()
    world.rt.store.start_lockdown("U0ADMIN", datetime.now(UTC), "drill")
    assert "locked down" in await world.ask("U0DEV1", f"extend {request.id} 10m more")
    assert world.rt.store.get(request.id).extension is None


async def test_the_worker_refuses_an_extension_the_policy_no_longer_allows(world: World) -> None:
    """Approved, then the requester left the target's requesters: the markers stay, the end moves back, all told."""
    request = await world.granted()
    before = lease_ends(world, request.id)
    after = await approved_extension(world, request)
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(requesters=["U0DEV2"]))

    assert jobs.extend_access(request.id) == "refused"

    now = world.rt.store.get(request.id)
    assert now.ends_at == request.ends_at
    assert after.ends_at is not None and now.ends_at is not None and after.ends_at > now.ends_at
    assert lease_ends(world, request.id) == before
    refused = world.record("extension.refused", request.id)
    assert "may no longer request `lb-prod`" in refused["why"]
    assert "grant.extended" not in world.events(request.id)
    world.work()
    assert "was approved but not applied" in world.texts(world.slack.dms("U0DEV1"))


async def test_the_worker_refuses_an_extension_into_a_freeze_declared_since(world: World) -> None:
    """A freeze declared after the approval, over the added time: refused when the markers were to move."""
    request = await world.granted()
    before = lease_ends(world, request.id)
    await approved_extension(world, request)
    assert request.ends_at is not None
    world.edit_policy(lambda p: p.update(freezes=[freeze_from(request.ends_at + timedelta(minutes=2))]))

    assert jobs.extend_access(request.id) == "refused"
    assert lease_ends(world, request.id) == before
    assert "year-end freeze" in world.record("extension.refused", request.id)["why"]
    assert world.rt.store.get(request.id).ends_at == request.ends_at


async def test_an_extension_on_an_mfa_target_asks_requester_and_approver_for_codes(world: World) -> None:
    """On lb-prod with require_mfa, the extend opens the step-up; so does the approver's click; both are recorded."""
    request = await world.granted()
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(require_mfa=True))
    requester = enrol(world, "U0DEV1")
    approver = enrol(world, "U0APPROVER2")
    for user in ("U0DEV1", "U0APPROVER2"):
        world.rt.store.redis.delete(f"jit:mfa:proven:{user}")

    reply = await world.commands.command("U0DEV1", f"extend {request.id} 10m still digging", None)
    assert reply.view is not None
    assert world.rt.store.get(request.id).extension is None
    assert await world.forms.submit_code("U0DEV1", reply.view["private_metadata"], next_code(requester)) is None
    world.slack.wait_for(lambda: world.rt.store.get(request.id).extension is not None)
    assert world.record("extension.requested", request.id)["mfa"] is True
    world.outbox()
    notices.announce(request.id)
    extension = world.rt.store.get(request.id).extension
    assert extension is not None and extension.mfa
    card = (APPROVALS, str(extension.card_ts))

    view = world.decisions.approve_form("U0APPROVER2", request.id, card)
    assert view is not None
    world.decisions.decide("U0APPROVER2", "jit_approve", request.id, card)  # the click alone
    assert world.rt.store.get(request.id).extension is not None
    assert await world.forms.submit_code("U0APPROVER2", view["private_metadata"], next_code(approver)) is None
    world.slack.wait_for(lambda: world.rt.store.get(request.id).extension is None)
    assert world.record("extension.approved", request.id)["mfa"] is True
    assert jobs.extend_access(request.id) == "extended"


async def test_the_worker_refuses_an_extension_made_without_codes_on_a_target_that_requires_them_since(
    world: World,
) -> None:
    """Asked and approved without codes; lb-prod requires MFA by the time the markers move: refused."""
    request = await world.granted()
    await approved_extension(world, request)
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(require_mfa=True))
    assert jobs.extend_access(request.id) == "refused"
    assert "without a one-time code" in world.record("extension.refused", request.id)["why"]
