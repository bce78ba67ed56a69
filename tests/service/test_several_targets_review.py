"""A review of several targets in one request: each target's App Home buttons act on that target only, a typed
deny reason stays plain text on the card, and crafted clicks, forms, limits and lockdown treat every part alike."""

from __future__ import annotations

import json
from typing import Any

from jit_lb.access.requests import AccessRequest, Status
from slack_out.home import home_of
from slack_out.views import field_values
from tests.service.world import World, id_in
from workers import jobs, lockdown, notices


async def asked(world: World, text: str, user: str = "U0DEV1") -> list[AccessRequest]:
    group = id_in(await world.ask(user, text))
    assert [group] == world.outbox()
    assert notices.announce(group) == "posted"
    return world.rt.store.parts(group)


def click(world: World, user: str, action: str, part: AccessRequest, reason: str | None = None) -> None:
    assert part.card_channel is not None and part.card_ts is not None
    world.decisions.decide(user, action, part.visible_id, (part.card_channel, part.card_ts), reason)


def home_items(world: World, user: str) -> list[tuple[str, str, str]]:
    """(the item's head text, action_id, value) of each App Home button, as `user`'s home shows it now."""
    view = home_of(world.rt, user, world.rt.store.open_requests())
    found: list[tuple[str, str, str]] = []
    head = ""
    for block in view["blocks"]:
        if block["type"] == "section":
            head = block["text"]["text"]
        if block["type"] == "actions":
            found += [(head, e["action_id"], e["value"]) for e in block["elements"]]
    return found


async def extending(world: World, part: AccessRequest) -> None:
    """`part` granted by its job, then its request asks for 10 more minutes and the extension card is posted."""
    assert jobs.grant_access(part.id) == "granted"
    world.rt.queue.empty()
    assert "Asked to extend" in await world.ask("U0DEV1", f"extend {part.group} 10m still digging")
    world.outbox()
    assert notices.announce(str(part.group)) == "posted"


async def both_granted(world: World) -> list[AccessRequest]:
    """lb-prod and lb-broken (given lb-prod's grant) requested together, each approved by its approver, granted."""
    world.edit_policy(lambda p: p["targets"]["lb-broken"].update(grant=p["targets"]["lb-prod"]["grant"]))
    prod, broken = await asked(world, "request lb-prod,lb-broken 30m debugging 502s")
    click(world, "U0APPROVER1", "jit_approve", prod)
    click(world, "U0APPROVER3", "jit_approve", broken)
    assert (jobs.grant_access(prod.id), jobs.grant_access(broken.id)) == ("granted", "granted")
    world.rt.queue.empty()
    return [prod, broken]


def mrkdwn_texts(blocks: list[dict[str, Any]]) -> list[str]:
    """Every mrkdwn text of the blocks (section text, fields, context elements)."""
    texts: list[str] = []
    for block in blocks:
        for obj in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if isinstance(obj, dict) and obj.get("type") == "mrkdwn":
                texts.append(str(obj["text"]))
    return texts


# --- the App Home's Approve / Deny on one target's extension act on that extension only -------------------------


async def test_home_approve_on_an_extension_item_approves_only_that_extension(world: World) -> None:
    """lb-prod granted and asking for 10 more minutes; lb-two still waits for its second approval. U0APPROVER2's
    home shows two items: `lb-prod` "asks to extend by 10m" and `lb-two` "waiting". Approve on the *extension* item
    must count for the extension of lb-prod, never grant lb-two."""
    prod, two = await asked(world, "request lb-prod,lb-two 30m debugging 502s")
    click(world, "U0APPROVER1", "jit_approve", prod)  # lb-prod 1 of 1 (approved), lb-two 1 of 2
    await extending(world, prod)

    items = home_items(world, "U0APPROVER2")
    extension_item = [(head, action, value) for head, action, value in items if "asks to extend" in head]
    assert extension_item, items
    head, _, value = next(i for i in extension_item if i[1] == "jit_approve")
    assert "`lb-prod`" in head

    world.decisions.decide("U0APPROVER2", "jit_approve", value, None)  # Approve on the lb-prod extension item

    assert world.rt.store.get(two.id).status is Status.PENDING, "Approve on lb-prod's extension approved lb-two"
    assert world.rt.store.get(prod.id).extension is None  # the extension it showed was the one approved


