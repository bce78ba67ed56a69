"""What tests share: the stack's policy (short durations, grants end within seconds), a valid policy to vary, a
pending request at a fixed time, and the steps of driving the stack as Slack and a person would."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devtools.moto_server import Network
from devtools.stack import Stack
from jit_lb.access.requests import AccessRequest

APPROVALS = "C0APPROVALS"
DEVS = "C0DEVS"
DEV1_CIDR = "203.0.113.7/32"
DEV2_CIDR = "198.51.100.0/28"
LOOPBACK_SOURCE = "127.0.0.7/32"  # a distinct loopback source, for real HTTP through a real HAProxy


def stack_policy(network: Network) -> dict[str, Any]:
    """Every grant kind the stack can serve; the HAProxy target only when the stack runs HAProxy."""
    policy = _policy(network)
    if network.haproxy_acl:
        policy["targets"]["edge-haproxy"] = {
            "description": "The edge HAProxy",
            "default_duration": "30m",
            "min_duration": "1s",
            "max_duration": "1h",
            "approvers": ["U0APPROVER1"],
            "requesters": ["U0DEV3"],
            "grant": {"kind": "haproxy_acl", "runtime_api": network.haproxy_runtime_api, "acl": network.haproxy_acl},
        }
    return policy


def _policy(network: Network) -> dict[str, Any]:
    sg = network.security_group_grant([443, 8443])
    return {
        "approver_channel": APPROVALS,
        "pending_ttl": "15m",
        "principals": {
            "U0DEV1": {"source_cidr": DEV1_CIDR, "aws_role_name": "dev1-admin"},
            "U0DEV2": {"source_cidr": DEV2_CIDR},
            "U0APPROVER1": {"source_cidr": "192.0.2.10/32"},
            "U0DEV3": {"source_cidr": LOOPBACK_SOURCE},
        },
        "targets": {
            "lb-prod": {
                "description": "Production public ALB",
                "default_duration": "30m",
                "min_duration": "1s",
                "max_duration": "1h",
                "approvers": ["U0APPROVER1", "U0APPROVER2", "S0NETOPS"],
                "allow_requester_ip": True,
                "grant": sg,
            },
            "lb-two": {
                "default_duration": "30m",
                "min_duration": "1s",
                "max_duration": "1h",
                "approvers": ["U0APPROVER1", "U0APPROVER2"],
                "approvals_required": 2,
                "requesters": ["U0DEV1"],
                "grant": sg,
            },
            "lb-alb": {
                "description": "Admin paths on the ALB, by listener rule",
                "default_duration": "30m",
                "min_duration": "1s",
                "max_duration": "1h",
                "approvers": ["U0APPROVER1", "U0APPROVER2"],
                "grant": network.listener_rule_grant(priority_range=[100, 199]),
            },
            "lb-iam": {
                "description": "Change the ALB through the AWS API",
                "default_duration": "30m",
                "min_duration": "1s",
                "max_duration": "1h",
                "approvers": ["U0APPROVER1", "U0APPROVER2"],
                "requesters": ["U0DEV1"],
                "grant": {
                    "kind": "aws_iam_policy",
                    "load_balancer_arn": network.load_balancer_arn,
                    "require_mfa": True,
                },
            },
            "lb-broken": {
                "default_duration": "30m",
                "min_duration": "1s",
                "max_duration": "1h",
                "approvers": ["U0APPROVER1"],
                "grant": {**sg, "security_group_id": "sg-0123456789abcdef0"},
            },
        },
    }


# --- the core, pure ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def valid() -> dict[str, Any]:
    return {
        "approver_channel": "C0APPROVALS",
        "principals": {"U0DEV1": {"source_cidr": "203.0.113.7/32", "aws_role_name": "dev1-admin"}},
        "targets": {
            "lb-prod": {
                "default_duration": "30m",
                "max_duration": "1h",
                "approvers": ["U0APPROVER1", "S0NETOPS"],
                "grant": {
                    "kind": "aws_security_group",
                    "region": "us-east-1",
                    "security_group_id": "sg-0abc",
                    "ports": [443],
                },
            }
        },
    }


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def pending(request_id: str = "jit-abcdef", required: int = 1) -> AccessRequest:
    return AccessRequest(
        id=request_id,
        target="lb-prod",
        requester="U0DEV1",
        reason="why",
        duration_seconds=600,
        cidr="203.0.113.7/32",
        created_at=NOW,
        pending_until=NOW + timedelta(minutes=15),
        approvals_required=required,
    )


# --- the stack, driven as Slack and a person drive it ----------------------------------------------


def request_id_of(text: str) -> str:
    match = re.search(r"jit-[a-z0-9]{6}", text)
    assert match, f"no request id in {text!r}"
    return match.group(0)


def ask(stack: Stack, user: str, text: str) -> tuple[str, dict[str, Any]]:
    """Run `/jit <text>` and wait for its card; return the request id and the card message."""
    answer = stack.client().command(user, text, channel=DEVS)
    assert answer.status == 200, answer.body
    request_id = request_id_of(answer.json()["text"])
    return request_id, card_of(stack, request_id)


def card_of(stack: Stack, request_id: str) -> dict[str, Any]:
    """The approval card as first posted (thread replies mention the id too, so they are left out)."""
    return stack.wait_for(
        lambda: next(
            (m for m in stack.slack.messages(APPROVALS) if request_id in m.get("text", "") and "thread_ts" not in m),
            None,
        ),
        what=f"the card of {request_id}",
    )


def dm_text(stack: Stack, user: str) -> str:
    return " ".join(str(m.get("text", "")) for m in stack.slack.dms(user))


def web_decisions(stack: Stack) -> dict[str, int]:
    """How many requests the web has stored and judged; it records each before it answers Slack.

    Cards are posted by workers from what the web stores, so "nothing stored" means "nothing posted".
    """
    events = [record["event"] for record in stack.audit()]
    return {name: events.count(name) for name in ("request.created", "request.approved", "request.denied")}


def card_ts(stack: Stack, request_id: str) -> str:
    return str(card_of(stack, request_id)["ts"])


def click(stack: Stack, user: str, action: str, request_id: str) -> int:
    return stack.client().click(user, action, request_id, APPROVALS, card_ts(stack, request_id)).status


def rules_of(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    return [r for r in stack.sg_rules() if any(t["Key"] == f"jit-lb:lease:{request_id}" for t in r.get("Tags", []))]


def granted(stack: Stack, user: str, text: str, approver: str = "U0APPROVER1") -> str:
    """Run a request through approval to `grant.applied`; return its id."""
    request_id, _ = ask(stack, user, text)
    assert click(stack, approver, "jit_approve", request_id) == 200
    stack.wait_for(lambda: "grant.applied" in stack.events(request_id), what="grant.applied")
    return request_id


def lease_tags(stack: Stack, request_id: str) -> set[str]:
    """The values of the request's lease tags on its security-group rules (their end times, as written)."""
    return {t["Value"] for r in rules_of(stack, request_id) for t in r["Tags"] if t["Key"].endswith(request_id)}


