"""The policy the end-to-end tests and the demo run with: short durations so that grants end within seconds."""

from __future__ import annotations

from typing import Any

from devtools.moto_server import Network

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
    sg = {
        "kind": "aws_security_group",
        "region": "us-east-1",
        "security_group_id": network.security_group_id,
        "ports": [443, 8443],
    }
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
                "grant": {
                    "kind": "aws_alb_listener_rule",
                    "region": "us-east-1",
                    "listener_arn": network.listener_arn,
                    "target_group_arn": network.target_group_arn,
                    "path_patterns": ["/admin/*"],
                    "priority_range": [100, 199],
                },
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
