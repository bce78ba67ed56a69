"""The `nginx_allowlist` grant kind in the policy file: what it needs, what it refuses, how check-policy shows it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from jit_lb.access.errors import PolicyError
from jit_lb.access.policy import NginxAllowlistGrant, parse_policy
from jit_lb.policytools.explain import grant_summary
from tests.helpers import ROOT, valid

GRANT = {"kind": "nginx_allowlist", "allow_file": "/etc/nginx/jit-lb/allow.conf", "pid_file": "/run/nginx.pid"}


def nginx_policy(**grant: Any) -> dict[str, Any]:
    data = valid()
    data["targets"]["lb-prod"]["grant"] = {**GRANT, **grant}
    return data


def test_an_nginx_target_loads_with_its_defaults() -> None:
    """allow_file and pid_file are enough: the binary defaults to `nginx` on the PATH, its own configuration."""
    grant = parse_policy(nginx_policy()).targets["lb-prod"].grant

    assert isinstance(grant, NginxAllowlistGrant)
    assert (grant.nginx, grant.config) == ("nginx", None)
    assert parse_policy(nginx_policy()).targets["lb-prod"].is_network


@pytest.mark.parametrize(
    ("grant", "expected"),
    [
        ({"colour": "red"}, "targets.lb-prod.grant.colour: unknown field"),
        (
            {"allow_file": "jit/allow.conf"},
            "targets.lb-prod.grant.allow_file: `jit/allow.conf` is not an absolute path",
        ),
        ({"pid_file": "run/nginx.pid"}, "targets.lb-prod.grant.pid_file: `run/nginx.pid` is not an absolute path"),
        ({"config": "nginx.conf"}, "targets.lb-prod.grant.config: `nginx.conf` is not an absolute path"),
        ({"allow_file": "/etc/nginx/a\nb.conf"}, "without control characters"),
        ({"allow_file": "/"}, "names a directory"),
        ({"nginx": "nginx; rm -rf /"}, "targets.lb-prod.grant.nginx"),
        ({"config": "/etc/nginx/jit-lb/allow.conf"}, "allow_file: must be a file of its own"),
        ({"pid_file": None}, "targets.lb-prod.grant.pid_file"),
    ],
)
def test_an_invalid_nginx_grant_names_the_field(grant: dict[str, Any], expected: str) -> None:
    """Unknown fields, relative or odd paths and a binary that is not a name or a path are refused by name."""
    with pytest.raises(PolicyError) as caught:
        parse_policy(nginx_policy(**grant), "policy.yml")
    assert expected in str(caught.value)


def test_idle_timeout_is_refused_on_an_nginx_target() -> None:
    """NGINX counts no use per source, so idle expiry cannot be judged there."""
    data = nginx_policy()
    data["targets"]["lb-prod"]["idle_timeout"] = "10m"

    with pytest.raises(PolicyError, match=r"idle_timeout: .*nginx_allowlist .*NGINX keeps no count of use"):
        parse_policy(data, "policy.yml")


def test_check_policy_shows_the_nginx_target(tmp_path: Path) -> None:
    """`python -m bot check-policy` names the kind and the files it writes and signals."""
    good = tmp_path / "policy.yml"
    good.write_text(yaml.safe_dump(nginx_policy()))

    shown = subprocess.run(
        [sys.executable, "-m", "bot", "check-policy", str(good)], capture_output=True, text=True, cwd=ROOT, check=False
    )

    assert shown.returncode == 0
    assert "lb-prod: nginx_allowlist (allow_file /etc/nginx/jit-lb/allow.conf, pid_file /run/nginx.pid)" in shown.stdout


def test_policy_explain_says_what_an_nginx_grant_writes() -> None:
    """`policy explain` names the allow file and the master a grant reloads."""
    target = parse_policy(nginx_policy()).targets["lb-prod"]

    assert grant_summary(target) == (
        "nginx_allowlist: `allow <the CIDR>;` in /etc/nginx/jit-lb/allow.conf, NGINX reloaded by SIGHUP to the master "
        "in /run/nginx.pid"
    )
