"""`make demo`: the main flow on this machine alone, with a private Redis, moto and a Slack stand-in."""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
from cryptography.fernet import Fernet

from devtools.haproxy import http_status as haproxy_status
from devtools.moto_server import Network
from devtools.nginx import NginxServer, nginx_binary
from devtools.render import readable, render_view
from devtools.slack_client import inputs, select, text_input
from devtools.stack import Stack

APPROVALS = "C0APPROVALS"
AUDIT = "C0AUDIT"
GRANT_SECONDS = 8
ONCALL_SCHEDULE = "PSCHED01"
HAPROXY_SOURCE = "127.0.0.7"
NGINX_SOURCE = "127.0.0.2"
DEMO_DIR = Path(".demo")  # what the demo leaves for a person to look at (the enrolment QR codes); git ignores it


def demo_policy(network: Network, nginx: NginxServer | None = None) -> dict[str, Any]:
    """One target per grant kind; HAProxy's and NGINX's only when this machine has them."""
    window = {"default_duration": "30m", "min_duration": "5s", "max_duration": "1h"}
    targets: dict[str, Any] = {
        "lb-prod": {
            "description": "Production public ALB (demo security group)",
            **window,
            "durations": ["15m", "30m", "1h"],
            "reason_pattern": "^[A-Z]+-[0-9]+ ",
            "reason_hint": "start with the ticket, e.g. OPS-123 debugging 502s",
            "approvers": ["role:netops"],
            "grant": network.security_group_grant([443]),
        },
        "lb-admin": {
            "description": "/admin on the ALB, by listener rule",
            **window,
            "approvers": ["U0APPROVER1"],
            "grant": network.listener_rule_grant(),
        },
        "lb-config": {
            "description": "Change the ALB through the AWS API",
            **window,
            "approvers": ["U0APPROVER1"],
            "grant": {
                "kind": "aws_iam_policy",
                "load_balancer_arn": network.load_balancer_arn,
                "actions": ["elasticloadbalancing:Describe*", "elasticloadbalancing:ModifyListener"],
            },
        },
    }
    targets["lb-mfa"] = {
        "description": "The same security group, behind a one-time code",
        **window,
        "approvers": ["U0APPROVER1"],
        "require_mfa": True,
        "grant": {**targets["lb-prod"]["grant"], "ports": [8443]},
    }
    targets["lb-oncall"] = {
        "description": "The same security group: the primary on call needs no click",
        **window,
        "approvers": ["U0APPROVER1"],
        "auto_approve": {"on_call": {"schedules": [ONCALL_SCHEDULE]}, "max_duration": "15m", "end_with_shift": True},
        "grant": {**targets["lb-prod"]["grant"], "ports": [8080]},
    }
    if network.haproxy_acl:
        targets["edge-haproxy"] = {
            "description": "The edge HAProxy",
            **window,
            "approvers": ["U0APPROVER1"],
            "grant": {"kind": "haproxy_acl", "runtime_api": network.haproxy_runtime_api, "acl": network.haproxy_acl},
        }
    principals: dict[str, Any] = {
        "U0DEV1": {"source_cidr": "203.0.113.7/32", "aws_role_name": network.role_name},
        "U0DEV3": {"source_cidr": f"{HAPROXY_SOURCE}/32"},
        "U0DEV5": {"source_cidr": "198.51.100.5/32"},  # asks during the failover
        "U0DEV6": {"source_cidr": "198.51.100.6/32", "email": "dev6@example.com"},  # the primary on call
        "U0DEV7": {"source_cidr": "198.51.100.7/32", "email": "dev7@example.com"},  # the secondary
    }
    if nginx is not None:
        targets["edge-nginx"] = {
            "description": "The edge NGINX",
            **window,
            "approvers": ["U0APPROVER1"],
            "grant": nginx.grant_spec(),
        }
        principals["U0DEV4"] = {"source_cidr": f"{NGINX_SOURCE}/32"}
    return {
        "approver_channel": APPROVALS,
        "audit_channel": AUDIT,
        "pending_ttl": "15m",
        "roles": {"netops": ["U0APPROVER1", "S0NETOPS"]},
        "admins": ["U0ADMIN"],
        "mfa": {"window": "2s", "lockout_after": 5, "lockout": "15m"},  # a short window, for the demo to show codes
        "break_glass": {"users": ["U0DEV1"], "targets": ["lb-prod"], "max_duration": "1h", "review_within": "1h"},
        "principals": principals,
        "targets": targets,
    }


