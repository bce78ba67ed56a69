"""`/jit` through CommandService in this process, with the cards its outbox asks a worker to post."""

from __future__ import annotations

import pytest

from jit_lb.access.requests import Status
from jit_lb.clock import utcnow
from tests.service.world import APPROVALS, DEV1_CIDR, DEVS, World, buttons, id_in
from workers import notices


async def test_request_is_stored_audited_and_queued_for_its_card(world: World) -> None:
    """A good request is stored pending, audited `request.created`, and its id waits in the outbox; nothing posted."""
    answer = await world.ask("U0DEV1", "request lb-prod 45m debugging 502s from eu-west")

    request_id = id_in(answer)
    assert f"<#{APPROVALS}>" in answer
    request = world.rt.store.get(request_id)
    assert (request.status, request.requester, request.target) == (Status.PENDING, "U0DEV1", "lb-prod")
    assert (request.duration_seconds, request.cidr, request.origin_channel) == (2700, DEV1_CIDR, DEVS)
    assert request.reason == "debugging 502s from eu-west"
    assert request.card_ts is None
    created = world.record("request.created", request_id)
    assert (created["actor"], created["target"], created["status"]) == ("U0DEV1", "lb-prod", "pending")
    assert [request_id] == world.outbox()
    assert world.slack.calls("chat.postMessage") == []


async def test_announce_posts_the_card_with_buttons_naming_the_request(world: World) -> None:
    """`announce` posts the card (approve and deny, each valued with the id), records where, and opens its thread."""
    request_id = id_in(await world.ask("U0DEV1", "request lb-prod 45m debugging 502s"))
    world.outbox()

    assert notices.announce(request_id) == "posted"

    [card, first_reply] = world.slack.messages(APPROVALS)
    assert [button["action_id"] for button in buttons(card["blocks"])] == ["jit_approve", "jit_deny"]
    assert {request_id} == {button["value"] for button in buttons(card["blocks"])}
    assert DEV1_CIDR in str(card["blocks"]) and "45m" in str(card["blocks"])
    request = world.rt.store.get(request_id)
    assert (APPROVALS, card["ts"]) == (request.card_channel, request.card_ts)
    assert (APPROVALS, card["ts"]) == (request.thread_channel, request.thread_ts)
    assert card["ts"] == first_reply["thread_ts"]
    assert "Requested by <@U0DEV1>" in first_reply["text"]
    assert notices.announce(request_id) == "nothing to post"
    assert len(world.slack.calls("chat.postMessage")) == 2


async def test_each_command_counts_once_in_its_minute_and_one_past_the_limit_is_refused_as_such(world: World) -> None:
    """With 6 commands a minute: a stored request (counted in the store's own create), a request the policy refuses,
    one that does not parse, one of two targets, `list` and `help` each count once, so a 7th request is refused for
    the limit and stores nothing, and an 8th is refused for the limit even though its target does not exist."""
    world.edit_policy(lambda p: p.setdefault("limits", {}).update(commands_per_minute=6))
    now = utcnow()
    world.commands.clock = lambda: now  # one minute for every command, whenever the test runs
    first = id_in(await world.ask("U0DEV1", "request lb-prod 30m counted in the create"))
    assert "unknown target" in await world.ask("U0DEV1", "request lb-nope 30m refused by the policy")
    assert "not a duration" in await world.ask("U0DEV1", "request lb-prod 30n does not parse")
    id_in(await world.ask("U0DEV1", "request lb-prod,lb-two 30m two targets"))
    await world.ask("U0DEV1", "list")
    await world.ask("U0DEV1", "help")

    past = await world.ask("U0DEV1", "request lb-prod 30m one past the limit")
    unknown = await world.ask("U0DEV1", "request lb-nope 30m past the limit too")

    assert "more than 6 `/jit` commands this minute" in past
    assert "more than 6 `/jit` commands this minute" in unknown
    assert first in world.outbox()
    assert [first] == [r.id for r in world.rt.store.open_requests() if r.group is None]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("request lb-nope 30m debugging", "unknown target `lb-nope`"),
        ("request lb-prod 2h debugging", "2h is longer than `lb-prod` allows (at most 1h)"),
        ("request lb-prod 30s debugging", "30s is shorter than `lb-prod` allows (at least 1m)"),
        ("request lb-prod 30m", "a reason is required"),
        ("request lb-prod 30n debugging", "`30n` is not a duration"),
        ("request lb-two 30m debugging", "you are not allowed to request `lb-two`"),
    ],
)
async def test_refused_request_is_audited_and_changes_nothing(world: World, text: str, why: str) -> None:
    """A refused request answers with the reason, is audited `request.refused`, stores nothing and posts nothing."""
    answer = await world.ask("U0DEV2", text)

    assert answer.startswith(":no_entry_sign: Refused: ")
    assert why in answer
    refused = world.record("request.refused")
    assert ("U0DEV2", text) == (refused["actor"], refused["text"])
    assert why in refused["why"]
    assert world.events() == ["request.refused"]
    assert world.rt.store.open_requests() == []
    assert world.outbox() == []
    assert world.slack.calls() == []


