"""Step-up MFA in-process: enrolment (URI and QR by DM), requests and approvals that count only after a code."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
import zxingcpp
from PIL import Image

from bot.service.mfa import Verified
from jit_lb.access.errors import CommandError, MfaError
from jit_lb.access.requests import Status
from tests.service.world import APPROVALS, World
from workers import enrolments, jobs, notices


@pytest.fixture(name="mfa_world")
def fixture_mfa_world(world: World) -> World:
    """lb-prod requires MFA; U0ADMIN is an admin; two wrong codes lock a person out for a minute."""

    def change(policy: dict[str, Any]) -> None:
        policy["targets"]["lb-prod"]["require_mfa"] = True
        policy["admins"] = ["U0ADMIN"]
        policy["mfa"] = {"window": "5m", "lockout_after": 3, "lockout": "1m"}

    world.edit_policy(change)
    return world


def enrol(world: World, user: str) -> str:
    """Enrol `user` as a person would: the command, the DM's URI, a first code; returns the secret."""
    reply = world.mfa.command(user, ["enroll"])
    assert reply.view is not None
    world.mfa.send_enrolment(user)
    secret = secret_from_dm(world, user)
    result = world.mfa.verify(user, reply.view["private_metadata"], pyotp.TOTP(secret).now())
    assert isinstance(result, Verified)
    return secret


async def step_up(world: World) -> str:
    """U0DEV1's enrolment proof spent, a request for lb-prod opens the step-up modal: its private_metadata."""
    world.rt.store.redis.delete("jit:mfa:proven:U0DEV1")
    reply = await world.commands.command("U0DEV1", "request lb-prod 30m debugging", None)
    assert reply.view is not None
    return str(reply.view["private_metadata"])


def secret_from_dm(world: World, user: str) -> str:
    uri = next(m["text"] for m in reversed(world.slack.dms(user)) if "otpauth://" in m["text"])
    return uri.split("secret=")[1].split("&")[0]


def next_code(secret: str, steps: int = 1) -> str:
    """A code of a later time step (within the drift allowed), so that a test can use two different codes now."""
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30 * steps))


def test_enrolment_sends_uri_and_qr_and_keeps_the_secret_encrypted(mfa_world: World) -> None:
    """The DM carries the otpauth URI and a PNG QR code of it; Redis holds the secret only encrypted."""
    world = mfa_world
    reply = world.mfa.command("U0DEV1", ["enroll"])
    assert reply.view is not None
    assert reply.view["callback_id"] == "jit_mfa"
    world.mfa.send_enrolment("U0DEV1")
    secret = secret_from_dm(world, "U0DEV1")

    [upload] = world.slack.files()
    image = Image.open(io.BytesIO(upload.content))
    assert image.format == "PNG"
    [decoded] = zxingcpp.read_barcodes(image)
    assert decoded.text.startswith("otpauth://totp/jit-lb:U0DEV1?secret=" + secret)

    raw = b"".join(world.rt.store.redis.get(key) or b"" for key in world.rt.store.redis.keys("jit:mfa:secret:*"))
    assert raw
    assert secret.encode() not in raw
    assert secret not in world.audit_path.read_text()

    wrong = world.mfa.verify("U0DEV1", reply.view["private_metadata"], "000000")
    assert isinstance(wrong, dict)
    assert "wrong code" in wrong["code"]
    assert isinstance(world.mfa.verify("U0DEV1", reply.view["private_metadata"], pyotp.TOTP(secret).now()), Verified)
    assert [e for e in world.events() if e.startswith("mfa.")] == ["mfa.failed", "mfa.enrolled", "mfa.verified"]
    with pytest.raises(CommandError, match="enrolled already"):
        world.mfa.command("U0DEV1", ["enroll"])


