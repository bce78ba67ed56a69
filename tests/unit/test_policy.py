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