async def test_list_shows_what_the_user_may_see(world: World) -> None:
    """`list` shows a user their own requests, and an approver those of the targets they approve, nothing else."""
    dev1 = id_in(await world.ask("U0DEV1", "request lb-prod 30m one"))
    dev2 = id_in(await world.ask("U0DEV2", "request lb-prod 30m two"))
    broken = id_in(await world.ask("U0DEV2", "request lb-broken 30m three"))

    def listed(text: str) -> set[str]:
        return {request_id for request_id in (dev1, dev2, broken) if request_id in text}

    assert {dev1} == listed(await world.ask("U0DEV1", "list"))
    assert {dev2, broken} == listed(await world.ask("U0DEV2", "list"))
    assert {dev1, dev2} == listed(await world.ask("U0APPROVER1", "list"))
    assert {broken} == listed(await world.ask("U0APPROVER3", "list"))
    assert await world.ask("U0STRANGER", "list") == "No pending or active requests that you can see."


async def test_revoke_by_a_stranger_is_refused(world: World) -> None:
    """Someone who is neither the requester nor an approver cannot revoke a grant: refused, audited, nothing queued."""
    request = await world.granted()

    answer = await world.ask("U0DEV2", f"revoke {request.id}")

    assert f"only the requester or an approver of `lb-prod` can revoke {request.id}" in answer
    assert world.record("request.refused")["actor"] == "U0DEV2"
    assert world.queued() == []
    assert world.rt.store.get(request.id).status == Status.GRANTED
    assert len(world.rules_of(request.id)) == 2


async def test_revoke_of_a_pending_request_is_refused(world: World) -> None:
    """A requester cannot revoke what is not granted yet."""
    request = await world.request()

    answer = await world.ask("U0DEV1", f"revoke {request.id}")

    assert f"{request.id} is pending, not granted; there is nothing to revoke" in answer
    assert world.queued() == []


async def test_revoke_by_the_requester_queues_the_revoke(world: World) -> None:
    """The requester's revoke queues `revoke_access` with the reason and actor, and answers at once."""
    request = await world.granted()

    answer = await world.ask("U0DEV1", f"revoke {request.id}")

    assert f"Revoking `{request.id}`" in answer
    assert [("workers.jobs.revoke_access", (request.id, "revoked", "U0DEV1"))] == world.queued()
    assert [f"revoke-now-{request.id}"] == world.rt.queue.job_ids


async def test_extend_by_someone_else_is_refused(world: World) -> None:
    """Only the requester may extend a grant; an approver's extend is refused and changes nothing."""
    request = await world.granted()

    answer = await world.ask("U0APPROVER1", f"extend {request.id} 10m more debugging")

    world.refused_extension(request, answer, f"only <@U0DEV1>, who asked for {request.id}, can extend it")


async def test_extend_past_the_targets_maximum_is_refused(world: World) -> None:
    """An extension that would end the grant more than `max_duration` from now is refused."""
    request = await world.granted()

    answer = await world.ask("U0DEV1", f"extend {request.id} 45m more debugging")

    assert "more than 1h from now, the most `lb-prod` allows" in answer
    assert world.rt.store.get(request.id).extension is None


async def test_extend_queues_its_card_and_announce_posts_it(world: World) -> None:
    """A good extend records the pending extension, puts the id in the outbox, and `announce` posts its card."""
    request = await world.granted()
    world.slack.reset()

    answer = await world.ask("U0DEV1", f"extend {request.id} 10m still digging")

    assert f"Asked to extend `{request.id}` by 10m" in answer
    pending = world.rt.store.get(request.id).extension
    assert pending is not None and (
        pending.duration_seconds,
        pending.reason,
        pending.card_ts,
    ) == (600, "still digging", None)
    requested = world.record("extension.requested", request.id)
    assert (requested["extra_seconds"], requested["extension_reason"]) == (600, "still digging")
    assert [request.id] == world.outbox()
    assert world.slack.calls() == []

    assert notices.announce(request.id) == "posted"

    [card] = [m for m in world.slack.messages(APPROVALS) if "thread_ts" not in m]
    assert {request.id} == {button["value"] for button in buttons(card["blocks"])}
    assert "Extension of" in card["text"]
    extension = world.rt.store.get(request.id).extension
    assert extension is not None and (APPROVALS, card["ts"]) == (extension.card_channel, extension.card_ts)
    assert "asked to extend" in world.texts(world.slack.thread(APPROVALS, str(request.card_ts)))


async def test_a_second_extension_while_one_waits_is_refused(world: World) -> None:
    """One extension at a time: a second extend while the first waits for approval is refused."""
    request = await world.granted()
    await world.ask("U0DEV1", f"extend {request.id} 10m still digging")

    answer = await world.ask("U0DEV1", f"extend {request.id} 5m and more")

    assert "already has an extension waiting for approval" in answer
    assert [request.id] == world.outbox()


async def test_revoke_by_an_approver_of_the_target_ends_the_grant(world: World) -> None:
    """One of the target's approvers (not its requester) may end a grant: queued with them as the actor, and the
    worker's revoke removes the rules and records them as who ended it."""
    request = await world.granted()

    answer = await world.ask("U0APPROVER2", f"revoke {request.id}")

    assert f"Revoking `{request.id}`" in answer
    assert [("workers.jobs.revoke_access", (request.id, "revoked", "U0APPROVER2"))] == world.queued()
    world.work()
    assert world.rules_of(request.id) == []
    revoked = world.record("grant.revoked", request.id)
    assert (revoked["actor"], revoked["reason"]) == ("U0APPROVER2", "revoked")
