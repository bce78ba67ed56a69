"""Clicks on approval cards through DecisionService in this process: who may decide, and what a decision sets off."""

from __future__ import annotations

import asyncio

import pytest

from jit_lb.access.requests import Status
from tests.service.world import APPROVALS, NETOPS, World, buttons
from workers import jobs


async def test_approval_queues_the_grant_edits_the_card_and_tells_the_requester(world: World) -> None:
    """An approver's click approves the request, queues `grant_access`, edits the card and DMs the requester."""
    request = await world.request()

    world.click("U0APPROVER1", "jit_approve", request)

    after = world.rt.store.get(request.id)
    assert (after.status, after.approvers, after.decided_by) == (Status.APPROVED, ["U0APPROVER1"], "U0APPROVER1")
    assert [("workers.jobs.grant_access", (request.id,))] == world.queued()
    assert [f"grant-{request.id}"] == world.rt.queue.job_ids
    [update] = world.slack.updates(APPROVALS, str(request.card_ts))
    assert buttons(update["blocks"]) == []
    assert "Approved by <@U0APPROVER1>" in str(update["blocks"])
    assert f"`{request.id}` was approved by <@U0APPROVER1>" in world.texts(world.slack.dms("U0DEV1"))
    assert "granting access now" in world.texts(world.slack.thread(APPROVALS, str(request.card_ts)))
    approved = world.record("request.approved", request.id)
    assert (approved["actor"], approved["approvals"], approved["required"]) == ("U0APPROVER1", 1, 1)


@pytest.mark.parametrize(
    ("user", "why"),
    [
        ("U0DEV1", "you cannot approve or deny your own request"),
        ("U0INTRUDER", "you are not an approver of `lb-prod`"),
        ("U0NETOPS9", "you are not an approver of `lb-prod`"),  # in no approving usergroup
    ],
)
async def test_click_by_someone_who_may_not_decide_is_refused(world: World, user: str, why: str) -> None:
    """The requester's own click and a non-approver's are refused, audited, answered, and change nothing."""
    world.slack.set_usergroup(NETOPS, ["U0NETOPS1"])
    request = await world.request()

    world.click(user, "jit_approve", request)

    assert world.rt.store.get(request.id).status == Status.PENDING
    refused = world.record("approval.refused", request.id)
    assert (user, "lb-prod", "jit_approve", why) == (
        refused["actor"],
        refused["target"],
        refused["action"],
        refused["why"],
    )
    assert [f":no_entry_sign: Refused: {why}"] == [
        m["text"] for m in world.slack.ephemerals(user)
    ]  # on the card: ephemeral, not a DM
    assert world.queued() == []
    assert world.slack.updates(APPROVALS, str(request.card_ts)) == []


async def test_member_of_an_approving_usergroup_may_approve(world: World) -> None:
    """A member of a usergroup the target names as approver may approve (read from usergroups.users.list)."""
    world.slack.set_usergroup(NETOPS, ["U0NETOPS1", "U0NETOPS2"])
    request = await world.request()

    world.click("U0NETOPS2", "jit_approve", request)

    after = world.rt.store.get(request.id)
    assert (after.status, after.approvers) == (Status.APPROVED, ["U0NETOPS2"])
    assert [("workers.jobs.grant_access", (request.id,))] == world.queued()
    assert [call.args for call in world.slack.calls("usergroups.users.list")] == [{"usergroup": NETOPS}]


async def test_unreadable_usergroup_gives_nobody_a_right(world: World) -> None:
    """When Slack does not know the usergroup, its would-be members are refused: the lookup fails closed."""
    request = await world.request()

    world.click("U0NETOPS1", "jit_approve", request)

    assert world.rt.store.get(request.id).status == Status.PENDING
    assert world.record("approval.refused", request.id)["why"] == "you are not an approver of `lb-prod`"


async def test_two_approvals_are_needed_where_the_target_says_so(world: World) -> None:
    """On a two-approval target the first click is counted and waits; the second, by someone else, approves."""
    request = await world.request(text="request lb-two 30m rotating certificates")

    world.click("U0APPROVER1", "jit_approve", request)

    first = world.rt.store.get(request.id)
    assert (first.status, first.approvers) == (Status.PENDING, ["U0APPROVER1"])
    assert world.queued() == []
    [update] = world.slack.updates(APPROVALS, str(request.card_ts))
    assert [button["action_id"] for button in buttons(update["blocks"])] == ["jit_approve", "jit_deny"]
    assert "approved so far by <@U0APPROVER1>" in str(update["blocks"])
    assert world.slack.dms("U0DEV1") == []

    world.click("U0APPROVER1", "jit_approve", request)

    assert "you have already approved" in world.record("approval.refused", request.id)["why"]
    assert world.queued() == []

    world.click("U0APPROVER2", "jit_approve", request)

    second = world.rt.store.get(request.id)
    assert (second.status, second.approvers) == (Status.APPROVED, ["U0APPROVER1", "U0APPROVER2"])
    assert [("workers.jobs.grant_access", (request.id,))] == world.queued()
    assert [r["approvals"] for r in world.audit(request.id) if r["event"] == "request.approved"] == [1, 2]


