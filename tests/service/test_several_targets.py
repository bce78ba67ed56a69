"""A request of several targets in this process: stored whole or not at all, one card a channel, each target approved
by its own rule, and the request's id acting on every target (docs/approvals.md)."""

from __future__ import annotations

from typing import Any

import pytest

from jit_lb.access.requests import AccessRequest, Status
from slack_out.views import field_values
from tests.service.world import APPROVALS, World, buttons, id_in
from workers import jobs, notices

OTHER = "C0OTHER"


async def asked(world: World, text: str, user: str = "U0DEV1") -> list[AccessRequest]:
    """A request of several targets whose cards a worker has posted; its parts, in order."""
    group = id_in(await world.ask(user, text))
    assert [group] == world.outbox()
    assert notices.announce(group) == "posted"
    return world.rt.store.parts(group)


def click(world: World, user: str, action: str, part: AccessRequest) -> None:
    """A click on the card of the part's channel, naming the request's id as its buttons do."""
    assert part.card_channel is not None and part.card_ts is not None
    world.decisions.decide(user, action, part.visible_id, (part.card_channel, part.card_ts))


def statuses(world: World, group: str) -> dict[str, Status]:
    return {part.target: part.status for part in world.rt.store.parts(group)}


async def test_a_request_of_several_targets_is_stored_whole_and_counts_once(world: World) -> None:
    """Every target is a part under the one id people see; each part's records carry that id, the target and the
    part; the request counts once against pending_per_user."""
    world.edit_policy(lambda policy: policy.setdefault("limits", {}).update(pending_per_user=1))
    answer = await world.ask("U0DEV1", "request lb-prod,lb-two 30m debugging 502s")
    group = id_in(answer)
    assert "`lb-prod` (1 approval(s)), `lb-two` (2 approval(s))" in answer

    parts = world.rt.store.parts(group)
    assert [(f"{group}-1", "lb-prod", 1), (f"{group}-2", "lb-two", 2)] == [
        (p.id, p.target, p.approvals_required) for p in parts
    ]
    assert [group] == world.outbox()
    created = [r for r in world.audit(group) if r["event"] == "request.created"]
    assert [("lb-prod", f"{group}-1"), ("lb-two", f"{group}-2")] == [(r["target"], r["part"]) for r in created]
    assert "you already have 1 pending request" in await world.ask("U0DEV1", "request lb-prod 30m again")


@pytest.mark.parametrize(
    ("user", "text", "why"),
    [
        ("U0DEV2", "request lb-prod,lb-two 30m why", "you are not allowed to request `lb-two`"),
        ("U0DEV1", "request lb-prod,lb-nine 30m why", "unknown target `lb-nine`"),
        ("U0DEV1", "request lb-prod,lb-two 45m why", "45m is longer than `lb-two` allows"),
        ("U0DEV1", "request lb-prod,lb-prod 30m why", "`lb-prod` is named twice"),
        ("U0DEV1", "request lb-prod, 30m why", "empty target"),
        ("U0DEV1", "request a,b,c,d,e,f 30m why", "at most 5"),
    ],
)
async def test_a_refusal_of_one_target_refuses_the_whole_request(world: World, user: str, text: str, why: str) -> None:
    """Naming what was wrong; nothing stored, nothing posted, nothing at the load balancer."""
    world.edit_policy(lambda policy: policy["targets"]["lb-two"].update(max_duration="40m"))
    answer = await world.ask(user, text)
    assert why in answer, answer
    assert world.rt.store.open_requests() == []
    assert world.outbox() == []
    assert world.slack.messages() == []
    assert why in world.record("request.refused")["why"]
    assert world.ingress() == []


async def test_one_card_in_each_approver_channel_lists_every_target(world: World) -> None:
    """Targets approved in two channels: a card in each, each listing both targets, one audit thread."""
    world.edit_policy(lambda policy: policy["targets"]["lb-broken"].update(approver_channel=OTHER))
    first, second = await asked(world, "request lb-prod,lb-broken 30m debugging 502s")
    assert (first.card_channel, second.card_channel) == (APPROVALS, OTHER)
    for channel, ts in ((APPROVALS, first.card_ts), (OTHER, second.card_ts)):
        card = world.slack.message(channel, str(ts))
        assert card is not None
        assert "`lb-prod`" in str(card["blocks"]) and "`lb-broken`" in str(card["blocks"])
        assert {first.group} == {b["value"] for b in buttons(card["blocks"])}
    assert (first.thread_channel, first.thread_ts) == (second.thread_channel, second.thread_ts)


