"""Step-up MFA with the Procfile's processes: enrol by DM and QR code, then requests and approvals behind a code."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
import zxingcpp
from cryptography.fernet import Fernet
from PIL import Image

from devtools.moto_server import Network
from devtools.slack_client import inputs, text_input
from devtools.stack import BOT_TOKEN, SIGNING_SECRET, Stack
from tests.helpers import APPROVALS, DEVS, card_ts, rules_of, stack_policy

pytestmark = pytest.mark.slow
SECRETS: dict[str, str] = {}  # each person's secret, once enrolled in this module (a person enrols once)
ENROLMENT_CODES: dict[str, str] = {}  # the code each person typed to confirm their enrolment (spent by it)


def mfa_policy(network: Network) -> dict[str, Any]:
    policy = stack_policy(network)
    policy["targets"]["lb-prod"]["require_mfa"] = True
    policy["mfa"] = {"window": "2s", "lockout_after": 3, "lockout": "1m"}
    return policy


@pytest.fixture(name="stack", scope="module")
def fixture_stack() -> Iterator[Stack]:
    key = Fernet.generate_key().decode()
    with Stack(policy=mfa_policy, sweep_interval=2.0, extra_env={"JIT_MFA_KEY": key}) as stack:
        yield stack


def code(secret: str, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30 * steps))


def enrol(stack: Stack, user: str) -> str:
    """`/jit mfa enroll`, the secret read from the DM, the QR code decoded, a first code typed: the secret."""
    assert stack.client().command(user, "mfa enroll", channel=DEVS).status == 200
    modal = stack.wait_for(lambda: stack.slack.views(user, "jit_mfa"), what="the enrolment modal")[-1]
    dm = stack.wait_for(lambda: [m for m in stack.slack.dms(user) if "otpauth://" in m.get("text", "")])[-1]
    uri = dm["text"][dm["text"].index("otpauth://") :].split("`")[0]
    upload = stack.wait_for(
        lambda: [f for f in stack.slack.files(user) if f.filename == "jit-lb-mfa.png"], what="the QR"
    )
    image = Image.open(io.BytesIO(upload[-1].content))
    assert image.format == "PNG"
    assert [result.text for result in zxingcpp.read_barcodes(image)] == [uri]
    secret = uri.split("secret=")[1].split("&")[0]
    typed = code(secret)
    answer = stack.client().submit(user, inputs(code=text_input(typed)), view=modal)
    assert answer.status == 200
    assert answer.body == ""
    SECRETS[user], ENROLMENT_CODES[user] = secret, typed
    return secret


def past_window(stack: Stack, user: str) -> None:
    """Wait out the enrolment's proof (mfa.window, 2 s here): then `/jit mfa status` says plain "Enrolled."."""
    time.sleep(2.2)  # the window is time itself; polling `/jit mfa status` would spend the rate limit
    assert stack.client().command(user, "mfa status").json()["text"] == "Enrolled."


def test_requests_and_approvals_need_a_fresh_valid_code(stack: Stack) -> None:
    """Nothing is stored, and no approval counts, without a valid code; codes work once; the window ends."""
    requester = enrol(stack, "U0DEV1")
    approver = enrol(stack, "U0APPROVER1")
    events = [r["event"] for r in stack.audit()]
    assert (events.count("mfa.enrolled"), events.count("mfa.verified")) == (2, 2)
    past_window(stack, "U0DEV1")

    # Past the window (2 s), the request opens the modal and stores nothing.
    answer = stack.client().command("U0DEV1", "request lb-prod 30m OPS-1 debugging", channel=DEVS)
    assert "requires a one-time code" in answer.json()["text"]
    modal = stack.wait_for(lambda: [v for v in stack.slack.views("U0DEV1", "jit_mfa") if "lb-prod" in str(v)])[-1]
    assert not [r for r in stack.audit() if r["event"] == "request.created"]

    wrong = stack.client().submit("U0DEV1", inputs(code=text_input("000000")), view=modal)
    assert wrong.json() == {"response_action": "errors", "errors": {"code": "wrong code (2 tries left)"}}
    # The very code typed to enrol (a fresh code of the step now would be new if a 30 s step began since).
    used = stack.client().submit("U0DEV1", inputs(code=text_input(ENROLMENT_CODES["U0DEV1"])), view=modal)
    assert used.json()["errors"]["code"].startswith("that code was used")  # the enrolment's code, already spent
    good = stack.client().submit("U0DEV1", inputs(code=text_input(code(requester, 1))), view=modal)
    assert good.body == ""
    created = stack.wait_for(lambda: [r for r in stack.audit() if r["event"] == "request.created"])[-1]
    request_id = created["request_id"]
    assert created["mfa"] is True

    # The approver's click opens the modal; nothing counts until the code.
    ts = card_ts(stack, request_id)
    assert stack.client().click("U0APPROVER1", "jit_approve", request_id, APPROVALS, ts).status == 200
    approve_modal = stack.wait_for(
        lambda: [v for v in stack.slack.views("U0APPROVER1", "jit_mfa") if request_id in str(v)], what="step-up"
    )[-1]
    assert "request.approved" not in stack.events(request_id)
    assert (
        stack.client().submit("U0APPROVER1", inputs(code=text_input(code(approver, 1))), view=approve_modal).body == ""
    )
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="the grant")
    approved = next(r for r in stack.audit(request_id) if r["event"] == "request.approved")
    assert approved["mfa"] is True
    assert len(rules_of(stack, request_id)) == 2
    assert "with MFA" in json.dumps(stack.wait_for(lambda: stack.slack.updates(APPROVALS, ts))[-1]["blocks"])