async def test_home_deny_on_an_extension_item_does_not_deny_another_targets_request(world: World) -> None:
    prod, two = await asked(world, "request lb-prod,lb-two 30m debugging 502s")
    click(world, "U0APPROVER1", "jit_approve", prod)
    await extending(world, prod)
    items = home_items(world, "U0APPROVER2")
    _, _, value = next(i for i in items if "asks to extend" in i[0] and i[1] == "jit_deny")

    world.decisions.decide("U0APPROVER2", "jit_deny", value, None)  # Deny on the lb-prod extension item

    assert world.rt.store.get(two.id).status is Status.PENDING, "Deny on lb-prod's extension denied lb-two's request"


async def test_an_approver_of_one_target_can_approve_its_extension_from_the_home(world: World) -> None:
    """U0APPROVER3 approves lb-broken only. lb-broken granted, extending; lb-prod still pending: the home's
    Approve on lb-broken's extension counts for that extension (it was once read as a click on the pending lb-prod,
    and refused)."""
    world.edit_policy(lambda p: p["targets"]["lb-broken"].update(grant=p["targets"]["lb-prod"]["grant"]))
    _, broken = await asked(world, "request lb-prod,lb-broken 30m debugging 502s")
    click(world, "U0APPROVER3", "jit_approve", broken)
    await extending(world, broken)
    _, _, value = next(i for i in home_items(world, "U0APPROVER3") if i[1] == "jit_approve")

    world.decisions.decide("U0APPROVER3", "jit_approve", value, None)

    assert world.rt.store.get(broken.id).extension is None, world.audit(str(broken.group))[-1]


# --- the App Home's End now on one target's item ends that target only ---------------------------------------


async def test_home_end_now_on_one_targets_item_ends_that_target_only(world: World) -> None:
    prod, _ = await both_granted(world)
    head, _, value = next(i for i in home_items(world, "U0DEV1") if i[1] == "jit_revoke" and "`lb-prod`" in i[0])

    world.forms.home_revoke("U0DEV1", value)  # End now, on the item that names lb-prod

    revoked = [args[0] for _, args in world.queued()]
    assert revoked == [prod.id], f"End now on the `lb-prod` item ({head!r}) queued revokes of {revoked}"


# --- a typed deny reason on the card of several targets is plain text --------------------------------------------


async def test_a_deny_reason_on_the_group_card_is_plain_text(world: World) -> None:
    """docs/command-and-slack.md: text a person typed can neither format nor link the card. The card of several targets
    shows a typed deny reason as plain_text, as the card of one target does, never in the target's mrkdwn line."""
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(deny_reason="optional"))
    prod, _ = await asked(world, "request lb-prod,lb-two 30m debugging 502s")
    typed = "*URGENT* ~revoked~ see https://evil.example/sso `now`"
    click(world, "U0APPROVER1", "jit_deny", prod, reason=typed)
    assert world.rt.store.get(prod.id).status is Status.DENIED
    card = world.slack.message(str(prod.card_channel), str(prod.card_ts))
    assert card is not None
    leaked = [t for t in mrkdwn_texts(card["blocks"]) if "evil.example" in t]
    assert leaked == [], leaked


# --- a group extension is all or nothing ---------------------------------------------------------------------------


async def test_a_refused_group_extension_leaves_no_extension_behind(world: World) -> None:
    """`/jit extend <part-2>` then `/jit extend <group>`: the second is refused (lb-broken already waits), naming
    it, and sets nothing: lb-prod keeps no extension that no card was ever posted for."""
    prod, broken = await both_granted(world)
    assert "Asked to extend" in await world.ask("U0DEV1", f"extend {broken.id} 10m part two only")
    world.outbox()

    answer = await world.ask("U0DEV1", f"extend {prod.group} 10m both")

    assert "already has an extension waiting" in answer and "`lb-broken`" in answer, answer
    assert world.rt.store.get(prod.id).extension is None, "a refused extend left lb-prod's extension stored"


