"""A modal's private_metadata is checked on submission like a button's value: a `jit_mfa`, `jit_deny` or
`jit_extend` submission whose metadata names another request, or that another person submits, is refused
and recorded, and changes nothing."""

from __future__ import annotations

import json
from typing import Any

from jit_lb.access.requests import Status
from tests.service.test_mfa import enrol, next_code
from tests.service.world import APPROVALS, World


def with_request(metadata: str, request_id: str) -> str:
    """The same metadata, naming another request (as someone who edits a submission's payload would)."""
    about: dict[str, Any] = json.loads(metadata)
    about["request"] = request_id
    return json.dumps(about, separators=(",", ":"))


async def test_a_step_up_form_altered_to_approve_another_request_is_refused(world: World) -> None:
    """The code typed for approving A does not approve B, and another approver cannot submit A's form."""
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(require_mfa=True))
    enrol(world, "U0DEV1")
    secret = enrol(world, "U0APPROVER1")
    other = enrol(world, "U0APPROVER2")
    for user in ("U0APPROVER1", "U0APPROVER2"):
        world.rt.store.redis.delete(f"jit:mfa:proven:{user}")
    first = await world.request(text="request lb-prod 30m first")
    second = await world.request(text="request lb-prod 30m second")
    view = world.decisions.approve_form("U0APPROVER1", first.id, (APPROVALS, str(first.card_ts)))
    assert view is not None

    forged = with_request(view["private_metadata"], second.id)
    answer = await world.forms.submit_code("U0APPROVER1", forged, next_code(secret))
    assert answer is not None
    assert "not one jit-lb opened for you" in answer["code"]
    borrowed = await world.forms.submit_code("U0APPROVER2", view["private_metadata"], next_code(other))
    assert borrowed is not None
    assert "not one jit-lb opened for you" in borrowed["code"]

    refused = [r for r in world.audit() if r["event"] == "mfa.failed" and "a form refused" in r["why"]]
    assert [r["actor"] for r in refused] == ["U0APPROVER1", "U0APPROVER2"]
    assert world.rt.store.get(second.id).status is Status.PENDING
    assert world.rt.store.get(first.id).status is Status.PENDING
    assert world.rt.mfa.proven_for("U0APPROVER1") is None  # a refused form proves nobody


async def test_a_deny_form_altered_to_deny_another_request_is_refused(world: World) -> None:
    """The deny form of A, edited to name B or submitted by someone else, denies nothing and is recorded."""
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(deny_reason="required"))
    first = await world.request(text="request lb-prod 30m first")
    second = await world.request(text="request lb-prod 30m second")
    view = world.decisions.deny_form("U0APPROVER1", first.id, (APPROVALS, str(first.card_ts)))
    assert view is not None

    forged = with_request(view["private_metadata"], second.id)
    errors, order = world.decisions.check_deny("U0APPROVER1", forged, {"reason": "no"})
    assert order is None
    assert "not one jit-lb opened for you" in errors["reason"]
    errors, order = world.decisions.check_deny("U0APPROVER2", view["private_metadata"], {"reason": "no"})
    assert order is None

    refused = [r for r in world.audit() if r["event"] == "approval.refused"]
    assert [(r["actor"], "a form refused" in r["why"]) for r in refused] == [
        ("U0APPROVER1", True),
        ("U0APPROVER2", True),
    ]
    assert world.rt.store.get(second.id).status is Status.PENDING
    assert world.rt.store.get(first.id).status is Status.PENDING


async def test_an_extend_form_altered_to_extend_another_grant_is_refused(world: World) -> None:
    """The extend form of one grant, edited to name another, or submitted by someone else, asks for nothing."""
    first = await world.granted(text="request lb-prod 30m first")
    second = await world.granted(text="request lb-prod 20m second")
    view = world.forms.extend_view("U0DEV1", first.id)
    assert view is not None

    forged = with_request(view["private_metadata"], second.id)
    errors = world.forms.submit_extend("U0DEV1", forged, {"duration": "10m", "reason": "more"})
    assert errors is not None
    assert "not one jit-lb opened for you" in str(errors)
    borrowed = world.forms.submit_extend("U0DEV2", view["private_metadata"], {"duration": "10m", "reason": "more"})
    assert borrowed is not None

    refused = [r for r in world.audit() if r["event"] == "request.refused" and "a form refused" in r["why"]]
    assert [r["actor"] for r in refused] == ["U0DEV1", "U0DEV2"]
    assert world.rt.store.get(second.id).extension is None
    assert world.rt.store.get(first.id).extension is None
    assert world.outbox() == []
    assert world.forms.submit_extend("U0DEV1", view["private_metadata"], {"duration": "10m", "reason": "more"}) is None
    assert world.rt.store.get(first.id).extension is not None  # the form as jit-lb opened it still works