async def test_a_click_counts_for_the_targets_its_clicker_may_approve(world: World) -> None:
    """An approver of one target approves that one only; an approver of none is refused and changes nothing; the
    other target's approver completes it, and each grant is queued when its own rule is met."""
    prod, broken = await asked(world, "request lb-prod,lb-broken 30m debugging 502s")
    group = str(prod.group)

    click(world, "U0INTRUDER", "jit_approve", prod)
    assert statuses(world, group) == {"lb-prod": Status.PENDING, "lb-broken": Status.PENDING}
    refused = world.record("approval.refused", group)
    assert "you are not an approver of any target" in refused["why"]

    click(world, "U0APPROVER1", "jit_approve", prod)
    assert statuses(world, group) == {"lb-prod": Status.APPROVED, "lb-broken": Status.PENDING}
    assert [("workers.jobs.grant_access", (prod.id,))] == world.queued()
    card = world.slack.message(APPROVALS, str(prod.card_ts))
    assert card is not None and buttons(card["blocks"]) != []  # lb-broken still waits

    click(world, "U0APPROVER3", "jit_approve", broken)
    assert statuses(world, group) == {"lb-prod": Status.APPROVED, "lb-broken": Status.APPROVED}
    approved = [(r["target"], r["actor"]) for r in world.audit(group) if r["event"] == "request.approved"]
    assert approved == [("lb-prod", "U0APPROVER1"), ("lb-broken", "U0APPROVER3")]
    card = world.slack.message(APPROVALS, str(prod.card_ts))
    assert card is not None and buttons(card["blocks"]) == []


async def test_a_target_needing_two_approvals_is_granted_later_than_the_other(world: World) -> None:
    """One click approves lb-prod (one approval) and counts one of lb-two's two; lb-prod is granted at once, lb-two
    once a second approver clicks; both grants land at the load balancer under their parts' ids."""
    prod, two = await asked(world, "request lb-prod,lb-two 30m debugging 502s")
    group = str(prod.group)

    click(world, "U0APPROVER1", "jit_approve", prod)
    assert statuses(world, group) == {"lb-prod": Status.APPROVED, "lb-two": Status.PENDING}
    assert world.rt.store.get(two.id).approvers == ["U0APPROVER1"]
    assert jobs.grant_access(prod.id) == "granted"
    assert world.rules_of(prod.id) != [] and world.rules_of(two.id) == []

    click(world, "U0APPROVER2", "jit_approve", two)
    assert statuses(world, group) == {"lb-prod": Status.GRANTED, "lb-two": Status.APPROVED}
    assert jobs.grant_access(two.id) == "granted"
    assert world.rules_of(two.id) != []


async def test_revoke_and_cancel_by_the_request_id_act_on_every_open_target(world: World) -> None:
    """`/jit revoke <id>` queues the revoke of every granted target; `/jit cancel <id>` withdraws those still
    pending; a part's own id acts on that target alone."""
    prod, two = await asked(world, "request lb-prod,lb-two 30m debugging 502s")
    group = str(prod.group)
    click(world, "U0APPROVER1", "jit_approve", prod)
    assert jobs.grant_access(prod.id) == "granted"
    world.rt.queue.empty()

    answer = await world.ask("U0DEV1", f"revoke {group}")
    assert f"Revoking `{group}` on `lb-prod`" in answer
    assert [("workers.jobs.revoke_access", (prod.id, "revoked", "U0DEV1"))] == world.queued()

    answer = await world.ask("U0DEV1", f"cancel {two.id}")
    assert "withdrew" in answer and "`lb-two`" in answer
    assert Status.CANCELLED is world.rt.store.get(two.id).status
    assert f"is {Status.GRANTED} on `lb-prod`, {Status.CANCELLED} on `lb-two`" in await world.ask(
        "U0DEV1", f"cancel {group}"
    )