def click_on(stack: Stack, user: str, request_id: str, ts: str) -> int:
    return stack.client().click(user, "jit_approve", request_id, APPROVALS, ts).status


def listener_rules_of(stack: Stack, request_id: str) -> list[dict[str, Any]]:
    assert stack.network is not None
    elbv2 = stack.moto.client("elbv2")
    rules = [r for r in elbv2.describe_rules(ListenerArn=stack.network.listener_arn)["Rules"] if not r["IsDefault"]]
    if not rules:
        return []
    tags = elbv2.describe_tags(ResourceArns=[r["RuleArn"] for r in rules])["TagDescriptions"]
    ours = {t["ResourceArn"] for t in tags if any(tag["Key"] == f"jit-lb:lease:{request_id}" for tag in t["Tags"])}
    return [rule for rule in rules if rule["RuleArn"] in ours]


def lease_end(stack: Stack, request_id: str) -> datetime:
    """The one end time the request's rules carry."""
    (value,) = lease_tags(stack, request_id)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class GoneWatch:
    """When each request's security-group rules were last seen at moto and first seen gone (epoch seconds).

    One EC2 client polled every POLL seconds: the rules went between `last_present` and `first_gone`. A check
    that fails only on what was seen asks `last_present < end` (seen after its end: certainly late) and
    `first_gone >= end - lead` (seen gone before it: certainly early); the other two ends of the interval add
    the watcher's own slowness to the figure (a poll takes longer on a loaded machine). Not as fast as
    moto answers: moto and the Slack stand-in serve from the test's own process, and a watcher that never
    sleeps holds the GIL they need, slowing the very AWS calls whose timing it watches.
    """

    POLL = 0.02

    def __init__(self, stack: Stack, request_ids: list[str]) -> None:
        assert stack.network is not None
        self.group_id = stack.network.security_group_id
        self.ec2 = stack.moto.client("ec2")
        self.last_present: dict[str, float] = {}
        self.first_gone: dict[str, float] = {}
        self.request_ids = request_ids

    def leased(self) -> set[str]:
        rules = self.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [self.group_id]}])
        return {
            tag["Key"].removeprefix("jit-lb:lease:")
            for rule in rules["SecurityGroupRules"]
            for tag in rule.get("Tags", [])
            if tag["Key"].startswith("jit-lb:lease:")
        }

    def until_gone(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.first_gone) < len(self.request_ids):
            assert time.monotonic() < deadline, f"still present: {set(self.request_ids) - set(self.first_gone)}"
            before = time.time()
            leased = self.leased()
            for request_id in self.request_ids:
                if request_id in leased:
                    self.last_present[request_id] = before  # the answer reflects moto at or after `before`
                elif request_id not in self.first_gone:
                    self.first_gone[request_id] = time.time()
            time.sleep(self.POLL)