def section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def show_rules(stack: Stack) -> None:
    rules = stack.sg_rules()
    if not rules:
        print("  (no ingress rules)")
    for rule in rules:
        tags = {t["Key"]: t["Value"] for t in rule.get("Tags", [])}
        print(
            f"  {rule['SecurityGroupRuleId']}  {rule['IpProtocol']}/{rule['FromPort']}  from {rule.get('CidrIpv4')}"
            f'  "{rule.get("Description", "")}"  tags={tags}'
        )


def slack_text(message: dict[str, Any]) -> str:
    blocks = message.get("blocks") or []
    texts = []
    for block in blocks:
        if block.get("text"):
            texts.append(block["text"]["text"])
        texts.extend(field["text"] for field in block.get("fields", []))
        texts.extend(
            f"[{element['text']['text']}]"
            for element in block.get("elements", [])
            if "text" in element and isinstance(element["text"], dict)
        )
        texts.extend(element.get("text", "") for element in block.get("elements", []) if block["type"] == "context")
    body = "\n".join(texts) or message.get("text", "")
    return re.sub(r"<!date\^\d+\^[^|]*\|([^>]*)>", r"\1", body)


def ask_and_approve(stack: Stack, user: str, text: str) -> tuple[str, str]:
    """`/jit <text>` as `user`, then Approve by U0APPROVER1; returns the request id and the card's ts."""
    answer = stack.client().command(user, text)
    match = re.search(r"jit-[a-z0-9]{6}", answer.json()["text"])
    if match is None:
        raise RuntimeError(f"the request was refused: {answer.body}")
    request_id = match.group(0)
    card = stack.slack.wait_for(
        lambda: next(
            (m for m in stack.slack.messages(APPROVALS) if request_id in m.get("text", "") and "thread_ts" not in m),
            None,
        )
    )
    stack.client().click("U0APPROVER1", "jit_approve", request_id, APPROVALS, card["ts"])
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what=f"the grant of {request_id}")
    return request_id, str(card["ts"])


def main() -> int:
    started = time.monotonic()
    haproxy = shutil.which("haproxy") is not None
    nginx = NginxServer(shutdown_timeout="5s").start() if nginx_binary() else None
    try:
        run(haproxy, nginx)
    finally:
        if nginx is not None:
            nginx.close()
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s; everything it started is stopped.")
    return 0


def run(haproxy: bool, nginx: NginxServer | None) -> None:
    with Stack(
        policy=lambda network: demo_policy(network, nginx),
        sweep_interval=5.0,
        usergroups={"S0NETOPS": ["U0NETOPS1"]},
        with_haproxy=haproxy,
        extra_env={"JIT_MFA_KEY": Fernet.generate_key().decode()},
        sentinel=True,
        with_pagerduty=True,
    ) as stack:
        assert stack.topology is not None
        print(f"Started: Redis master {stack.redis_url}, a replica and 3 Sentinels ({stack.topology.sentinels}),")
        print(f"         moto {stack.moto.endpoint}, Slack stand-in {stack.slack.api_url},")
        real = [name for name, present in (("HAProxy", haproxy), ("NGINX", nginx is not None)) if present]
        print("         the Procfile's web and worker" + "".join(f", a real {name}" for name in real) + ".")
        main_flow(stack)
        slack_native(stack)
        step_up(stack)
        on_call(stack)
        several_targets(stack)
        failover(stack)  # before the lockdown: what follows runs on the promoted master
        emergencies(stack)
        other_kinds(stack, haproxy, nginx)