async def test_a_deny_needs_a_reason_only_when_a_target_it_denies_asks_for_one(world: World) -> None:
    """lb-prod requires a reason to deny, lb-broken does not: U0APPROVER3, who approves lb-broken only, denies
    the request without a reason, and lb-broken alone is denied; U0APPROVER1 (lb-prod) still must say why."""
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(deny_reason="required"))
    world.edit_policy(lambda p: p["targets"]["lb-broken"].update(deny_reason="optional"))
    prod, broken = await asked(world, "request lb-prod,lb-broken 30m debugging 502s")
    card = (str(broken.card_channel), str(broken.card_ts))
    view = world.decisions.deny_form("U0APPROVER3", str(prod.group), card)
    assert view is not None
    errors, order = world.decisions.check_deny("U0APPROVER3", view["private_metadata"], {"reason": ""})
    assert errors == {} and order is not None, errors
    world.decisions.deny("U0APPROVER3", order)
    assert (world.rt.store.get(prod.id).status, world.rt.store.get(broken.id).status) == (
        Status.PENDING,
        Status.DENIED,
    )
    card = (str(prod.card_channel), str(prod.card_ts))
    view = world.decisions.deny_form("U0APPROVER1", str(prod.group), card)
    assert view is not None
    errors, _ = world.decisions.check_deny("U0APPROVER1", view["private_metadata"], {"reason": ""})
    assert errors == {"reason": "`lb-prod` asks whoever denies a request to say why"}


async def test_a_refused_request_of_several_targets_names_each_target_in_its_record(world: World) -> None:
    """A refused command and a refused form of several targets: the `request.refused` record names `targets`, a
    list as other records of such a request carry it, never one comma-joined `target`."""
    answer = await world.ask("U0DEV1", "request lb-prod,lb-nope 30m debugging")
    assert "lb-nope" in answer, answer
    errors = await world.forms.submit_request("U0DEV2", submission(["lb-prod", "lb-two"]))
    assert isinstance(errors, dict) and "target" in errors, errors
    refused = [(r.get("target"), r.get("targets")) for r in world.audit() if r["event"] == "request.refused"]
    assert refused == [(None, ["lb-prod", "lb-nope"]), (None, ["lb-prod", "lb-two"])], refused


# --- a request taken back when the log fails part-way leaves no open request.created -----------------------------


