"""Slack-native requests in-process: the request modal, the App Home, cancel, deny with a reason, roles."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

from bot.service.forms import FormService
from devtools.slack_standin import block_kit_errors
from jit_lb.access.requests import Status
from slack_out.poster import Notifier, web_client
from slack_out.views import field_values
from tests.service.world import APPROVALS, World, buttons, id_in
from workers import jobs
from workers.homes import HomePublisher


@pytest.fixture(name="forms")
def fixture_forms(world: World) -> FormService:
    return world.forms


def options(view: dict[str, Any], block_id: str) -> list[str]:
    [block] = [b for b in view["blocks"] if b.get("block_id") == block_id]
    return [option["value"] for option in block["element"]["options"]]


def submission(target: str, duration: str, reason: str, ip: str | None = None) -> dict[str, str]:
    values = {"target": target, "duration": duration, "reason": reason}
    return values | ({"ip": ip} if ip is not None else {})


async def test_a_bare_jit_opens_the_modal_with_only_the_users_targets(world: World) -> None:
    """`/jit` with no text answers with the request modal, listing the targets this person may request."""
    reply = await world.commands.command("U0DEV2", "", None)
    assert reply.view is not None
    assert reply.view["callback_id"] == "jit_request"
    assert options(reply.view, "target") == ["lb-broken", "lb-prod"]  # lb-two is U0DEV1's alone
    assert block_kit_errors(reply.view["blocks"]) == []


def test_the_modal_follows_the_selected_targets_durations(world: World, forms: FormService) -> None:
    """Selecting a target offers its own `durations` (or steps within its limits)."""
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(durations=["15m", "45m"]))
    assert options(forms.request_view("U0DEV1", "lb-prod"), "duration") == ["15m", "45m"]
    assert options(forms.request_view("U0DEV1", "lb-two"), "duration") == ["5m", "15m", "30m", "1h"]


async def test_a_bad_submission_is_answered_with_errors_and_stores_nothing(world: World, forms: FormService) -> None:
    """A reason that breaks the target's rule is an error on the reason block; nothing is stored or posted."""
    rule = {"reason_pattern": "^[A-Z]+-[0-9]+ ", "reason_hint": "a ticket"}
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(rule))
    errors = await forms.submit_request("U0DEV1", submission("lb-prod", "30m", "debugging"))
    assert errors == {"reason": "a ticket"}
    assert world.rt.store.open_requests() == []
    assert world.outbox() == []
    assert "reason: a ticket" in world.record("request.refused")["why"]

    errors = await forms.submit_request("U0DEV1", submission("lb-prod", "2h", "OPS-1 x", ip="10.0.0.1"))
    assert errors is not None
    assert set(errors) == {"duration", "ip"}
    assert await forms.submit_request("U0DEV2", submission("lb-two", "30m", "x")) == {
        "target": "you may not request `lb-two`; pick one of the list"
    }


async def test_a_good_submission_makes_the_same_request_as_the_command(world: World, forms: FormService) -> None:
    """A valid form is stored, recorded and queued for its card as `/jit request` is, and the person gets a DM."""
    assert await forms.submit_request("U0DEV1", submission("lb-prod", "45m", "debugging 502s")) is None
    [request] = world.rt.store.open_requests()
    assert (request.target, request.duration_seconds, request.reason) == ("lb-prod", 2700, "debugging 502s")
    assert world.outbox() == [request.id]
    assert world.record("request.created", request.id)["actor"] == "U0DEV1"
    world.slack.wait_for(lambda: world.slack.dms("U0DEV1"))
    assert request.id in world.texts(world.slack.dms("U0DEV1"))


def test_field_values_reads_slacks_state_shapes() -> None:
    """A view_submission's state (selects and text inputs, as SLACK-SAMPLES.md shows) reads as {block: value}."""
    state = {
        "values": {
            "target": {"target": {"type": "static_select", "selected_option": {"value": "lb-prod"}}},
            "duration": {"duration": {"type": "static_select", "selected_option": {"value": "30m"}}},
            "reason": {"reason": {"type": "plain_text_input", "value": "OPS-123 debugging 502s"}},
            "ip": {"ip": {"type": "plain_text_input", "value": None}},
        }
    }
    assert field_values(state) == {"target": "lb-prod", "duration": "30m", "reason": "OPS-123 debugging 502s"}