def main_flow(stack: Stack) -> None:
    """The security-group grant, every step shown as Slack and the load balancer see it."""
    section("Security group before")
    show_rules(stack)

    section(f"U0DEV1 types: /jit request lb-prod {GRANT_SECONDS}s OPS-123 debugging 502s from eu-west")
    answer = stack.client().command("U0DEV1", f"request lb-prod {GRANT_SECONDS}s OPS-123 debugging 502s from eu-west")
    print(f"  HTTP {answer.status}, ephemeral reply: {answer.json()['text']}")
    request_id = re.search(r"jit-[a-z0-9]{6}", answer.json()["text"]).group(0)  # type: ignore[union-attr]
    card = stack.slack.wait_for(
        lambda: next(
            (m for m in stack.slack.messages(APPROVALS) if request_id in m.get("text", "") and "thread_ts" not in m),
            None,
        )
    )
    section(f"Approval card in #{APPROVALS}")
    print("  " + slack_text(card).replace("\n", "\n  "))

    section("U0APPROVER1 clicks Approve")
    ts = card["ts"]
    print(f"  HTTP {stack.client().click('U0APPROVER1', 'jit_approve', request_id, APPROVALS, ts).status}")
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="the grant")
    section("Security group during the grant")
    show_rules(stack)

    assert stack.network is not None
    section("Meanwhile, someone opens tcp/22 on the group by hand, not through jit-lb")
    stack.moto.client("ec2").authorize_security_group_ingress(
        GroupId=stack.network.security_group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "added by hand during the session"}],
            }
        ],
    )
    show_rules(stack)

    print(f"\n  ... waiting for the grant's end ({GRANT_SECONDS}s) ...")
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), timeout=GRANT_SECONDS + 20, what="the revoke")
    section("Security group after")
    show_rules(stack)
    section("What changed during the session (grant.activity: jit-lb's own rules left out)")
    happened = next(r for r in stack.audit(request_id) if r["event"] == "grant.activity")
    for change in happened.get("changes") or []:
        print(f"  {change['what']}: {change['before'] or '(none)'} -> {change['after'] or '(none)'}")
    if happened.get("changes") == []:
        print("  no changes")

    section("Card, as edited in place")
    print("  " + slack_text(card_edit(stack, ts, "Ended")).replace("\n", "\n  "))
    parent = next(m for m in stack.slack.messages(AUDIT) if request_id in m.get("text", ""))
    section(f"Audit thread in #{AUDIT}")
    for reply in stack.slack.thread(AUDIT, parent["ts"]):
        print("  • " + slack_text(reply).replace("\n", "\n    "))
    section("Direct messages to U0DEV1")
    for message in stack.slack.dms("U0DEV1"):
        print("  • " + slack_text(message).replace("\n", "\n    "))
    section(f"Audit log ({stack.audit_path})")
    for record in stack.audit(request_id):
        print("  " + json.dumps(record))