async def test_a_request_counts_only_after_a_valid_code(mfa_world: World) -> None:
    """On lb-prod the command opens the step-up modal and stores nothing; a good code makes the request, with MFA."""
    world = mfa_world
    refused = await world.ask("U0DEV1", "request lb-prod 30m debugging")
    assert "not enrolled" in refused
    secret = enrol(world, "U0DEV1")
    world.rt.store.redis.delete("jit:mfa:proven:U0DEV1")  # the enrolment's proof spent: a fresh step-up is due

    reply = await world.commands.command("U0DEV1", "request lb-prod 30m debugging", None)
    assert reply.view is not None
    assert world.rt.store.open_requests() == []
    metadata = reply.view["private_metadata"]
    assert json.loads(metadata)["target"] == "lb-prod"

    assert await world.forms.submit_code("U0DEV1", metadata, "999999") == {"code": "wrong code (2 tries left)"}
    assert world.rt.store.open_requests() == []
    code = next_code(secret)  # the enrolment used now's code: a code works once
    assert await world.forms.submit_code("U0DEV1", metadata, code) is None
    [request] = world.rt.store.open_requests()
    assert request.requested_with_mfa
    assert world.record("request.created", request.id)["mfa"] is True

    # The same code again is refused; within the window, a second request needs none.
    assert await world.forms.submit_code("U0DEV1", metadata, code) == {
        "code": "that code was used already; wait for the next one"
    }
    second = await world.commands.command("U0DEV1", "request lb-prod 30m again", None)
    assert second.view is None
    assert "waiting for approval" in second.text


async def test_wrong_codes_lock_out_and_the_approvers_are_told(mfa_world: World) -> None:
    """Three wrong codes lock the person out of step-ups for the lockout; the approvers' channel hears of it."""
    world = mfa_world
    enrol(world, "U0DEV1")
    metadata = await step_up(world)
    for _ in range(3):
        answer = await world.forms.submit_code("U0DEV1", metadata, "123456")
    assert answer == {"code": "wrong code; you are locked out for 1m"}
    assert "locked out of step-ups" in world.texts(world.slack.messages(APPROVALS))
    assert "locked out" in await world.ask("U0DEV1", "request lb-prod 30m once more")
    locked = [r for r in world.audit() if r["event"] == "mfa.failed" and r.get("locked")]
    assert len(locked) == 1


async def test_an_approval_counts_only_after_a_valid_code(mfa_world: World) -> None:
    """An approver's click opens the step-up modal; the click alone is refused; with a code it approves, with MFA."""
    world = mfa_world
    requester_secret = enrol(world, "U0DEV1")
    approver_secret = enrol(world, "U0APPROVER1")
    world.rt.store.redis.delete("jit:mfa:proven:U0APPROVER1")
    assert requester_secret != approver_secret
    request = await world.request(text="request lb-prod 30m debugging")  # proven by the enrolment: no code now
    card = (str(request.card_channel), str(request.card_ts))

    view = world.decisions.approve_form("U0APPROVER1", request.id, card)
    assert view is not None
    world.decisions.decide("U0APPROVER1", "jit_approve", request.id, card)  # a click that skipped the modal
    assert world.rt.store.get(request.id).status is Status.PENDING
    assert "requires a one-time code" in world.record("approval.refused", request.id)["why"]

    assert await world.forms.submit_code("U0APPROVER1", view["private_metadata"], next_code(approver_secret)) is None
    world.slack.wait_for(lambda: world.rt.store.get(request.id).status is Status.APPROVED)
    approved = world.record("request.approved", request.id)
    assert approved["mfa"] is True
    assert "Approved by <@U0APPROVER1> with MFA" in json.dumps(
        world.slack.wait_for(lambda: world.slack.updates(*card))[-1]["blocks"]
    )


async def test_reset_is_for_admins_after_their_own_code(mfa_world: World) -> None:
    """Only an admin resets an enrolment, and only with a code of their own; then the person may enrol again."""
    world = mfa_world
    enrol(world, "U0DEV1")
    with pytest.raises(CommandError, match="only an admin"):
        world.mfa.command("U0DEV2", ["reset", "<@U0DEV1>"])
    with pytest.raises(MfaError, match="not enrolled"):
        world.mfa.command("U0ADMIN", ["reset", "<@U0DEV1|dev1>"])  # an admin's Slack session alone is not enough
    admin_secret = enrol(world, "U0ADMIN")
    world.rt.store.redis.delete("jit:mfa:proven:U0ADMIN")

    reply = world.mfa.command("U0ADMIN", ["reset", "<@U0DEV1|dev1>"])
    assert reply.view is not None
    assert world.rt.mfa.enrolment("U0DEV1") is not None  # nothing reset before the code
    assert await world.forms.submit_code("U0ADMIN", reply.view["private_metadata"], next_code(admin_secret)) is None
    world.slack.wait_for(lambda: world.rt.mfa.enrolment("U0DEV1") is None)
    record = world.record("mfa.reset")
    assert (record["actor"], record["user"], record["mfa"]) == ("U0ADMIN", "U0DEV1", True)
    world.slack.wait_for(
        lambda: "<@U0ADMIN> reset your step-up MFA enrolment" in world.texts(world.slack.dms("U0DEV1"))
    )
    assert "<@U0ADMIN> reset <@U0DEV1>'s step-up MFA enrolment" in world.texts(world.slack.messages(APPROVALS))
    assert world.mfa.command("U0DEV1", ["enroll"]).view is not None