async def test_a_group_whose_second_created_record_fails_leaves_no_orphan_created_record(world: World) -> None:
    """The log fails after the first part's `request.created`: the request is taken back (nothing stored), and
    part 1's `request.created` is closed by a `request.cancelled`, so no auditor's report shows it open."""
    audit = world.rt.audit
    original = audit.request_event_async
    calls = 0

    async def then_full(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            audit.destination = "/dev/full"  # the disk fills between the two records
        await original(*args, **kwargs)

    working = audit.destination
    audit.request_event_async = then_full  # type: ignore[method-assign]
    answer = await world.ask("U0DEV1", "request lb-prod,lb-two 30m debugging 502s")
    audit.request_event_async = original  # type: ignore[method-assign]
    audit.destination = working
    assert "audit log cannot be written" in answer, answer
    assert audit.flush()  # a must record is kept while the log fails, and written once it takes writes again
    assert world.rt.store.open_requests() == []
    created = [r for r in world.audit() if r["event"] == "request.created"]
    closers = {"request.cancelled", "request.refused"}
    closed = {r.get("part") for r in world.audit() if r["event"] in closers}
    orphans = [r["part"] for r in created if r["part"] not in closed]
    assert orphans == [], f"created records of parts never stored nor closed: {orphans}"


# --- lockdown ends every part; a part id in a crafted click, form, limit: the same rules as the request -----------


async def test_lockdown_ends_every_part(world: World) -> None:
    world.edit_policy(lambda p: p["targets"]["lb-broken"].update(grant=p["targets"]["lb-prod"]["grant"]))
    world.edit_policy(lambda p: p.update(admins=["U0ADMIN"]))
    prod, _, _ = await asked(world, "request lb-prod,lb-two,lb-broken 30m debugging 502s")
    click(world, "U0APPROVER1", "jit_approve", prod)
    assert jobs.grant_access(prod.id) == "granted"
    answer = await world.ask("U0ADMIN", "lockdown on incident 42")
    while lockdown.enforce_lockdown():  # clearing jobs, then each grant's revoke and each pending's cancel
        world.work()
    states = {p.target: p.status for p in world.rt.store.parts(str(prod.group))}
    assert states == {"lb-prod": Status.REVOKED, "lb-two": Status.CANCELLED, "lb-broken": Status.CANCELLED}, (
        answer,
        states,
    )
    assert world.rules_of(prod.id) == []


async def test_part_ids_in_crafted_clicks_obey_the_same_rules(world: World) -> None:
    prod, two = await asked(world, "request lb-prod,lb-two 30m debugging 502s")
    group = str(prod.group)
    card = (str(prod.card_channel), str(prod.card_ts))
    world.decisions.decide("U0DEV1", "jit_approve", prod.id, card)  # the requester, by part id, on the card
    world.decisions.decide("U0DEV1", "jit_approve", two.id, None)  # the requester, by part id, from a home
    world.decisions.decide("U0APPROVER3", "jit_approve", prod.id, card)  # lb-broken's approver
    world.decisions.decide("U0APPROVER3", "jit_approve", prod.id, None)
    world.decisions.decide("U0APPROVER1", "jit_approve", two.id, ("C0APPROVALS", "1.2"))  # not its card
    assert [p.status for p in world.rt.store.parts(group)] == [Status.PENDING, Status.PENDING]
    assert all(p.approvals == () for p in world.rt.store.parts(group))
    assert "revoke" in json.dumps(await world.ask("U0APPROVER3", f"revoke {prod.id}"))


def submission(options: list[str]) -> dict[str, str]:
    state = {
        "values": {
            "target": {"target": {"type": "multi_static_select", "selected_options": [{"value": v} for v in options]}},
            "duration": {"duration": {"type": "static_select", "selected_option": {"value": "30m"}}},
            "reason": {"reason": {"type": "plain_text_input", "value": "OPS-1 both"}},
        }
    }
    return field_values(state)


async def test_the_modal_refuses_six_duplicates_and_smuggled_commas(world: World) -> None:
    world.edit_policy(lambda p: p["targets"].update({f"lb-x{i}": dict(p["targets"]["lb-prod"]) for i in range(5)}))
    for options in (
        ["lb-prod", "lb-x0", "lb-x1", "lb-x2", "lb-x3", "lb-x4"],
        ["lb-prod", "lb-prod"],
        ["lb-prod,lb-two", "lb-two"],
        ["lb-prod,lb-x0,lb-x1,lb-x2,lb-x3,lb-x4"],
        ["lb-prod,"],
        ["lb-prod", "lb-two"],  # lb-two: U0DEV2 may not request it
    ):
        errors = await world.forms.submit_request("U0DEV2", submission(options))
        assert isinstance(errors, dict) and "target" in errors, (options, errors)
    assert world.rt.store.open_requests() == [] and world.outbox() == []


async def test_group_creation_is_all_or_nothing_under_limits_and_lockdown(world: World) -> None:
    world.edit_policy(lambda p: (p.setdefault("limits", {}).update(pending_per_user=1), p.update(admins=["U0ADMIN"])))
    await asked(world, "request lb-prod,lb-two 30m first")
    answer = await world.ask("U0DEV1", "request lb-prod,lb-two 30m second")
    assert "pending" in answer, answer
    assert len(world.rt.store.open_requests()) == 2 and world.outbox() == []
    await world.ask("U0ADMIN", "lockdown on incident")
    world.work()
    world.edit_policy(lambda p: p.setdefault("limits", {}).update(pending_per_user=5))
    answer = await world.ask("U0DEV1", "request lb-prod,lb-two 30m third")
    assert "locked down" in answer, answer
    assert [r for r in world.rt.store.open_requests() if r.status is Status.PENDING] == []