def slack_native(stack: Stack) -> None:
    """The same request without typing: the form, an error on its field, the App Home, Approve and End now there."""
    client = stack.client()
    section("U0DEV1 types /jit (no text): the request form opens")
    client.command("U0DEV1", "")
    modal = stack.slack.views("U0DEV1", "jit_request")[-1]
    print(indent(render_view(modal)))

    section("U0DEV1 picks lb-prod: the form follows it (its durations, its reason rule)")
    client.choose("U0DEV1", "target", "lb-prod", modal)
    stack.wait_for(lambda: "OPS-123" in str(stack.slack.views("U0DEV1", "jit_request")[-1]), what="the form updated")
    print(indent(render_view(stack.slack.views("U0DEV1", "jit_request")[-1])))

    section("U0DEV1 submits it with a reason that names no ticket")
    form = inputs(target=select("lb-prod"), duration=select("15m"), reason=text_input("debugging 502s"))
    answer = client.submit("U0DEV1", form)
    print(indent(render_view(stack.slack.views("U0DEV1", "jit_request")[-1], answer.json()["errors"])))

    section("...and again with the ticket first: the request is made, its card posted")
    form = inputs(target=select("lb-prod"), duration=select("15m"), reason=text_input("OPS-124 debugging 502s"))
    client.submit("U0DEV1", form)
    dm = stack.slack.wait_for(lambda: [m for m in stack.slack.dms("U0DEV1") if "waiting for approval" in m["text"]])
    request_id = re.search(r"jit-[a-z0-9]{6}", dm[-1]["text"]).group(0)  # type: ignore[union-attr]
    print(f"  DM to U0DEV1: {dm[-1]['text']}")

    section("U0APPROVER1 opens jit-lb's Home tab")
    client.app_home_opened("U0APPROVER1")
    client.app_home_opened("U0DEV1")
    stack.wait_for(lambda: request_id in str(stack.slack.home("U0APPROVER1")), what="the approver's home")
    print(indent(render_view(stack.slack.home("U0APPROVER1") or {})))

    section("U0APPROVER1 clicks Approve there; U0DEV1's Home now shows the grant")
    client.home_click("U0APPROVER1", "jit_approve", request_id)
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="the grant")
    stack.wait_for(lambda: "jit_revoke" in str(stack.slack.home("U0DEV1")), what="U0DEV1's home with the grant")
    print(indent(render_view(stack.slack.home("U0DEV1") or {})))

    section("U0DEV1 clicks End now")
    client.home_click("U0DEV1", "jit_revoke", request_id)
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), what="the revoke")
    ended = next(r for r in stack.audit(request_id) if r["event"] == "grant.revoked")
    print(f"  audit: grant.revoked reason={ended['reason']} actor={ended['actor']} verified={ended['verified']}")


def step_up(stack: Stack) -> None:
    """MFA: enrolment by DM and QR code, then a request and an approval that count only after a code."""
    client = stack.client()
    secrets = {}
    for user in ("U0DEV1", "U0APPROVER1"):
        client.command(user, "mfa enroll")
        dm = stack.slack.wait_for(lambda u=user: [m for m in stack.slack.dms(u) if "otpauth://" in m["text"]])
        uri = dm[-1]["text"][dm[-1]["text"].index("otpauth://") :].split("`")[0]
        secrets[user] = uri.split("secret=")[1].split("&")[0]
        qr = stack.slack.wait_for(lambda u=user: [f for f in stack.slack.files(u) if f.filename == "jit-lb-mfa.png"])[
            -1
        ]
        saved = DEMO_DIR / f"mfa-qr-{user}.png"
        saved.parent.mkdir(exist_ok=True)
        saved.write_bytes(qr.content)
        client.submit(user, inputs(code=text_input(pyotp.TOTP(secrets[user]).now())), callback_id="jit_mfa")
    section("Step-up MFA: U0DEV1 and U0APPROVER1 enrolled (`/jit mfa enroll`, QR by DM, a first code)")
    print(f"  each got a DM with an otpauth:// URI and its QR code; saved as {DEMO_DIR}/mfa-qr-<user>.png")
    for user, secret in secrets.items():
        stack.wait_for(lambda s=secret: not stack.slack.holding(s), what=f"{user}'s enrolment DM deleted")
    print("  once the first code confirmed each, the DM and the QR code were deleted: Slack keeps no copy of a secret")
    time.sleep(2.1)  # past the demo's 2 s window: the next act asks for a code again

    section("U0DEV1 types /jit request lb-mfa 10m OPS-5 rotate certificates: a code is asked first")
    print("  " + client.command("U0DEV1", "request lb-mfa 10m OPS-5 rotate certificates").json()["text"])
    modal = stack.slack.views("U0DEV1", "jit_mfa")[-1]
    print(indent(render_view(modal)))
    later = pyotp.TOTP(secrets["U0DEV1"]).at(time.time() + 30)  # the enrolment spent now's code: codes work once
    client.submit("U0DEV1", inputs(code=text_input(later)), view=modal)
    created = stack.wait_for(lambda: [r for r in stack.audit() if r["event"] == "request.created"][-1:])[-1]
    request_id = created["request_id"]
    print(f"  request.created {request_id} mfa={created.get('mfa')}")
    card = stack.slack.wait_for(
        lambda: next((m for m in stack.slack.messages(APPROVALS) if request_id in m["text"]), None)
    )

    section("U0APPROVER1 clicks Approve: a code again, then the card says so")
    client.click("U0APPROVER1", "jit_approve", request_id, APPROVALS, card["ts"])
    approve = stack.wait_for(lambda: [v for v in stack.slack.views("U0APPROVER1", "jit_mfa") if request_id in str(v)])
    client.submit(
        "U0APPROVER1",
        inputs(code=text_input(pyotp.TOTP(secrets["U0APPROVER1"]).at(time.time() + 30))),
        view=approve[-1],
    )
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="the grant")
    print("  " + slack_text(card_edit(stack, card["ts"], "Granted")).split("\n")[-1])
    client.command("U0DEV1", f"revoke {request_id}")
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), what="the revoke")