# --- cancel ------------------------------------------------------------------------------------------


async def test_the_requester_cancels_a_pending_request(world: World) -> None:
    """`/jit cancel` by its requester closes the request; the card, thread and audit say so."""
    request = await world.request()
    answer = await world.ask("U0DEV1", f"cancel {request.id}")
    assert "withdrew" in answer
    assert world.rt.store.get(request.id).status is Status.CANCELLED
    assert world.record("request.cancelled", request.id)["actor"] == "U0DEV1"
    world.work()
    card = world.slack.updates(APPROVALS, str(request.card_ts))[-1]
    assert buttons(card["blocks"]) == []
    assert "withdrew" in world.texts(world.slack.thread(APPROVALS, str(request.card_ts)))


async def test_only_the_requester_may_cancel(world: World) -> None:
    """Someone else's `/jit cancel` is refused and recorded under the request it named, so an auditor reading that
    request's records sees the attempt; the request stays pending."""
    request = await world.request()
    answer = await world.ask("U0APPROVER1", f"cancel {request.id}")
    assert "only <@U0DEV1>" in answer
    assert world.rt.store.get(request.id).status is Status.PENDING
    [refused] = [r for r in world.audit() if r["event"] == "request.refused"]
    assert (refused["actor"], refused["text"], refused["named_request"]) == (
        "U0APPROVER1",
        f"cancel {request.id}",
        request.id,
    )
    assert refused["request_id"] is None  # no event of the request's own life


# --- deny with a reason --------------------------------------------------------------------------------


async def test_deny_with_a_required_reason(world: World) -> None:
    """Where `deny_reason` is required, Deny opens a modal; an empty reason is refused; the reason goes everywhere."""
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(deny_reason="required"))
    request = await world.request()
    card = (APPROVALS, str(request.card_ts))

    view = world.decisions.deny_form("U0APPROVER1", request.id, card)
    assert view is not None
    assert view["callback_id"] == "jit_deny"
    assert world.decisions.deny_form("U0DEV1", request.id, card) is None  # the requester's click is refused instead

    metadata = view["private_metadata"]
    errors, order = world.decisions.check_deny("U0APPROVER1", metadata, {"reason": "  "})
    assert (errors, order) == ({"reason": "`lb-prod` asks whoever denies a request to say why"}, None)
    errors, order = world.decisions.check_deny("U0APPROVER1", metadata, {"reason": "*not today* <!channel>"})
    assert order is not None
    world.decisions.deny("U0APPROVER1", order)

    after = world.rt.store.get(request.id)
    assert (after.status, after.deny_reason) == (Status.DENIED, "*not today* <!channel>")
    assert world.record("request.denied", request.id)["deny_reason"] == "*not today* <!channel>"
    dm = world.slack.dms("U0DEV1")[-1]
    assert "&lt;!channel&gt;" in dm["text"]
    assert {"type": "plain_text", "text": "*not today* <!channel>"} in [b.get("text") for b in dm["blocks"]]
    card_now = world.slack.updates(APPROVALS, str(request.card_ts))[-1]
    assert "*not today* <!channel>" in json.dumps(card_now["blocks"])


async def test_deny_without_a_reason_stays_one_click(world: World) -> None:
    """With `deny_reason: none` (the default) Deny denies at once: no modal."""
    request = await world.request()
    assert world.decisions.deny_form("U0APPROVER1", request.id, (APPROVALS, str(request.card_ts))) is None


# --- the App Home --------------------------------------------------------------------------------------


