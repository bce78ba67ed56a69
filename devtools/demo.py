"""`make demo`: the main flow on this machine alone, with a private Redis, moto and a Slack stand-in."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

from devtools.moto_server import Network
from devtools.stack import Stack

APPROVALS = "C0APPROVALS"
AUDIT = "C0AUDIT"
GRANT_SECONDS = 8


def demo_policy(network: Network) -> dict[str, Any]:
    return {
        "approver_channel": APPROVALS,
        "audit_channel": AUDIT,
        "pending_ttl": "15m",
        "principals": {"U0DEV1": {"source_cidr": "203.0.113.7/32"}},
        "targets": {
            "lb-prod": {
                "description": "Production public ALB (demo security group)",
                "default_duration": "30m",
                "min_duration": "5s",
                "max_duration": "1h",
                "approvers": ["U0APPROVER1", "S0NETOPS"],
                "grant": {
                    "kind": "aws_security_group",
                    "region": "us-east-1",
                    "security_group_id": network.security_group_id,
                    "ports": [443],
                },
            }
        },
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


def main() -> int:
    started = time.monotonic()
    with Stack(policy=demo_policy, sweep_interval=5.0, usergroups={"S0NETOPS": ["U0NETOPS1"]}) as stack:
        print(f"Started: redis {stack.redis.url}, moto {stack.moto.endpoint}, Slack stand-in {stack.slack.api_url},")
        print(f"         web on :{stack.web_ports[0]} and one worker, as the Procfile says. Logs in {stack.workdir}")
        section("Security group before")
        show_rules(stack)

        section(f"U0DEV1 types: /jit request lb-prod {GRANT_SECONDS}s debugging 502s from eu-west")
        answer = stack.client().command("U0DEV1", f"request lb-prod {GRANT_SECONDS}s debugging 502s from eu-west")
        print(f"  HTTP {answer.status}, ephemeral reply: {answer.json()['text']}")
        request_id = re.search(r"jit-[a-z0-9]{6}", answer.json()["text"]).group(0)  # type: ignore[union-attr]
        card = stack.slack.wait_for(
            lambda: next(
                (
                    m
                    for m in stack.slack.messages(APPROVALS)
                    if request_id in m.get("text", "") and "thread_ts" not in m
                ),
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

        print(f"\n  ... waiting for the grant's end ({GRANT_SECONDS}s) ...")
        stack.wait_for(
            lambda: "grant.revoked" in stack.events(request_id), timeout=GRANT_SECONDS + 20, what="the revoke"
        )
        section("Security group after")
        show_rules(stack)

        section("Card, as edited in place")
        print("  " + slack_text(stack.slack.updates(APPROVALS, ts)[-1]).replace("\n", "\n  "))
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
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s; everything it started is stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