def on_call(stack: Stack) -> None:
    """Auto-approval from PagerDuty: the primary on call gets access without a click, the secondary waits."""
    assert stack.pagerduty is not None
    now = datetime.now(UTC).replace(microsecond=0)
    stack.pagerduty.add_user("PDEV0006", "dev6@example.com", "Dev Six")
    stack.pagerduty.add_user("PDEV0007", "dev7@example.com", "Dev Seven")
    shift_end = now + timedelta(hours=2)
    stack.pagerduty.put_on_call("PDEV0006", ONCALL_SCHEDULE, level=1, start=now - timedelta(hours=6), end=shift_end)
    stack.pagerduty.put_on_call("PDEV0007", ONCALL_SCHEDULE, level=2, start=now - timedelta(hours=6), end=shift_end)
    section(f"On call: PagerDuty (stand-in) has U0DEV6 primary and U0DEV7 secondary on {ONCALL_SCHEDULE}")
    client = stack.client()
    print("  U0DEV6 types /jit request lb-oncall 10m paged: 502s on checkout")
    request_id = request_id_in(client.command("U0DEV6", "request lb-oncall 10m paged: 502s on checkout").json()["text"])
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="the on-call grant")
    approved = next(r for r in stack.audit(request_id) if r["event"] == "request.approved")
    print(f"  request.approved actor={approved['actor']} auto_approve={approved['auto_approve']}")
    card = stack.slack.wait_for(lambda: card_of(stack, request_id))
    print(indent(slack_text(card)))
    print("  U0DEV7 (secondary) asks the same:")
    other = request_id_in(client.command("U0DEV7", "request lb-oncall 10m second line").json()["text"])
    card = stack.slack.wait_for(lambda: card_of(stack, other))
    print(indent(slack_text(card)))
    client.command("U0APPROVER1", f"revoke {request_id}")
    client.command("U0DEV7", f"cancel {other}")
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), what="the on-call grant's end")
    print(f"  U0APPROVER1: /jit revoke {request_id} ended it; U0DEV7 cancelled theirs")