def test_an_admin_may_not_reset_their_own_enrolment(mfa_world: World) -> None:
    """An admin's own reset is refused, even proven: a stolen admin session must not enrol a new authenticator."""
    world = mfa_world
    enrol(world, "U0ADMIN")
    with pytest.raises(CommandError, match="your own enrolment"):
        world.mfa.command("U0ADMIN", ["reset", "<@U0ADMIN>"])
    assert world.rt.mfa.enrolment("U0ADMIN") is not None
    assert "mfa.reset" not in world.events()


async def test_a_reset_does_not_lift_a_lockout(mfa_world: World) -> None:
    """A person locked out and then reset is still locked out: no new enrolment until the lockout ends."""
    world = mfa_world
    enrol(world, "U0DEV1")
    enrol(world, "U0ADMIN")  # proven by the enrolment: the reset needs no second code now
    metadata = await step_up(world)
    for _ in range(3):
        await world.forms.submit_code("U0DEV1", metadata, "123456")
    assert "removed" in world.mfa.command("U0ADMIN", ["reset", "<@U0DEV1>"]).text

    assert "locked out of step-ups" in world.mfa.status_text("U0DEV1")
    with pytest.raises(CommandError, match="locked out of step-ups"):
        world.mfa.command("U0DEV1", ["enroll"])


async def test_a_target_that_requires_mfa_since_refuses_a_request_made_without_a_code(world: World) -> None:
    """Approved before lb-prod required MFA, without codes: when the grant is applied, it is refused."""
    request = await world.request()
    world.click("U0APPROVER1", "jit_approve", request)
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(require_mfa=True))
    assert jobs.grant_access(request.id) == "failed"
    assert "requires MFA now" in world.record("grant.failed", request.id)["error"]
    assert world.ingress() == []


def test_an_enrolment_not_confirmed_in_time_is_cancelled_and_leaves_slack(mfa_world: World) -> None:
    """Unconfirmed past mfa.enrol_within: the secret is destroyed, the DM and QR deleted, the person told why."""
    world = mfa_world
    reply = world.mfa.command("U0DEV1", ["enroll"])
    assert reply.view is not None
    world.mfa.send_enrolment("U0DEV1")
    secret = secret_from_dm(world, "U0DEV1")
    assert world.slack.holding(secret)
    assert enrolments.forget_due(datetime.now(UTC)) == 0  # still within its time: the person needs them

    assert enrolments.forget_due(datetime.now(UTC) + timedelta(minutes=5, seconds=1)) == 1
    assert world.slack.holding(secret) == []
    assert world.slack.files() == []
    assert world.rt.store.redis.keys("jit:mfa:secret:*") == []
    assert world.record("mfa.cancelled")["user"] == "U0DEV1"
    assert "not confirmed within 5m" in world.texts(world.slack.dms("U0DEV1"))
    late = world.mfa.verify("U0DEV1", reply.view["private_metadata"], pyotp.TOTP(secret).now())
    assert late == {"code": "you are not enrolled: `/jit mfa enroll` sets it up"}


def test_a_confirmed_enrolment_leaves_nothing_of_its_secret_in_slack(mfa_world: World) -> None:
    """The first code confirms the enrolment; the worker then deletes the DM and the QR code that carried it."""
    world = mfa_world
    secret = enrol(world, "U0DEV1")
    assert enrolments.forget_enrolment("U0DEV1") == "forgotten"
    assert world.slack.holding(secret) == []
    assert world.slack.files() == []
    assert [call.method for call in world.slack.calls() if call.method.endswith(".delete")] == [
        "chat.delete",
        "files.delete",
    ]


