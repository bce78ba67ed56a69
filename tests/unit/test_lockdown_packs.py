"""The lockdown's clearing jobs: which grant specs each clears, and in what order they are queued."""

from __future__ import annotations

from jit_lb.access.policy import GrantSpec, HaproxyAclGrant, ListenerRuleGrant, SecurityGroupGrant
from workers.lockdown import clearing_packs


def group(number: int) -> SecurityGroupGrant:
    return SecurityGroupGrant(
        kind="aws_security_group", region="us-east-1", security_group_id=f"sg-{number:08x}", ports=[443]
    )


def listener(number: int) -> ListenerRuleGrant:
    arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012"
    return ListenerRuleGrant(
        kind="aws_alb_listener_rule",
        region="us-east-1",
        listener_arn=f"{arn}:listener/app/lb-{number}/0123456789abcdef/0123456789abcdef",
        target_group_arn=f"{arn}:targetgroup/tg-{number}/0123456789abcdef",
    )


HAPROXY = HaproxyAclGrant(kind="haproxy_acl", runtime_api="unix:/run/haproxy.sock", acl="/etc/haproxy/jit.acl")


def test_one_shot_kinds_first_then_alb_jobs_and_security_group_packs_take_turns() -> None:
    """HAProxy first; each ALB spec a job of its own; security groups four to a job; the ALB jobs and the groups'
    jobs alternate, so that three workers never run three ALB jobs while the groups wait."""
    groups = [group(n) for n in range(12)]
    listeners = [listener(n) for n in range(4)]
    specs: list[GrantSpec] = [*groups, *listeners, HAPROXY]
    expected = [
        [HAPROXY],
        [listeners[0]],
        groups[0:4],
        [listeners[1]],
        groups[4:8],
        [listeners[2]],
        groups[8:12],
        [listeners[3]],
    ]
    assert expected == clearing_packs(specs)


def test_every_spec_is_cleared_once() -> None:
    """However the specs are packed, each is in exactly one job."""
    specs: list[GrantSpec] = [group(n) for n in range(7)] + [listener(0)]
    packs = clearing_packs(specs)
    assert sorted(map(repr, specs)) == sorted(repr(spec) for pack in packs for spec in pack)