def several_targets(stack: Stack) -> None:
    """Two targets in one request: one card listing both, one click granting both, one revoke ending both."""
    text = "request lb-admin,lb-config 10m OPS-8 move the admin path"
    section(f"Two targets in one request: U0DEV1 types /jit {text}")
    client = stack.client()
    answer = str(client.command("U0DEV1", text).json()["text"])
    print(indent(answer))
    group = request_id_in(answer)
    ts = card_ts_of(stack, group)
    print(indent(slack_text(stack.slack.wait_for(lambda: card_of(stack, group)))))
    print("  U0APPROVER1 clicks Approve once: it counts for both targets")
    client.click("U0APPROVER1", "jit_approve", group, APPROVALS, ts)
    stack.wait_for(lambda: stack.events(group).count("grant.applied") == 2, what="both grants")
    print(indent(slack_text(card_edit(stack, ts, "until"))))
    client.command("U0DEV1", f"revoke {group}")
    stack.wait_for(lambda: stack.events(group).count("grant.revoked") == 2, what="both revokes")
    print(f"  U0DEV1: /jit revoke {group} ended both; the audit log, under {group}:")
    for record in stack.audit(group):
        if record["event"] in {"grant.applied", "grant.revoked"}:
            print(f"    {record['event']:<14} target={record['target']:<10} part={record['part']}")


def card_edit(stack: Stack, ts: str, showing: str) -> dict[str, Any]:
    """The card's latest edit once it shows `showing`: workers edit it a moment after the state changes."""
    return stack.slack.wait_for(
        lambda: next((m for m in reversed(stack.slack.updates(APPROVALS, ts)) if showing in slack_text(m)), None)
    )


def request_id_in(text: str) -> str:
    match = re.search(r"jit-[a-z0-9]{6}", text)
    assert match, text
    return match.group(0)


def emergencies(stack: Stack) -> None:
    """Break-glass without a click, its review card, then a lockdown that ends it and refuses new requests."""
    client = stack.client()
    section("U0DEV1 types /jit breakglass lb-prod 10m INC-42 the site is down (no approver awake)")
    print("  " + client.command("U0DEV1", "breakglass lb-prod 10m INC-42 the site is down").json()["text"])
    request_id = [r for r in stack.audit() if r["event"] == "grant.breakglass"][-1]["request_id"]
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="the break-glass grant")
    card = stack.slack.wait_for(
        lambda: next((m for m in stack.slack.messages(APPROVALS) if "Break-glass" in m["text"]), None)
    )
    print("  " + slack_text(card).replace("\n", "\n  "))
    client.click("U0APPROVER1", "jit_review_ok", request_id, APPROVALS, card["ts"])
    stack.wait_for(lambda: "review.acknowledged" in stack.events(request_id), what="the review")
    print("  U0APPROVER1 clicked Acknowledge: review.acknowledged recorded")

    section("U0ADMIN types /jit lockdown on suspected credential leak")
    print("  security group before:")
    show_rules(stack)
    started = time.monotonic()
    print("  " + client.command("U0ADMIN", "lockdown on suspected credential leak").json()["text"])
    stack.wait_for(lambda: "grant.revoked" in stack.events(request_id), what="the lockdown's revoke")
    ended = next(r for r in stack.audit(request_id) if r["event"] == "grant.revoked")
    print(f"  every grant ended in {time.monotonic() - started:.1f}s (reason={ended['reason']}); security group after:")
    show_rules(stack)
    print(
        "  U0DEV1 tries /jit request lb-prod 10m OPS-6 x: "
        + client.command("U0DEV1", "request lb-prod 10m OPS-6 x").json()["text"]
    )
    print("  /jit lockdown status: " + readable(client.command("U0DEV1", "lockdown status").json()["text"]))
    # lb-mfa requires MFA here, so lifting asks the admin for a code (an admin's Slack session alone does not).
    secret = enrolled(stack, "U0ADMIN")
    time.sleep(2.1)  # past the demo's 2 s window: lifting asks for a code again
    print("  U0ADMIN: /jit lockdown off: " + readable(client.command("U0ADMIN", "lockdown off").json()["text"]))
    modal = stack.wait_for(lambda: stack.slack.views("U0ADMIN", "jit_mfa")[-1:], what="the admin's step-up")[-1]
    client.submit("U0ADMIN", inputs(code=text_input(pyotp.TOTP(secret).at(time.time() + 30))), view=modal)
    ended = stack.wait_for(lambda: [r for r in stack.audit() if r["event"] == "lockdown.ended"], what="lockdown.ended")
    print(f"  U0ADMIN entered a one-time code: lockdown.ended recorded (mfa={ended[-1].get('mfa')})")