async def test_click_on_a_message_that_is_not_the_card_is_refused(world: World) -> None:
    """A click whose message ts is not the request's card is refused: a button is judged by the card it sits on."""
    request = await world.request()

    world.click("U0APPROVER1", "jit_approve", request, ts="1000000000.000001")

    assert world.rt.store.get(request.id).status == Status.PENDING
    assert f"this card is not an approval card of {request.id}" == world.record("approval.refused", request.id)["why"]
    assert world.queued() == []


async def test_click_naming_no_request_is_refused(world: World) -> None:
    """A button value that is not a request id is refused and audited without a request."""
    request = await world.request()

    world.decisions.decide("U0APPROVER1", "jit_approve", "drop table", (APPROVALS, str(request.card_ts)))

    refused = world.record("approval.refused")
    assert (refused.get("request_id"), refused["why"]) == (None, "this button does not name a request")
    assert world.rt.store.get(request.id).status == Status.PENDING


async def test_deny_closes_the_request_and_tells_everyone(world: World) -> None:
    """An approver's deny closes the request, queues nothing, edits the card, and tells the thread and requester."""
    request = await world.request()

    world.click("U0APPROVER2", "jit_deny", request)

    after = world.rt.store.get(request.id)
    assert (after.status, after.decided_by) == (Status.DENIED, "U0APPROVER2")
    assert world.rt.store.open_requests() == []
    assert world.queued() == []
    [update] = world.slack.updates(APPROVALS, str(request.card_ts))
    assert buttons(update["blocks"]) == []
    assert "Denied by <@U0APPROVER2>" in str(update["blocks"])
    denied = f"<@U0APPROVER2> denied `{request.id}`"
    assert denied in world.texts(world.slack.dms("U0DEV1"))
    assert denied in world.texts(world.slack.thread(APPROVALS, str(request.card_ts)))
    assert world.record("request.denied", request.id)["actor"] == "U0APPROVER2"

    world.click("U0APPROVER1", "jit_approve", request)

    assert f"request {request.id} is already denied" == world.record("approval.refused", request.id)["why"]
    assert world.rt.store.get(request.id).status == Status.DENIED


async def test_extension_approval_moves_the_end_and_queues_extend_access(world: World) -> None:
    """Approving an extension card moves the grant's end and queues `extend_access`; its card shows the outcome."""
    request = await world.granted()

    extension = await world.approved_extension(request)

    after = world.rt.store.get(request.id)
    assert request.ends_at is not None and after.ends_at is not None
    assert (after.extension, int((after.ends_at - request.ends_at).total_seconds())) == (None, 600)
    assert [("workers.jobs.extend_access", (request.id,))] == world.queued()
    [update] = world.slack.updates(APPROVALS, extension.card_ts)
    assert "Extended by <@U0APPROVER2>" in str(update["blocks"])
    assert world.record("extension.approved", request.id)["done"] is True


async def test_the_card_ends_showing_the_newest_state_when_a_worker_edits_it_during_an_approval(world: World) -> None:
    """A fast grant told while the approval's own edit of the card is on its way: the card ends as the store is.

    The first edit of the card is held (a slow network) while a worker grants and tells; whichever edit lands
    last, the card shows Granted once everything is done, never "Approved" over a granted request.
    """
    request = await world.request()
    held = world.slack.hold_next("chat.update")

    clicked = asyncio.create_task(asyncio.to_thread(world.click, "U0APPROVER1", "jit_approve", request))
    assert await asyncio.to_thread(held.arrived.wait, 30)
    assert jobs.grant_access(request.id) == "granted"
    world.post_notices()
    held.release()
    await clicked
    world.post_notices()

    assert world.rt.store.get(request.id).status is Status.GRANTED
    card = world.slack.message(APPROVALS, str(request.card_ts))
    assert card is not None
    assert ":unlock: Granted by <@U0APPROVER1>" in str(card["blocks"])
    assert ":unlock: Granted" in card["text"]


async def test_a_click_on_deny_that_skips_the_form_of_a_target_asking_why_is_refused(world: World) -> None:
    """A target asks whoever denies to say why: a deny that reaches the decision without the form's reason (the form
    is not opened for a request not yet recorded, and the web may record it a moment later) is refused, not
    recorded without one."""
    world.edit_policy(lambda policy: policy["targets"]["lb-prod"].update(deny_reason="required"))
    request = await world.request()
    world.decisions.decide("U0APPROVER1", "jit_deny", request.id, None)
    assert world.rt.store.get(request.id).status is Status.PENDING
    assert "asks whoever denies a request to say why" in world.slack.dms("U0APPROVER1")[-1]["text"]
    world.decisions.decide("U0APPROVER1", "jit_deny", request.id, None, reason="not during the freeze")
    assert world.record("request.denied", request.id)["deny_reason"] == "not during the freeze"