async def test_wrong_codes_sent_at_once_are_checked_only_as_far_as_the_lockout(mfa_world: World) -> None:
    """Twenty wrong codes at the same moment: three are checked, one lockout is recorded and told once."""
    world = mfa_world
    enrol(world, "U0DEV1")
    metadata = await step_up(world)
    start = threading.Barrier(20)

    def submit(code: str) -> dict[str, str] | Verified:
        start.wait()
        return world.mfa.verify("U0DEV1", metadata, code)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(submit, [f"{n:06d}" for n in range(100000, 100020)]))

    assert not any(isinstance(answer, Verified) for answer in answers)
    checked = [r for r in world.audit() if r["event"] == "mfa.failed" and r["why"] == "a wrong code"]
    assert len(checked) == 3
    assert [r["locked"] for r in checked].count(True) == 1
    alerts = [m for m in world.slack.messages(APPROVALS) if "locked out of step-ups" in m.get("text", "")]
    assert len(alerts) == 1
    assert world.rt.mfa.locked_for("U0DEV1") is not None


async def test_lifting_a_lockdown_asks_the_admin_for_a_code_where_mfa_is_in_use(mfa_world: World) -> None:
    """A stolen admin session may lock down (it only takes access away) but not lift it without a code."""
    world = mfa_world
    assert "Lockdown on" in await world.ask("U0ADMIN", "lockdown on suspected session theft")
    assert "not enrolled" in await world.ask("U0ADMIN", "lockdown off")
    assert world.rt.store.lockdown() is not None
    secret = enrol(world, "U0ADMIN")
    world.rt.store.redis.delete("jit:mfa:proven:U0ADMIN")

    reply = await world.commands.command("U0ADMIN", "lockdown off", None)
    assert reply.view is not None
    assert world.rt.store.lockdown() is not None
    assert await world.forms.submit_code("U0ADMIN", reply.view["private_metadata"], next_code(secret)) is None
    world.slack.wait_for(lambda: world.rt.store.lockdown() is None)
    assert world.record("lockdown.ended")["mfa"] is True
    world.slack.wait_for(lambda: "lifted" in world.texts(world.slack.dms("U0ADMIN")))


async def test_a_new_enrolment_is_announced_to_the_approvers(mfa_world: World) -> None:
    """Trust on first enrolment made visible: the approvers' channel hears who enrolled, once."""
    world = mfa_world
    reply = world.mfa.command("U0DEV2", ["enroll"])
    assert reply.view is not None
    world.mfa.send_enrolment("U0DEV2")
    secret = secret_from_dm(world, "U0DEV2")
    assert await world.forms.submit_code("U0DEV2", reply.view["private_metadata"], pyotp.TOTP(secret).now()) is None
    world.slack.wait_for(lambda: "<@U0DEV2> enrolled an authenticator" in world.texts(world.slack.messages(APPROVALS)))
    assert await world.forms.submit_code("U0DEV2", reply.view["private_metadata"], next_code(secret)) is None
    world.slack.wait_for(lambda: len(world.slack.dms("U0DEV2")) >= 3)
    announced = [m for m in world.slack.messages(APPROVALS) if "enrolled an authenticator" in m.get("text", "")]
    assert len(announced) == 1


def test_an_operator_resets_an_enrolment_from_the_command_line(mfa_world: World) -> None:
    """`python -m bot mfa reset` with the processes' environment: the way out when no admin can step up."""
    world = mfa_world
    enrol(world, "U0ADMIN")  # the sole admin, who may not reset themselves
    settings = world.rt.settings
    assert settings.jit_mfa_key is not None
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("SLACK_", "JIT_", "REDIS_"))},
        "SLACK_BOT_TOKEN": settings.slack_bot_token.get_secret_value(),
        "SLACK_API_URL": settings.slack_api_url,
        "REDIS_URL": settings.redis_url,
        "JIT_POLICY_FILE": settings.jit_policy_file,
        "JIT_AUDIT_LOG": str(world.audit_path),
        "JIT_MFA_KEY": settings.jit_mfa_key.get_secret_value(),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "mfa", "reset", "U0ADMIN", "lost phone, ticket SEC-12"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr.count("Traceback")) == (0, 0), done.stderr
    assert "U0ADMIN's enrolment was removed" in done.stdout
    assert world.rt.mfa.enrolment("U0ADMIN") is None
    record = world.record("mfa.reset")
    assert (record["actor"], record["user"], record["via"]) == ("operator", "U0ADMIN", "cli")
    assert "An operator reset <@U0ADMIN>'s step-up MFA enrolment" in world.texts(world.slack.messages(APPROVALS))
    assert "An operator reset your step-up MFA enrolment" in world.texts(world.slack.dms("U0ADMIN"))