async def test_the_home_lists_what_waits_and_its_approve_obeys_the_cards_rules(
    world: World, forms: FormService
) -> None:
    """An approver's home lists a pending request; its Approve from the home counts once, the requester's never."""
    forms.home_opened("U0APPROVER1", "Ev1")
    forms.home_opened("U0DEV1", "Ev2")
    world.post_notices()  # a worker publishes the homes the web queued
    assert world.homes_settled()
    request = await world.request()
    world.work()  # the refresh queued when the card was posted
    home = world.slack.home("U0APPROVER1")
    assert request.id in json.dumps(home["blocks"])
    assert {"jit_approve", "jit_deny"} <= {b["action_id"] for b in buttons(home["blocks"])}
    mine = world.slack.home("U0DEV1")
    assert "jit_cancel" in {b["action_id"] for b in buttons(mine["blocks"])}

    world.decisions.decide("U0DEV1", "jit_approve", request.id, None)  # the requester, from a home
    assert world.rt.store.get(request.id).status is Status.PENDING
    assert "cannot approve or deny your own request" in world.texts(world.slack.dms("U0DEV1"))

    world.decisions.decide("U0APPROVER1", "jit_approve", request.id, None)
    world.decisions.decide("U0APPROVER2", "jit_approve", request.id, None)  # already decided
    assert world.rt.store.get(request.id).status is Status.APPROVED
    assert [r["event"] for r in world.audit(request.id)].count("request.approved") == 1
    world.work()
    assert request.id not in json.dumps(world.slack.home("U0APPROVER1")["blocks"])


async def test_the_home_ends_showing_the_newest_state_when_it_changes_while_it_is_published(
    world: World, forms: FormService
) -> None:
    """An approver opens their home while a request waiting for them is approved: the home's publish is held on its
    way (a slow network) while the approval is recorded and a worker tells it; whichever publish lands last, the
    home ends showing the store's state, without the request, never the pending one over an approved request."""
    request = await world.request()
    held = world.slack.hold_next("views.publish")
    forms.home_opened("U0APPROVER1", "Ev1")
    published = asyncio.create_task(asyncio.to_thread(world.post_notices))  # what the open queued, if anything
    assert await asyncio.to_thread(held.arrived.wait, 30)
    world.decisions.decide("U0APPROVER2", "jit_approve", request.id, None)  # from a home; its notices run
    held.release()
    await published
    assert world.homes_settled()

    assert world.rt.store.get(request.id).status is Status.APPROVED
    assert request.id not in json.dumps(world.slack.home("U0APPROVER1")["blocks"])


def test_a_retried_home_event_is_handled_once(world: World, forms: FormService) -> None:
    """Slack retries an event not acked in time; the same event id publishes the home once."""
    forms.home_opened("U0DEV1", "Ev42")
    forms.home_opened("U0DEV1", "Ev42")
    world.post_notices()
    assert world.homes_settled()
    assert len(world.slack.calls("views.publish")) == 1


async def test_a_flood_of_home_opens_queues_one_publish_a_person_ahead_of_other_notices(
    world: World, forms: FormService
) -> None:
    """A person opening their home 200 times (each a new event, as a script holding their session can make) queues
    one publish of it until a worker takes it: the notices queued after (a decision's card and DMs) wait behind one
    home, not 200, and the queue's jobs do not pile up in Redis. Once published, an open queues it again."""
    request = await world.request()
    for index in range(200):
        forms.home_opened("U0DEV1", f"EvFlood{index}")
    world.decisions.decide("U0APPROVER1", "jit_deny", request.id, None, reason="flooded")  # its notices run after it

    assert [job.func_name for job in world.rt.notices.jobs] == []
    assert len(world.slack.calls("views.publish")) <= 2  # the opened home, and again as the denial changed it
    assert request.id not in json.dumps(world.slack.home("U0DEV1")["blocks"])
    forms.home_opened("U0DEV1", "EvFloodAfter")
    assert [job.func_name for job in world.rt.notices.jobs] == ["workers.notices.show_home"]


def test_a_notice_job_never_waits_for_views_publish(world: World, forms: FormService) -> None:
    """A worker's job that publishes a home (an open's show_home; a change's refresh of its homes, up to 50 of them)
    hands the publish to the homes' own thread: while Slack holds views.publish (slow, or a flood of opens), the
    job ends and the worker is free for the revoke or grant queued next (the job waited for Slack before, so a
    revoke queued behind it waited as long)."""
    held = world.slack.hold_next("views.publish")
    forms.home_opened("U0DEV1", "EvSlow")
    job = threading.Thread(target=world.post_notices_only, name="notice-job")
    job.start()
    try:
        assert held.arrived.wait(30)  # the publish has reached Slack, which holds it
        job.join(10)
        assert not job.is_alive(), "the show_home job waited for views.publish"
    finally:
        held.release()
        job.join(30)
    assert world.homes_settled()
    assert world.slack.home("U0DEV1") is not None