def test_wrong_codes_lock_a_person_out(stack: Stack) -> None:
    """Three wrong codes lock the person out; the approvers' channel is told; the next request is refused."""
    enrol(stack, "U0DEV2")
    past_window(stack, "U0DEV2")
    answer = stack.client().command("U0DEV2", "request lb-prod 30m OPS-2 checking", channel=DEVS)
    assert "requires a one-time code" in answer.json()["text"]
    modal = stack.wait_for(lambda: stack.slack.views("U0DEV2", "jit_mfa"))[-1]
    for _ in range(3):
        last = stack.client().submit("U0DEV2", inputs(code=text_input("111111")), view=modal)
    assert last.json()["errors"]["code"] == "wrong code; you are locked out for 1m"
    assert "<@U0DEV2> is locked out" in json.dumps(stack.wait_for(lambda: stack.slack.messages(APPROVALS)))
    assert "locked out" in stack.client().command("U0DEV2", "request lb-prod 30m OPS-3 again").json()["text"]


def test_the_secret_leaves_slack_once_the_enrolment_is_confirmed(stack: Stack) -> None:
    """After the first code, neither the DM with the otpauth URI nor the QR code is anywhere Slack keeps."""
    secret = enrol(stack, "U0APPROVER2")
    stack.wait_for(lambda: not stack.slack.holding(secret), what="the secret's DM deleted")
    assert [f.id for f in stack.slack.files() if f.filename == "jit-lb-mfa.png" and _qr_holds(f.content, secret)] == []
    deletes = [call.response for call in stack.slack.calls("chat.delete") + stack.slack.calls("files.delete")]
    assert deletes
    assert all(answer["ok"] for answer in deletes)
    # The authenticator still works: the secret left Slack, not jit-lb.
    answer = stack.client().command("U0APPROVER2", "mfa status")
    assert answer.json()["text"].startswith("Enrolled")


def _qr_holds(content: bytes | None, secret: str) -> bool:
    if not content:
        return False
    return any(secret in result.text for result in zxingcpp.read_barcodes(Image.open(io.BytesIO(content))))


def test_no_secret_or_token_reaches_the_logs_at_debug() -> None:
    """With JIT_LOG_LEVEL=DEBUG (slack_sdk then logs each request's body), an enrolment leaves no secret in a log."""
    keys = {"JIT_MFA_KEY": Fernet.generate_key().decode(), "JIT_AUDIT_KEY": "audit-key-" + "k" * 24}
    with Stack(policy=mfa_policy, sweep_interval=2.0, extra_env={**keys, "JIT_LOG_LEVEL": "DEBUG"}) as debug:
        secret = enrol(debug, "U0DEV1")
        debug.wait_for(lambda: not debug.slack.holding(secret), what="the secret's DM deleted")
        logs = {p.name: p.log_path.read_text(encoding="utf-8", errors="replace") for p in debug.processes}
    assert "Sending a request" in logs["web.1"]  # slack_sdk's DEBUG lines are there, redacted
    secrets = {"the TOTP secret": secret, "the bot token": BOT_TOKEN, "the signing secret": SIGNING_SECRET, **keys}
    found = [(what, name) for what, value in secrets.items() for name, text in logs.items() if value in text]
    assert found == []
    assert [name for name, text in logs.items() if "otpauth://" in text] == []


def test_a_step_up_form_whose_metadata_names_another_request_is_refused(stack: Stack) -> None:
    """Over signed HTTP: the approver's code form for one request, its private_metadata edited to name another,
    is answered with an error on `code` and recorded; neither request is approved."""
    requester = Codes(enrol(stack, "U0DEV3"))
    approver = Codes(SECRETS.get("U0APPROVER2") or enrol(stack, "U0APPROVER2"))
    ids = []
    for reason in ("OPS-7 first", "OPS-8 second"):
        seen = len(stack.slack.views("U0DEV3", "jit_mfa"))
        answer = stack.client().command("U0DEV3", f"request lb-prod 30m {reason}", channel=DEVS)
        if "requires a one-time code" in answer.json()["text"]:
            modal = stack.wait_for(lambda seen=seen: stack.slack.views("U0DEV3", "jit_mfa")[seen:])[-1]
            assert stack.client().submit("U0DEV3", inputs(code=text_input(requester.fresh())), view=modal).body == ""
        created = stack.wait_for(
            lambda reason=reason: [
                r for r in stack.audit() if r["event"] == "request.created" and r["request_reason"] == reason
            ],
            what="the request",
        )
        ids.append(created[-1]["request_id"])
    first, second = ids
    time.sleep(2.2)  # past the approver's window (2 s): the click opens the step-up
    stack.client().click("U0APPROVER2", "jit_approve", first, APPROVALS, card_ts(stack, first))
    modal = stack.wait_for(lambda: [v for v in stack.slack.views("U0APPROVER2", "jit_mfa") if first in str(v)])[-1]

    forged = modal["private_metadata"].replace(first, second)
    answer = stack.client().submit(
        "U0APPROVER2", inputs(code=text_input(approver.fresh())), view=modal, private_metadata=forged
    )

    assert "not one jit-lb opened for you" in answer.json()["errors"]["code"]
    assert any(r["event"] == "mfa.failed" and "a form refused" in r["why"] for r in stack.audit())
    assert "request.approved" not in stack.events(first) + stack.events(second)


class Codes:
    """Codes of one secret, each of a time step not used before in this module (a code works once)."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        now = self.totp.timecode(datetime.now(UTC))
        self.used = {now - 1, now}  # the enrolment's code was one of these

    def fresh(self) -> str:
        now = self.totp.timecode(datetime.now(UTC))
        step = next(step for step in (now, now + 1, now - 1) if step not in self.used)
        self.used.add(step)
        return self.totp.generate_otp(step)