async def test_one_code_covers_a_request_of_several_targets_and_one_approvers_click(mfa_world: World) -> None:
    """lb-prod requires MFA, lb-two does not: one code makes the request of both; an approver of both is asked one
    code, and it counts their approval of each, each recorded with MFA."""
    world = mfa_world
    requester_secret = enrol(world, "U0DEV1")
    approver_secret = enrol(world, "U0APPROVER1")
    world.rt.store.redis.delete("jit:mfa:proven:U0DEV1")
    world.rt.store.redis.delete("jit:mfa:proven:U0APPROVER1")

    reply = await world.commands.command("U0DEV1", "request lb-prod,lb-two 30m debugging", None)
    assert reply.view is not None
    assert world.rt.store.open_requests() == []
    assert await world.forms.submit_code("U0DEV1", reply.view["private_metadata"], next_code(requester_secret)) is None
    world.slack.wait_for(lambda: len(world.rt.store.open_requests()) == 2)
    [group] = world.outbox()
    assert notices.announce(group) == "posted"
    prod, two = world.rt.store.parts(group)
    assert prod.requested_with_mfa and two.requested_with_mfa
    verified = [
        (r.get("target"), r.get("targets"), r["purpose"]) for r in world.audit() if r["event"] == "mfa.verified"
    ]
    assert verified[-1] == (
        None,
        ["lb-prod", "lb-two"],
        "request",
    )  # each target named, never one comma-joined `target`
    card = (str(prod.card_channel), str(prod.card_ts))

    view = world.decisions.approve_form("U0APPROVER1", group, card)
    assert view is not None
    assert await world.forms.submit_code("U0APPROVER1", view["private_metadata"], next_code(approver_secret)) is None
    world.slack.wait_for(lambda: world.rt.store.get(prod.id).status is Status.APPROVED)
    world.slack.wait_for(lambda: world.rt.store.get(two.id).approvers == ["U0APPROVER1"])
    approved = [(r["target"], r["mfa"]) for r in world.audit(group) if r["event"] == "request.approved"]
    assert approved == [("lb-prod", True), ("lb-two", True)]


# A request of several targets, lb-prod requiring MFA beside lb-two requiring none.


async def _several_made(world: World) -> tuple[str, tuple[str, str]]:
    enrol(world, "U0DEV1")  # proven for the window: the request is made at once, with MFA
    answer = (await world.commands.command("U0DEV1", "request lb-prod,lb-two 30m debugging", None)).text
    [group] = world.outbox()
    assert notices.announce(group) == "posted", answer
    prod, _ = world.rt.store.parts(group)
    return group, (str(prod.card_channel), str(prod.card_ts))


async def test_a_click_without_a_code_counts_for_no_target_needing_one(mfa_world: World) -> None:
    """A request of lb-prod (requires MFA) and lb-two: an enrolled approver not proven now, clicking past the modal
    (a crafted click, no code), does not approve lb-prod."""
    world = mfa_world
    group, card = await _several_made(world)
    enrol(world, "U0APPROVER1")
    world.rt.store.redis.delete("jit:mfa:proven:U0APPROVER1")
    assert world.decisions.approve_form("U0APPROVER1", group, card) is not None
    world.decisions.decide("U0APPROVER1", "jit_approve", group, card)  # a crafted click, no code
    prod, _ = world.rt.store.parts(group)
    assert prod.approvals == () and prod.status is Status.PENDING


async def test_an_approver_without_mfa_still_approves_the_target_that_needs_none(mfa_world: World) -> None:
    """U0APPROVER2 never enrolled: their click cannot count for lb-prod, but counts for lb-two (docs: a click
    counts for each target its clicker may approve); they are told lb-prod wants a code, and the refusal is recorded."""
    world = mfa_world
    group, card = await _several_made(world)
    assert world.decisions.approve_form("U0APPROVER2", group, card) is None  # MfaError swallowed: no modal
    world.decisions.decide("U0APPROVER2", "jit_approve", group, card)
    prod, two = world.rt.store.parts(group)
    assert [a.user for a in two.approvals] == ["U0APPROVER2"], world.audit(group)[-1]["why"]
    assert prod.approvals == () and prod.status is Status.PENDING
    refused = [r for r in world.audit(group) if r["event"] == "approval.refused"]
    assert [r["actor"] for r in refused] == ["U0APPROVER2"] and "`lb-prod`" in refused[0]["why"], refused
