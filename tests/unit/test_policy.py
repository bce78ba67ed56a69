"""The policy file: a valid one loads, each kind of invalid one is refused naming the field."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from jit_lb.access.errors import PolicyError
from jit_lb.access.policy import load_policy, parse_policy
from tests.helpers import ROOT, valid


def test_valid_policy_loads_with_defaults() -> None:
    """A minimal policy loads, with min_duration 1m, one approval, tcp and a 15m pending TTL."""
    policy = parse_policy(valid())
    target = policy.targets["lb-prod"]
    assert (target.min_duration, target.approvals_required, policy.pending_ttl) == (
        timedelta(minutes=1),
        1,
        timedelta(minutes=15),
    )
    assert target.grant.kind == "aws_security_group" and target.grant.protocol == "tcp"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p["targets"]["lb-prod"].update(colour="red"), "targets.lb-prod.colour: unknown field"),
        (lambda p: p["targets"]["lb-prod"]["grant"].update(kind="f5_bigip"), "unknown grant kind `f5_bigip`"),
        (lambda p: p["principals"]["U0DEV1"].update(source_cidr="0.0.0.0/0"), "principals.U0DEV1.source_cidr"),
        (lambda p: p["principals"]["U0DEV1"].update(source_cidr="::/0"), "open to the whole internet"),
        (lambda p: p["targets"]["lb-prod"].update(max_duration="1x"), "targets.lb-prod.max_duration: `1x`"),
        (
            lambda p: p["targets"]["lb-prod"].update(approvers=["U0A"], approvals_required=2),
            "approvals_required is 2 but only 1 approver",
        ),
        (lambda p: p["targets"]["lb-prod"].update(default_duration="2h"), "default_duration (2h)"),
        (lambda p: p["targets"]["lb-prod"]["grant"].update(ports=[]), "targets.lb-prod.grant.ports"),
        (lambda p: p["targets"]["lb-prod"].update(requesters=["U0GHOST"]), "`U0GHOST` is not listed under principals"),
        (lambda p: p.pop("approver_channel"), "approver_channel: Field required"),
        (lambda p: p["principals"]["U0DEV1"].update(source_cidr="203.0.113.7/24"), "has host bits set"),
        (lambda p: p["targets"]["lb-prod"].update(approvers=["role:sre"]), "`role:sre` is not defined under roles"),
        (lambda p: p.update(admins=["role:ops"]), "admins: `role:ops` is not defined"),
        (lambda p: p.update(roles={"Bad Name": ["U0A"]}), "is not a role name"),
        (lambda p: p.update(roles={"sre": ["everyone"]}), "sre: `everyone` is neither"),
        (lambda p: p["targets"]["lb-prod"].update(durations=["15m", "2h"]), "durations: 2h is outside"),
        (lambda p: p["targets"]["lb-prod"].update(reason_pattern="(unclosed"), "is not a regular expression"),
        (lambda p: p["targets"]["lb-prod"].update(deny_reason="sometimes"), "targets.lb-prod.deny_reason"),
        (
            lambda p: p.update(roles={"sre": ["U0GHOST"]}) or p["targets"]["lb-prod"].update(requesters=["role:sre"]),
            "`U0GHOST` is not listed under principals",
        ),
        (
            lambda p: (
                p.update(roles={"two": ["U0A"]})
                or p["targets"]["lb-prod"].update(approvers=["role:two"], approvals_required=2)
            ),
            "approvals_required is 2 but only 1 approver",
        ),
    ],
)
def test_invalid_policy_names_the_field(change: Any, expected: str) -> None:
    """Each invalid policy is refused with a message that names the field at fault."""
    data = valid()
    change(data)
    with pytest.raises(PolicyError) as caught:
        parse_policy(data, "policy.yml")
    assert expected in str(caught.value)
    assert str(caught.value).startswith("policy.yml: ")


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    """A missing file and a file that is not YAML are refused with the path in the message."""
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "absent.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("targets: [unclosed\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)


def test_check_policy_command(tmp_path: Path) -> None:
    """`python -m bot check-policy` prints the targets of a valid file and exits 1 naming the field of a bad one."""
    good = tmp_path / "good.yml"
    good.write_text(yaml.safe_dump(valid()))
    ok = subprocess.run(
        [sys.executable, "-m", "bot", "check-policy", str(good)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert ok.returncode == 0 and "lb-prod: aws_security_group" in ok.stdout
    data = valid()
    data["targets"]["lb-prod"]["grant"]["kind"] = "nope"
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(data))
    refused = subprocess.run(
        [sys.executable, "-m", "bot", "check-policy", str(bad)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert refused.returncode == 1 and "unknown grant kind `nope`" in refused.stderr


def test_example_policy_in_repository_is_valid() -> None:
    """The example policy shipped in the repository loads."""
    policy = load_policy(ROOT / "policy.example.yml")
    assert policy.targets


def test_roles_expand_to_users_and_usergroups_everywhere() -> None:
    """`role:<name>` stands for its users and usergroups in requesters, approvers and admins."""
    data = valid()
    data["principals"]["U0DEV2"] = {"source_cidr": "198.51.100.0/28"}
    data["roles"] = {"sre": ["U0DEV1", "S0SRE"], "netops": ["U0APPROVER9", "S0NETOPS"]}
    data["admins"] = ["role:netops"]
    data["targets"]["lb-prod"].update(requesters=["role:sre"], approvers=["role:netops"])
    policy = parse_policy(data)
    target = policy.targets["lb-prod"]
    members = {"S0SRE": ["U0DEV2"], "S0NETOPS": ["U0NETOPS1"]}.get

    assert {"U0APPROVER9", "U0NETOPS1"} == policy.people(target.approvers, lambda g: members(g) or [])
    assert policy.may_request("U0DEV1", target)  # named in the role: no usergroup read
    assert not policy.may_request("U0DEV2", target)  # only through S0SRE, which this call cannot read
    assert policy.may_request("U0DEV2", target, lambda g: members(g) or [])
    assert policy.is_admin("U0NETOPS1", lambda g: members(g) or [])
    assert not policy.is_admin("U0DEV1", lambda g: members(g) or [])


def test_default_duration_may_be_left_out() -> None:
    """Without `default_duration`, a target defaults to the smaller of 30m and its max_duration."""
    data = valid()
    data["targets"]["lb-prod"].pop("default_duration")
    assert timedelta(minutes=30) == parse_policy(data).targets["lb-prod"].default_duration
    data["targets"]["lb-prod"].update(max_duration="10m")
    assert timedelta(minutes=10) == parse_policy(data).targets["lb-prod"].default_duration


def test_reason_pattern_and_duration_choices() -> None:
    """A target's reason rule is searched in the reason; its modal choices are its durations, or steps within limits."""
    data = valid()
    data["targets"]["lb-prod"].update(reason_pattern="^[A-Z]+-[0-9]+ ", durations=["30m", "15m"])
    target = parse_policy(data).targets["lb-prod"]
    assert target.matches_reason("OPS-123 debugging")
    assert not target.matches_reason("debugging OPS-123")
    assert [timedelta(minutes=15), timedelta(minutes=30)] == target.duration_choices()
    data["targets"]["lb-prod"].pop("durations")
    steps = parse_policy(data).targets["lb-prod"].duration_choices()
    assert [int(step.total_seconds() // 60) for step in steps] == [5, 15, 30, 60]


@pytest.mark.parametrize(
    ("grant", "kind"),
    [
        (
            {"kind": "aws_security_group", "region": "us-east-1", "security_group_id": "sg-0abc", "ports": [443]},
            "aws_security_group",
        ),
        (
            {"kind": "haproxy_acl", "runtime_api": "unix:/run/haproxy.sock", "acl": "/etc/haproxy/jit.acl"},
            "haproxy_acl without one",
        ),
        (
            {
                "kind": "aws_iam_policy",
                "load_balancer_arn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/p/50dc6c49",
            },
            "aws_iam_policy",
        ),
    ],
)
def test_idle_timeout_is_refused_on_a_kind_that_cannot_observe_use(grant: dict[str, Any], kind: str) -> None:
    """A security group, an IAM policy and an HAProxy ACL without a stick table count no use per source: a target of
    theirs with `idle_timeout` stops the policy at load, naming the field and the kind."""
    data = valid()
    data["targets"]["lb-prod"]["grant"] = grant
    data["targets"]["lb-prod"]["idle_timeout"] = "10m"

    with pytest.raises(PolicyError, match=rf"idle_timeout: use can only be observed .*this target grants {kind}"):
        parse_policy(data, "policy.yml")
