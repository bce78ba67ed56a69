"""Break-glass within its own section's rules: its longest duration, its targets, MFA, and who is listed when the
grant is applied (docs/operating.md, Emergencies)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from jit_lb.access.commands import BreakGlassCommand
from jit_lb.access.errors import CommandError
from jit_lb.access.requests import Status
from tests.service.test_mfa import enrol, next_code
from tests.service.world import World, id_in
from workers import jobs


@pytest.fixture(name="glass")
def fixture_glass(world: World) -> World:
    """U0DEV2 may break glass on lb-prod only, for at most 30m."""

    def change(policy: dict[str, Any]) -> None:
        policy["admins"] = ["U0ADMIN"]
        policy["break_glass"] = {"users": ["U0DEV2"], "targets": ["lb-prod"], "max_duration": "30m"}

    world.edit_policy(change)
    return world


def breakglass_of(target: str, minutes: int) -> BreakGlassCommand:
    return BreakGlassCommand(target, timedelta(minutes=minutes), "prod is down, INC-9")


async def test_break_glass_longer_than_its_max_duration_is_refused(glass: World) -> None:
    """45m where break_glass.max_duration is 30m: refused, recorded, nothing stored, nothing queued."""
    answer = await glass.ask("U0DEV2", "breakglass lb-prod 45m prod is down, INC-9")
    assert "break-glass grants at most 30m" in answer
    assert glass.rt.store.open_requests() == []
    assert glass.queued() == []
    assert "break-glass grants at most 30m" in glass.record("request.refused")["why"]
    with pytest.raises(CommandError, match="at most 30m"):  # the step-up's follow-up calls the service itself
        glass.commands.breakglass("U0DEV2", breakglass_of("lb-prod", 31))


async def test_break_glass_on_a_target_the_section_does_not_cover_is_refused(glass: World) -> None:
    """lb-two is not in break_glass.targets: refused, recorded, nothing stored."""
    answer = await glass.ask("U0DEV2", "breakglass lb-two 10m prod is down, INC-9")
    assert "break-glass does not cover `lb-two`" in answer
    assert glass.rt.store.open_requests() == []
    assert glass.queued() == []


async def test_break_glass_on_an_mfa_target_still_asks_for_a_code(glass: World) -> None:
    """On a require_mfa target break-glass opens the step-up; nothing is granted without the code, then it is."""
    world = glass
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(require_mfa=True))
    refused = await world.ask("U0DEV2", "breakglass lb-prod 10m prod is down, INC-9")
    assert "not enrolled" in refused
    secret = enrol(world, "U0DEV2")
    world.rt.store.redis.delete("jit:mfa:proven:U0DEV2")

    reply = world.commands.breakglass("U0DEV2", breakglass_of("lb-prod", 10))
    assert reply.view is not None
    assert world.rt.store.open_requests() == []
    assert world.queued() == []
    assert await world.forms.submit_code("U0DEV2", reply.view["private_metadata"], "000000") == {
        "code": "wrong code (4 tries left)"
    }
    assert world.rt.store.open_requests() == []
    assert await world.forms.submit_code("U0DEV2", reply.view["private_metadata"], next_code(secret)) is None
    created = world.slack.wait_for(lambda: [r for r in world.audit() if r["event"] == "grant.breakglass"])
    assert created[0]["mfa"] is True


async def test_a_person_removed_from_break_glass_users_gets_nothing_when_the_grant_is_applied(glass: World) -> None:
    """Broken glass, then U0DEV2 left break_glass.users before the worker applied it: the grant fails, nothing lands."""
    world = glass
    request_id = id_in(await world.ask("U0DEV2", "breakglass lb-prod 10m prod is down, INC-9"))
    assert world.rt.store.get(request_id).status is Status.APPROVED
    world.edit_policy(lambda p: p["break_glass"].update(users=["U0DEV1"]))

    assert jobs.grant_access(request_id) == "failed"

    assert world.rt.store.get(request_id).status is Status.FAILED
    assert "break-glass no longer covers <@U0DEV2>" in world.record("grant.failed", request_id)["error"]
    assert world.rules_of(request_id) == []