async def test_the_request_modal_takes_several_targets_and_the_one_target_forms_single_select(world: World) -> None:
    """A submission with the multi-select's options makes one request of both; the single static_select the
    one-target form sent still makes a request of one (docs/command-and-slack.md)."""

    def submission(target: dict[str, Any]) -> dict[str, str]:
        state = {
            "values": {
                "target": {"target": target},
                "duration": {"duration": {"type": "static_select", "selected_option": {"value": "30m"}}},
                "reason": {"reason": {"type": "plain_text_input", "value": "OPS-1 both"}},
            }
        }
        return field_values(state)

    several = {"type": "multi_static_select", "selected_options": [{"value": "lb-prod"}, {"value": "lb-two"}]}
    assert await world.forms.submit_request("U0DEV1", submission(several)) is None
    one = {"type": "static_select", "selected_option": {"value": "lb-prod"}}
    assert await world.forms.submit_request("U0DEV1", submission(one)) is None
    taken = world.outbox()
    assert len(taken) == 2
    assert [p.target for p in world.rt.store.parts(taken[0])] == ["lb-prod", "lb-two"]
    assert [p.target for p in world.rt.store.parts(taken[1])] == ["lb-prod"]


async def test_more_time_on_every_granted_target_is_one_card_and_one_click(world: World) -> None:
    """`/jit extend <id>` asks for more time on each granted target, each judged by its own policy; one card lists
    them, and one approver's click approves each extension it may, each moved by its own job."""
    prod, alb = await asked(world, "request lb-prod,lb-broken 30m debugging 502s")
    world.edit_policy(lambda policy: policy["targets"]["lb-broken"].update(grant=policy["targets"]["lb-prod"]["grant"]))
    click(world, "U0APPROVER1", "jit_approve", prod)
    click(world, "U0APPROVER3", "jit_approve", alb)
    assert (jobs.grant_access(prod.id), jobs.grant_access(alb.id)) == ("granted", "granted")
    world.rt.queue.empty()

    answer = await world.ask("U0DEV1", f"extend {prod.group} 10m still digging")
    assert answer.count("Asked to extend") == 1, answer
    assert [prod.group] == world.outbox()
    assert notices.announce(str(prod.group)) == "posted"
    parts = world.rt.store.parts(str(prod.group))
    cards_at = {(p.extension.card_channel, p.extension.card_ts) for p in parts if p.extension is not None}
    assert len(cards_at) == 1
    ((channel, ts),) = cards_at
    card = world.slack.message(str(channel), str(ts))
    assert card is not None and "`lb-prod`" in str(card["blocks"]) and "`lb-broken`" in str(card["blocks"])

    world.decisions.decide("U0APPROVER1", "jit_approve", str(prod.group), (str(channel), str(ts)))
    assert [("workers.jobs.extend_access", (prod.id,))] == [(name, args) for name, args in world.queued()]
    world.decisions.decide("U0APPROVER3", "jit_approve", str(prod.group), (str(channel), str(ts)))
    extended = [r["target"] for r in world.audit(str(prod.group)) if r["event"] == "extension.approved"]
    assert extended == ["lb-prod", "lb-broken"]
    world.post_notices()
    card = world.slack.message(str(channel), str(ts))
    assert card is not None and buttons(card["blocks"]) == []


async def test_the_closing_summary_comes_once_every_target_has_ended(world: World) -> None:
    """The first target's end is a line in the thread; the last one's brings the one summary, with a section a
    target, and the requester's copy with Request again (its value the request's id)."""
    prod, broken = await asked(world, "request lb-prod,lb-broken 30m debugging 502s")
    group = str(prod.group)
    world.edit_policy(lambda policy: policy["targets"]["lb-broken"].update(grant=policy["targets"]["lb-prod"]["grant"]))
    click(world, "U0APPROVER1", "jit_approve", prod)
    click(world, "U0APPROVER3", "jit_approve", broken)
    assert (jobs.grant_access(prod.id), jobs.grant_access(broken.id)) == ("granted", "granted")
    thread = (str(prod.thread_channel), str(prod.thread_ts))

    assert jobs.revoke_access(prod.id, "revoked", "U0DEV1") == "revoked"
    world.work()
    assert "ended (revoked)" in world.texts(world.slack.thread(*thread))
    assert not [m for m in world.slack.thread(*thread) if "Summary of" in str(m)]

    assert jobs.revoke_access(broken.id, "revoked", "U0DEV1") == "revoked"
    world.work()
    [summary] = [m for m in world.slack.thread(*thread) if "Summary of" in str(m)]
    assert "Target: `lb-prod`" in str(summary["blocks"]) and "Target: `lb-broken`" in str(summary["blocks"])
    [dm] = [m for m in world.slack.dms("U0DEV1") if "Summary of" in str(m.get("blocks"))]
    assert [("jit_rerequest", group)] == [(b["action_id"], b["value"]) for b in buttons(dm["blocks"])]