def enrolled(stack: Stack, user: str) -> str:
    """Enrol `user` as a person does (the DM's otpauth URI, a first code); return the secret."""
    stack.client().command(user, "mfa enroll")
    dm = stack.slack.wait_for(lambda: [m for m in stack.slack.dms(user) if "otpauth://" in m["text"]])
    secret = dm[-1]["text"][dm[-1]["text"].index("otpauth://") :].split("`")[0].split("secret=")[1].split("&")[0]
    stack.client().submit(user, inputs(code=text_input(pyotp.TOTP(secret).now())), callback_id="jit_mfa")
    stack.wait_for(lambda: [r for r in stack.audit() if r["event"] == "mfa.enrolled" and r.get("actor") == user])
    return secret


def card_of(stack: Stack, request_id: str) -> dict[str, Any] | None:
    """The first message in the approvers' channel naming the request (its card), once posted."""
    return next((m for m in stack.slack.messages(APPROVALS) if request_id in m.get("text", "")), None)


def indent(text: str) -> str:
    return "  " + text.replace("\n", "\n  ")


def other_kinds(stack: Stack, haproxy: bool, nginx: NginxServer | None) -> None:
    """The other grant kinds, granted together and ended with `/jit revoke`: what each puts at the load balancer."""
    assert stack.network is not None
    network = stack.network
    elbv2, iam = stack.moto.client("elbv2"), stack.moto.client("iam")

    def listener_rules() -> list[str]:
        rules = [r for r in elbv2.describe_rules(ListenerArn=network.listener_arn)["Rules"] if not r["IsDefault"]]
        return [f"priority {r['Priority']}: " + ", ".join(map(condition_text, r["Conditions"])) for r in rules]

    def role_policies() -> list[str]:
        names = iam.list_role_policies(RoleName=network.role_name)["PolicyNames"]
        return [
            f"{name}: "
            + json.dumps(
                iam.get_role_policy(RoleName=network.role_name, PolicyName=name)["PolicyDocument"]["Statement"][0][
                    "Condition"
                ]
            )
            for name in names
        ]

    def haproxy_view() -> list[str]:
        return [f"GET {stack.haproxy.url if stack.haproxy else ''} from {HAPROXY_SOURCE}: HTTP {http_status(stack)}"]

    views: list[tuple[str, str, str, Any]] = [
        ("lb-admin", "U0DEV1", "ALB listener rules", listener_rules),
        ("lb-config", "U0DEV1", f"inline policies on IAM role {network.role_name}", role_policies),
    ]

    def nginx_view() -> list[str]:
        assert nginx is not None
        lines = Path(nginx.allow_file).read_text(encoding="utf-8").splitlines()
        status = haproxy_status(nginx.port, NGINX_SOURCE)
        return [f"GET {nginx.url} from {NGINX_SOURCE}: HTTP {status}", f"allow file: {lines or '(empty)'}"]

    if haproxy:
        views.append(("edge-haproxy", "U0DEV3", "HAProxy", haproxy_view))
    if nginx is not None:
        views.append(("edge-nginx", "U0DEV4", "NGINX", nginx_view))
    for target, user, what, view in views:
        section(f"{target}: {what}, before / during / after")
        print("  before: " + ("; ".join(view()) or "(none)"))
        request_id, _ = ask_and_approve(stack, user, f"request {target} 10m demo of {target}")
        print("  during: " + ("; ".join(view()) or "(none)"))
        stack.client().command(user, f"revoke {request_id}")
        stack.wait_for(lambda rid=request_id: "grant.revoked" in stack.events(rid), what="the revoke")
        print("  after:  " + ("; ".join(view()) or "(none)"))
        ended = next(r for r in stack.audit(request_id) if r["event"] == "grant.revoked")
        print(f"  audit:  grant.revoked reason={ended['reason']} actor={ended['actor']} verified={ended['verified']}")