def test_home_opens_while_views_publish_is_rate_limited_go_out_once_each_after_retry_after(world: World) -> None:
    """Three people open their home five times each while Slack answers views.publish with 429 (Retry-After 1 s):
    Slack is asked once during the limit, and after it each home goes out once, as the store holds it then."""
    notifier = Notifier(web_client(world.rt.settings, wait_on_rate_limits=False), lambda: world.rt.policy)
    homes = HomePublisher(world.rt, notifier)
    world.slack.rate_limit("views.publish", 1)
    for _ in range(5):
        for user in ("U0DEV1", "U0DEV2", "U0APPROVER1"):
            homes.publish(user)

    assert homes.settled()
    deadline = time.monotonic() + 15
    while homes.waiting and time.monotonic() < deadline:
        time.sleep(0.05)
    assert homes.settled()

    calls = world.slack.calls("views.publish")
    assert [bool(c.response.get("ok")) for c in calls] == [False, True, True, True]
    assert [c.args["user_id"] for c in calls] == ["U0DEV1", "U0DEV1", "U0DEV2", "U0APPROVER1"]


# --- roles --------------------------------------------------------------------------------------------------


async def test_a_usergroup_member_of_a_role_may_request(world: World) -> None:
    """A requester named through a role's usergroup may request; someone outside it may not."""

    def roles(policy: dict[str, Any]) -> None:
        policy["roles"] = {"sre": ["S0SRE"]}
        policy["targets"]["lb-prod"]["requesters"] = ["role:sre"]

    world.edit_policy(roles)
    world.slack.set_usergroup("S0SRE", ["U0DEV2"])
    answer = await world.ask("U0DEV2", "request lb-prod 30m via the role")
    assert "waiting for approval" in answer
    assert id_in(answer)
    refused = await world.ask("U0DEV1", "request lb-prod 30m not in the role")
    assert "not allowed to request `lb-prod`" in refused


async def test_the_form_and_the_card_name_who_can_approve(world: World, forms: FormService) -> None:
    """The request modal names the target's approvers (users, and the usergroup); its card names every member."""
    world.slack.set_usergroup("S0NETOPS", ["U0NET1"])
    view = forms.request_view("U0DEV1", "lb-prod")
    assert "Approved by 1 of: <@U0APPROVER1>, <@U0APPROVER2>, <!subteam^S0NETOPS>" in json.dumps(view)

    request = await world.request("U0DEV1", "request lb-prod 30m debugging 502s")

    [card] = [
        call.args["blocks"]
        for call in world.slack.calls("chat.postMessage")
        if call.args.get("channel") == APPROVALS and request.id in str(call.args.get("text")) and "blocks" in call.args
    ]
    assert "Can approve (1 needed): <@U0APPROVER1>, <@U0APPROVER2>, <@U0NET1>" in json.dumps(card)


async def test_an_ended_grants_dm_carries_request_again_which_fills_the_form(world: World, forms: FormService) -> None:
    """The requester's DM of an ended grant ends with Request again; its click opens the request modal filled
    in with the target, duration and reason, for the requester alone."""
    request = await world.granted("U0DEV1", "request lb-prod 45m debugging 502s")
    assert jobs.revoke_access(request.id, "revoked", "U0DEV1") == "revoked"
    world.work()
    [dm] = [m for m in world.slack.dms("U0DEV1") if "ended" in str(m.get("text")) and request.id in str(m["text"])]
    assert [(b["action_id"], b["value"]) for b in buttons(dm["blocks"])] == [("jit_rerequest", request.id)]

    view = forms.rerequest_view("U0DEV1", request.id)

    assert view is not None
    blocks = {block.get("block_id"): block for block in view["blocks"]}
    assert [o["value"] for o in blocks["target"]["element"]["initial_options"]] == ["lb-prod"]
    assert blocks["duration"]["element"]["initial_option"]["value"] == "45m"
    assert blocks["reason"]["element"]["initial_value"] == "debugging 502s"
    assert forms.rerequest_view("U0DEV2", request.id) is None
    assert "no request of yours" in world.texts(world.slack.dms("U0DEV2"))
    [refused] = [r for r in world.audit() if r["event"] == "request.refused"]  # someone else's click
    assert (refused["actor"], refused["named_request"], refused.get("target")) == ("U0DEV2", request.id, None)
