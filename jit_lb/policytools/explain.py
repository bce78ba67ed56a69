"""`policy explain`: all the policy says of one target, in words, each person with the entry they come from."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jit_lb.access.durations import format_duration
from jit_lb.access.errors import PolicyToolError
from jit_lb.access.policy import Policy, Target
from jit_lb.policytools.judge import Directory, People, judge_break_glass, judge_request, people_of


def explain(
    policy: Policy, name: str, now: datetime, directory: Directory = None, user: str | None = None
) -> list[str]:
    """The lines `python -m bot policy explain` prints for target `name` at `now` (and for `user`, when given)."""
    target = policy.target_for(name)
    if target is None:
        raise PolicyToolError(f"no target `{name}` in the policy; its targets: {', '.join(sorted(policy.targets))}")
    lines = [f"{name}: {target.description}" if target.description else name]
    lines.append(f"  grant: {grant_summary(target)}")
    lines.append(f"  approval cards go to: {policy.channel_for(target)}")
    lines += ["", *_requesters(policy, name, target, directory)]
    lines += ["", *_approvers(policy, name, target, directory)]
    lines += ["", *_rules(policy, name, target, now)]
    if user is not None:
        lines += ["", *_for_user(policy, name, user, now, directory)]
    return lines


def grant_summary(target: Target) -> str:
    """What a grant of `target` creates, in one line."""
    spec = target.grant
    if spec.kind == "aws_security_group":
        ports = ", ".join(str(port) for port in spec.ports)
        return f"aws_security_group {spec.security_group_id} in {spec.region}: {spec.protocol} {ports} from the CIDR"
    if spec.kind == "aws_alb_listener_rule":
        return f"aws_alb_listener_rule on {spec.listener_arn} forwarding to {spec.target_group_arn}"
    if spec.kind == "aws_iam_policy":
        return f"aws_iam_policy on the role: {', '.join(spec.actions)} on {spec.load_balancer_arn}"
    if spec.kind == "nginx_allowlist":
        return (
            f"nginx_allowlist: `allow <the CIDR>;` in {spec.allow_file}, NGINX reloaded by SIGHUP to the master "
            f"in {spec.pid_file}"
        )
    return f"haproxy_acl {spec.acl} over {spec.runtime_api}"


def _people_lines(people: People, empty: str) -> list[str]:
    lines = [f"    {user}  from {'; '.join(how)}" for user, how in sorted(people.users.items())]
    for group, how in sorted(people.unknown_groups.items()):
        lines.append(f"    usergroup {group} (members not known here)  from {'; '.join(how)}")
    return lines or [f"    {empty}"]


def _requesters(policy: Policy, name: str, target: Target, directory: Directory) -> list[str]:
    needed = "source_cidr" if target.is_network else "aws_role_name"
    if target.requesters is None:
        fits = [who for who, principal in sorted(policy.principals.items()) if _fits(principal, needed)]
        lines = [f"who may request it (no requesters list: every principal with a {needed}):"]
        lines += [f"    {who}  from principals.{who}" for who in fits] or ["    nobody"]
    else:
        lines = [f"who may request it (targets.{name}.requesters; each must be under principals with a {needed}):"]
        people = people_of(policy, target.requesters, f"targets.{name}.requesters", directory)
        lines += _people_lines(people, "nobody")
        missing = sorted(
            who for who in people.users if not _fits(policy.principals.get(who), needed) and who.startswith(("U", "W"))
        )
        if missing:
            lines.append(f"    (listed but cannot request: no {needed} under principals: {', '.join(missing)})")
    return lines


def _approvers(policy: Policy, name: str, target: Target, directory: Directory) -> list[str]:
    people = people_of(policy, target.approvers, f"targets.{name}.approvers", directory)
    lines = [f"who may approve it ({target.approvals_required} distinct approval(s) required; never the requester):"]
    return lines + _people_lines(people, "nobody")


def _rules(policy: Policy, name: str, target: Target, now: datetime) -> list[str]:
    limits = (
        f"  durations: {format_duration(target.min_duration)} .. {format_duration(target.max_duration)}, "
        f"default {format_duration(target.default_duration)}; the form offers "
        + ", ".join(format_duration(choice) for choice in target.duration_choices())
    )
    lines = [limits, f"  approvals_required: {target.approvals_required}"]
    lines.append(f"  MFA: {'a one-time code from the requester and each approver' if target.require_mfa else 'no'}")
    lines.append(f"  auto-approval: {_auto(target)}")
    if target.reason_pattern is not None:
        hint = f" ({target.reason_hint})" if target.reason_hint else ""
        lines.append(f"  reason must match: {target.reason_pattern}{hint}")
    lines.append(f"  deny reason: {target.deny_reason}")
    ip = "not allowed"
    if target.allow_requester_ip:
        ip = "allowed, private addresses too" if target.allow_private_ip else "allowed, global addresses only"
    lines.append(f"  --ip: {ip}")
    if target.idle_timeout is not None:
        lines.append(f"  ends unused after: {format_duration(target.idle_timeout)}")
    lines.append(f"  pending requests expire after: {format_duration(policy.pending_ttl)}")
    lines.append(
        f"  limits: {policy.limits.pending_per_user} pending request(s) a person, "
        f"{policy.limits.commands_per_minute} command(s) a minute"
    )
    lines += _freezes(policy, name, now)
    if policy.break_glass_covers(name):
        assert policy.break_glass is not None  # break_glass_covers says it is there
        rules = policy.break_glass
        lines.append(
            f"  break-glass: {', '.join(rules.users)} (break_glass.users), "
            f"up to {format_duration(rules.max_duration)}, reviewed within {format_duration(rules.review_within)}"
        )
    else:
        lines.append("  break-glass: not for this target")
    return lines


def _freezes(policy: Policy, name: str, now: datetime) -> list[str]:
    mine = [(i, freeze) for i, freeze in enumerate(policy.freezes) if freeze.targets is None or name in freeze.targets]
    in_force = [f"freezes[{i}] {_window(f)}: {f.reason}" for i, f in mine if f.covers(name, now)]
    later = [f"freezes[{i}] {_window(f)}: {f.reason}" for i, f in mine if f.from_ > now]
    lines = [f"  freezes in force now ({_instant(now)}): {'; '.join(in_force) or 'none'}"]
    if later:
        lines.append(f"  freezes to come: {'; '.join(later)}")
    return lines


def _for_user(policy: Policy, name: str, user: str, now: datetime, directory: Directory) -> list[str]:
    verdict = judge_request(policy, user, name, now, directory)
    if verdict.outcome == "refused":
        lines = [f"{user} may not request {name} now: {verdict.why}"]
    else:
        lines = [f"{user} may request {name} now; it {verdict.describe()}"]
        if verdict.mfa:
            lines.append(f"  {user} will be asked for a one-time code")
        if policy.targets[name].reason_pattern is not None:
            lines.append("  (the reason rule is judged on the reason given with the request)")
    glass = judge_break_glass(policy, user, name, now, directory)
    lines.append(f"  break-glass: {'may' if glass.outcome == 'break_glass' else 'may not'} ({glass.why})")
    return lines


def _fits(principal: Any, needed: str) -> bool:
    return principal is not None and getattr(principal, needed) is not None


def _auto(target: Target) -> str:
    rules, limit = target.auto_approve, target.auto_approve_limit()
    if rules is None or limit is None:
        return "none (every request waits for approvers)"
    level = rules.on_call.escalation_level
    tier = "the primary (escalation level 1)" if level == 1 else f"escalation level {level} or nearer"
    shift = "; the grant ends when the shift ends" if rules.end_with_shift else ""
    return (
        f"when the requester is on call as {tier} in PagerDuty schedule(s) {', '.join(rules.on_call.schedules)}, "
        f"for at most {format_duration(limit)}{shift}"
    )


def _window(freeze: Any) -> str:
    return f"{_instant(freeze.from_)} .. {_instant(freeze.to)}"


def _instant(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