def failover(stack: Stack) -> None:
    """The Redis master killed mid-flow: the web and the workers follow Sentinel's promotion by themselves."""
    assert stack.topology is not None
    section("Redis Sentinel failover: the master is killed (SIGKILL) with a grant active")
    waiting, _ = ask_pending(stack, "U0DEV5", "request lb-prod 30m OPS-9 acknowledged before the failover")
    granted, _ = ask_and_approve(stack, "U0DEV1", "request lb-prod 5s OPS-7 granted before the failover")
    end = lease_end_of(stack, granted)
    print(
        f"  {waiting} is pending and {granted} granted until {end:%H:%M:%S}; master on :{stack.topology.master_port()}"
    )
    old = stack.topology.kill_master()
    killed = time.monotonic()
    print(f"  +0.00 s  master :{old} killed")
    while True:
        answer = str(stack.client().command("U0DEV5", "request lb-prod 30m OPS-9 during the failover").json()["text"])
        accepted = re.search(r"jit-[a-z0-9]{6}", answer)
        if accepted:
            break
        print(f"  +{time.monotonic() - killed:.2f} s  /jit request answered: {answer[:70]}…")
        time.sleep(0.5)
    new = stack.topology.master_port()
    print(f"  +{time.monotonic() - killed:.2f} s  Sentinel promoted :{new}; /jit request accepted: {accepted.group(0)}")
    stack.client().click("U0APPROVER1", "jit_approve", waiting, APPROVALS, card_ts_of(stack, waiting))
    stack.wait_for(lambda: "grant.applied" in stack.events(waiting), what=f"the grant of {waiting}")
    print(f"  {waiting}, acknowledged before the kill, is still there: approved and granted after the failover")
    stack.wait_for(lambda: "grant.revoked" in stack.events(granted), timeout=30, what=f"the end of {granted}")
    print(f"  {granted} ended at its end as planned (no rule of it left): {not rules_of_request(stack, granted)}")


def ask_pending(stack: Stack, user: str, text: str) -> tuple[str, str]:
    answer = stack.client().command(user, text)
    match = re.search(r"jit-[a-z0-9]{6}", answer.json()["text"])
    if match is None:
        raise RuntimeError(f"the request was refused: {answer.body}")
    return match.group(0), card_ts_of(stack, match.group(0))


def card_ts_of(stack: Stack, request_id: str) -> str:
    card = stack.slack.wait_for(
        lambda: next(
            (m for m in stack.slack.messages(APPROVALS) if request_id in m.get("text", "") and "thread_ts" not in m),
            None,
        )
    )
    return str(card["ts"])


def rules_of_request(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    return [r for r in stack.sg_rules() if any(t["Key"] == f"jit-lb:lease:{request_id}" for t in r.get("Tags", []))]


def lease_end_of(stack: Stack, request_id: str) -> datetime:
    (rule, *_) = rules_of_request(stack, request_id)
    tags = {t["Key"]: t["Value"] for t in rule.get("Tags", [])}
    return datetime.fromisoformat(tags[f"jit-lb:lease:{request_id}"].replace("Z", "+00:00"))


def condition_text(condition: dict[str, Any]) -> str:
    """`source-ip=['203.0.113.7/32']` from a listener rule condition, whichever *Config key holds the values."""
    values = next((v["Values"] for k, v in condition.items() if k.endswith("Config")), condition.get("Values"))
    return f"{condition['Field']}={values}"


def http_status(stack: Stack) -> int:
    assert stack.haproxy is not None
    return haproxy_status(stack.haproxy.port, HAPROXY_SOURCE)


if __name__ == "__main__":
    sys.exit(main())
