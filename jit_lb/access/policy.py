"""The policy file as typed models: who may request which target, for how long, approved by whom."""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from jit_lb.access.durations import format_duration, parse_duration
from jit_lb.access.errors import PolicyError

# Prefixes wider than these are as good as public: refuse them where a principal's source is meant.
MIN_IPV4_PREFIX = 8
MIN_IPV6_PREFIX = 32

SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
ROLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
ROLE_PREFIX = "role:"
SLACK_USERGROUP = re.compile(r"^S[A-Z0-9]{2,}$")
SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"`{value}` is not a duration (use e.g. 90s, 30m, 1h, 1h30m)")
    return parse_duration(value.strip())


# The JSON Schema (`policy schema`) says what the file holds, a duration as typed, not the timedelta it becomes.
DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*([0-9]+[smhd])+\s*$",
    "description": "a duration: one or more <integer><unit> parts, unit s, m, h or d (90s, 30m, 1h30m, 2d)",
}
Duration = Annotated[timedelta, BeforeValidator(_duration), WithJsonSchema(DURATION_SCHEMA)]
Members = Callable[[str], list[str]]  # a usergroup's members, as Slack says (the core's GroupDirectory)


def source_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse a principal's source CIDR, refusing anything as wide as the internet."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as err:
        raise ValueError(f"`{text}` is not a network in CIDR form ({err})") from None
    floor = MIN_IPV4_PREFIX if network.version == 4 else MIN_IPV6_PREFIX
    if network.prefixlen < floor:
        raise ValueError(f"`{text}` is open to the whole internet or close to it; use /{floor} or narrower")
    return network


_HOST_CHARACTERS = re.compile(r"[0-9A-Fa-f.:]{2,45}")


def host_address(text: str, allow_private: bool = False) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse a single host address named with `--ip` into its /32 or /128 network.

    Only digits, hex letters, dots and colons pass: no zone id (`%eth0`), nothing that a runtime
    API could read as a second command. Unless `allow_private`, the address must be global
    unicast: no loopback, private, link-local (169.254.169.254), shared, reserved or documentation
    address, which would open the load balancer to something other than one person's machine.
    """
    text = text.strip()
    if "%" in text:
        raise ValueError(f"`{text[:60]}` names a zone id (`%…`); give a plain IPv4 or IPv6 host address")
    try:
        if not _HOST_CHARACTERS.fullmatch(text):
            raise ValueError(text)
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"`{text[:60]}` is not a single IPv4 or IPv6 host address") from None
    if address.is_unspecified or address.is_multicast or str(address) == "255.255.255.255":
        raise ValueError(f"`{text}` is not a host address a grant can be for")
    if not allow_private and not address.is_global:
        raise ValueError(
            f"`{text}` is not a global unicast address (loopback, private, link-local, shared, reserved and "
            "documentation addresses are refused unless the target sets allow_private_ip)"
        )
    return ipaddress.ip_network(address)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Principal(_Model):
    """Who a Slack user is at the load balancer."""

    source_cidr: str | None = None
    aws_role_name: str | None = Field(default=None, pattern=r"^[\w+=,.@-]{1,64}$")
    # How PagerDuty knows this person (auto-approval from on-call); unset: Slack's users.info.
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)

    @field_validator("source_cidr")
    @classmethod
    def _check_cidr(cls, value: str | None) -> str | None:
        return None if value is None else str(source_network(value))


class SecurityGroupGrant(_Model):
    """An ingress rule per port on a security group for the principal's CIDR."""

    kind: Literal["aws_security_group"]
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    security_group_id: str = Field(pattern=r"^sg-[0-9a-f]{1,32}$")
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(min_length=1)
    protocol: Literal["tcp", "udp"] = "tcp"

    @field_validator("ports")
    @classmethod
    def _unique_ports(cls, value: list[int]) -> list[int]:
        return sorted(set(value))


class ListenerRuleGrant(_Model):
    """A forwarding rule on an ALB listener with a source-ip condition for the principal's CIDR."""

    kind: Literal["aws_alb_listener_rule"]
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    listener_arn: str = Field(pattern=r"^arn:aws[\w-]*:elasticloadbalancing:[\w-]+:\d{12}:listener/app/")
    target_group_arn: str = Field(pattern=r"^arn:aws[\w-]*:elasticloadbalancing:[\w-]+:\d{12}:targetgroup/")
    path_patterns: list[str] = Field(default_factory=list, max_length=5)
    host_headers: list[str] = Field(default_factory=list, max_length=5)
    priority_range: tuple[int, int] = (49000, 50000)

    @field_validator("priority_range")
    @classmethod
    def _check_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1 <= low <= high <= 50000:
            raise ValueError("must be two priorities [low, high] with 1 <= low <= high <= 50000")
        return value


# The Elastic Load Balancing (v2) actions an `aws_iam_policy` grant gives, each on the resources AWS lets it be
# scoped to (the Service Authorization Reference: load balancer, listener, listener rule, target group). The
# `Describe*` actions take no resource-level permission: they are listed apart, on `"Resource": "*"`, read-only.
# Left out, and why (docs/policy.md): SetWebAcl (AWS scopes it to `*` only, so it could never be used on one
# load balancer); CreateLoadBalancer and CreateTargetGroup (they make new resources, outside the one load
# balancer); the trust-store actions (a trust store is a resource of its own, shared across load balancers).
ELB_SCOPED_ACTIONS = tuple(
    f"elasticloadbalancing:{name}"
    for name in (
        "AddListenerCertificates",
        "AddTags",
        "CreateListener",
        "CreateRule",
        "DeleteListener",
        "DeleteLoadBalancer",
        "DeleteRule",
        "DeleteTargetGroup",
        "DeregisterTargets",
        "ModifyCapacityReservation",
        "ModifyListener",
        "ModifyListenerAttributes",
        "ModifyLoadBalancerAttributes",
        "ModifyRule",
        "ModifyTargetGroup",
        "ModifyTargetGroupAttributes",
        "RegisterTargets",
        "RemoveListenerCertificates",
        "RemoveTags",
        "SetIpAddressType",
        "SetRulePriorities",
        "SetSecurityGroups",
        "SetSubnets",
    )
)
ELB_DESCRIBE_ACTIONS = tuple(
    f"elasticloadbalancing:{name}"
    for name in (
        "DescribeAccountLimits",
        "DescribeCapacityReservation",
        "DescribeListenerAttributes",
        "DescribeListenerCertificates",
        "DescribeListeners",
        "DescribeLoadBalancerAttributes",
        "DescribeLoadBalancers",
        "DescribeRules",
        "DescribeSSLPolicies",
        "DescribeTags",
        "DescribeTargetGroupAttributes",
        "DescribeTargetGroups",
        "DescribeTargetHealth",
    )
)
ELB_LEFT_OUT = ("SetWebAcl", "CreateLoadBalancer", "CreateTargetGroup", "the trust-store actions")


def iam_actions(actions: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the Describe actions, every other action) an `aws_iam_policy` grant gives for a spec's `actions`.

    `elasticloadbalancing:*` (the default) is spelt out: ELB_DESCRIBE_ACTIONS and ELB_SCOPED_ACTIONS, so that
    no action AWS scopes to `*` alone rides along, unusable; `Describe*` likewise becomes ELB_DESCRIBE_ACTIONS.
    Any other action named is given as named.
    """
    describe: list[str] = []
    scoped: list[str] = []
    for action in actions:
        lowered = action.lower()
        if lowered == "elasticloadbalancing:*":
            describe.extend(ELB_DESCRIBE_ACTIONS)
            scoped.extend(ELB_SCOPED_ACTIONS)
        elif lowered == "elasticloadbalancing:describe*":
            describe.extend(ELB_DESCRIBE_ACTIONS)
        elif lowered.startswith("elasticloadbalancing:describe"):
            describe.append(action)
        else:
            scoped.append(action)
    return list(dict.fromkeys(describe)), list(dict.fromkeys(scoped))


class IamPolicyGrant(_Model):
    """An inline policy on the principal's role allowing actions on one load balancer until the end."""

    kind: Literal["aws_iam_policy"]
    load_balancer_arn: str = Field(
        pattern=r"^arn:aws[\w-]*:elasticloadbalancing:[\w-]+:\d{12}:loadbalancer/(app|net|gwy)/[\w-]+/[0-9a-f]+$"
    )
    actions: list[str] = Field(default_factory=lambda: ["elasticloadbalancing:*"], min_length=1)
    require_mfa: bool = False

    @field_validator("actions")
    @classmethod
    def _check_actions(cls, value: list[str]) -> list[str]:
        for action in value:
            if not re.fullmatch(r"elasticloadbalancing:[A-Za-z*]+", action):
                raise ValueError(f"`{action}` is not an elasticloadbalancing action")
        return value


class HaproxyAclGrant(_Model):
    """An entry in an HAProxy ACL file, set over the runtime API."""

    kind: Literal["haproxy_acl"]
    runtime_api: str = Field(pattern=r"^(unix:/.+|tcp:[^:]+:\d{1,5})$")
    acl: str = Field(min_length=1)
    # The stick table the frontend tracks sources in (`http-request track-sc0 src table <name>`): the
    # grantee's use is read from it (docs/operating.md, docs/policy.md). A proxy name, as HAProxy spells one.
    stick_table: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")

    @model_serializer(mode="wrap")
    def _without_unset_table(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leave an unset stick_table out, so that grants recorded before the field existed keep their spec."""
        data: dict[str, Any] = handler(self)
        if self.stick_table is None:
            data.pop("stick_table", None)
        return data


def _absolute_path(value: str) -> str:
    """A file path as a grant spec names one: absolute, normalised, no control characters."""
    if not value or any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError("must be a file path without control characters")
    if not value.startswith("/"):
        raise ValueError(f"`{value[:100]}` is not an absolute path")
    normal = posixpath.normpath(value)
    if normal in {"/", "//"}:
        raise ValueError(f"`{value[:100]}` names a directory, not a file")
    return normal


FilePath = Annotated[str, AfterValidator(_absolute_path)]


class NginxAllowlistGrant(_Model):
    """A line `allow <cidr>;` in a file NGINX includes before `deny all;`, then NGINX tested and reloaded."""

    kind: Literal["nginx_allowlist"]
    allow_file: FilePath  # included inside the protected server or location, before its `deny all;`
    pid_file: FilePath  # the master's pid file: a reload is SIGHUP to that process
    # The binary that tests a configuration before it is loaded: a name on the PATH or an absolute path.
    nginx: str = Field(default="nginx", pattern=r"^(/[^\x00-\x1f\x7f]+|[A-Za-z0-9_.+-]+)$")
    config: FilePath | None = None  # the main configuration file for that test (default: the binary's own)

    @model_validator(mode="after")
    def _distinct_files(self) -> NginxAllowlistGrant:
        if self.allow_file in {self.pid_file, self.config}:
            raise ValueError("allow_file: must be a file of its own, not the pid file or the main configuration")
        return self


GrantSpec = Annotated[
    SecurityGroupGrant | ListenerRuleGrant | IamPolicyGrant | HaproxyAclGrant | NginxAllowlistGrant,
    Field(discriminator="kind"),
]

_GRANT_SPEC: TypeAdapter[GrantSpec] = TypeAdapter(GrantSpec)


def parse_grant_spec(data: dict[str, Any]) -> GrantSpec:
    """A grant spec as recorded with a grant (`spec_record`), read back; ValueError when it is not one."""
    try:
        return _GRANT_SPEC.validate_python(data)
    except ValidationError as err:
        raise ValueError(f"not a grant spec: {err.errors()[0]['msg']}") from None


def spec_record(spec: GrantSpec) -> dict[str, Any]:
    """A grant spec as it is recorded with a grant, to compare with the policy's and to revoke by."""
    return spec.model_dump(mode="json")


NETWORK_KINDS = frozenset({"aws_security_group", "aws_alb_listener_rule", "haproxy_acl", "nginx_allowlist"})


class OnCallRule(_Model):
    """Who counts as on call: an entry of one of these PagerDuty schedules at this escalation level or nearer."""

    schedules: list[Annotated[str, Field(pattern=r"^P[A-Z0-9]{5,13}$")]] = Field(min_length=1, max_length=20)
    escalation_level: int = Field(default=1, ge=1, le=20)


class AutoApprove(_Model):
    """Approval without a click while a condition holds (docs/approvals.md); MFA, freezes and lockdown still apply."""

    on_call: OnCallRule
    max_duration: Duration | None = None  # default: the target's max_duration
    end_with_shift: bool = False  # the grant ends when the requester's on-call entry ends, if that comes first


class Target(_Model):
    """One load balancer access that can be requested."""

    description: str = ""
    default_duration: Duration = None  # type: ignore[assignment] # filled in by _fill_default: min(30m, max)
    min_duration: Duration = timedelta(minutes=1)
    max_duration: Duration
    durations: list[Duration] | None = None  # the request modal's choices
    approvers: list[str] = Field(min_length=1)
    approvals_required: int = Field(default=1, ge=1)
    requesters: list[str] | None = None
    reason_pattern: str | None = None
    reason_hint: str | None = Field(default=None, max_length=200)
    deny_reason: Literal["none", "optional", "required"] = "none"
    require_mfa: bool = False  # requester and approvers step up with a one-time code (docs/command-and-slack.md)
    idle_timeout: Duration | None = None  # haproxy_acl with a stick_table only: end a grant unused this long
    allow_requester_ip: bool = False
    allow_private_ip: bool = False
    approver_channel: str | None = Field(default=None, pattern=SLACK_CHANNEL.pattern)
    auto_approve: AutoApprove | None = None
    grant: GrantSpec

    @field_validator("approvers", "requesters")
    @classmethod
    def _check_people(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_people(value)

    @field_validator("reason_pattern")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"`{value}` is not a regular expression ({err})") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _fill_default(cls, data: Any) -> Any:
        """`default_duration` may be left out: the smaller of 30m and `max_duration`."""
        if isinstance(data, dict) and data.get("default_duration") is None and "max_duration" in data:
            maximum = _duration(data["max_duration"])
            data = {**data, "default_duration": min(timedelta(minutes=30), maximum)}
        return data

    @model_validator(mode="after")
    def _idle_needs_use(self) -> Target:
        """Idle expiry needs use that can be observed: an HAProxy ACL whose frontend tracks sources in a table."""
        if self.idle_timeout is not None:
            if not isinstance(self.grant, HaproxyAclGrant) or self.grant.stick_table is None:
                raise ValueError(
                    "idle_timeout: use can only be observed on a haproxy_acl grant with a stick_table; "
                    f"this target grants {self.grant.kind}"
                    + (" without one" if self.grant.kind == "haproxy_acl" else "")
                    + (" (NGINX keeps no count of use per source)" if self.grant.kind == "nginx_allowlist" else "")
                )
            if self.idle_timeout < timedelta(seconds=10):
                raise ValueError("idle_timeout: at least 10s (use is read every few seconds)")
        return self

    @model_validator(mode="after")
    def _iam_keeps_mfa(self) -> Target:
        """An IAM target that requires MFA also keeps `aws:MultiFactorAuthPresent` on the policy it grants."""
        if self.require_mfa and isinstance(self.grant, IamPolicyGrant) and not self.grant.require_mfa:
            object.__setattr__(self, "grant", self.grant.model_copy(update={"require_mfa": True}))
        return self

    @model_validator(mode="after")
    def _check_limits(self) -> Target:
        for choice in self.durations or []:
            if not self.min_duration <= choice <= self.max_duration:
                low, high = format_duration(self.min_duration), format_duration(self.max_duration)
                raise ValueError(f"durations: {format_duration(choice)} is outside min_duration {low} .. max {high}")
        if not self.min_duration <= self.default_duration <= self.max_duration:
            raise ValueError(
                f"durations must satisfy min_duration ({format_duration(self.min_duration)}) <= "
                f"default_duration ({format_duration(self.default_duration)}) <= "
                f"max_duration ({format_duration(self.max_duration)})"
            )
        auto = self.auto_approve
        if auto is not None and auto.max_duration is not None and not self.min_duration <= auto.max_duration:
            raise ValueError(
                f"auto_approve.max_duration ({format_duration(auto.max_duration)}) is shorter than "
                f"min_duration ({format_duration(self.min_duration)}): nothing could be auto-approved"
            )
        return self

    def auto_approve_limit(self) -> timedelta | None:
        """The longest grant auto-approval may give, or None when the target has no auto-approval."""
        if self.auto_approve is None:
            return None
        return min(self.auto_approve.max_duration or self.max_duration, self.max_duration)

    def matches_reason(self, reason: str) -> bool:
        """Whether a reason satisfies the target's `reason_pattern` (searched, as Teleport and JIT Access do)."""
        return self.reason_pattern is None or re.search(self.reason_pattern, reason) is not None

    def duration_choices(self) -> list[timedelta]:
        """The request modal's choices: the target's `durations`, or a few within its limits."""
        if self.durations:
            return sorted(set(self.durations))
        steps = [timedelta(minutes=m) for m in (5, 15, 30, 60, 120, 240, 480)] + [self.default_duration]
        return sorted({step for step in steps if self.min_duration <= step <= self.max_duration})

    @property
    def is_network(self) -> bool:
        return self.grant.kind in NETWORK_KINDS


class MfaRules(_Model):
    """How step-ups work (docs/command-and-slack.md): how long a code proves a person, when bad codes lock them out."""

    window: Duration = timedelta(minutes=5)
    lockout_after: int = Field(default=5, ge=1, le=100)
    lockout: Duration = timedelta(minutes=15)
    # An enrolment not confirmed with a first code this long after it began is cancelled and its secret destroyed.
    enrol_within: Duration = timedelta(minutes=5)


class BreakGlass(_Model):
    """Emergency access without approval (docs/operating.md): who, on which targets, how long, reviewed by when."""

    users: list[str] = Field(min_length=1)
    targets: list[str] | None = None  # default: every target
    max_duration: Duration = timedelta(hours=1)
    review_within: Duration = timedelta(hours=24)

    @field_validator("users")
    @classmethod
    def _check_users(cls, value: list[str]) -> list[str]:
        return check_people(value)


class Freeze(_Model):
    """A window in which requests for some targets are refused (break-glass still works)."""

    from_: datetime = Field(alias="from")
    to: datetime
    targets: list[str] | None = None  # default: every target
    reason: str = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _check_window(self) -> Freeze:
        if self.from_.tzinfo is None or self.to.tzinfo is None:
            raise ValueError("from and to need a time zone (e.g. 2026-12-20T00:00:00Z)")
        if self.to <= self.from_:
            raise ValueError("`to` must come after `from`")
        return self

    def covers(self, target: str, now: datetime) -> bool:
        return self.from_ <= now < self.to and (self.targets is None or target in self.targets)


class Limits(_Model):
    """How much one person may ask for: refusals past them are audited in summary (docs/command-and-slack.md)."""

    pending_per_user: int = Field(default=3, ge=1, le=10_000)
    commands_per_minute: int = Field(default=20, ge=1, le=100_000)
    schedule_ahead: Duration = timedelta(days=7)  # how far ahead `--at` may start a window


class Policy(_Model):
    """The whole policy file."""

    approver_channel: str = Field(pattern=SLACK_CHANNEL.pattern)
    audit_channel: str | None = Field(default=None, pattern=SLACK_CHANNEL.pattern)
    pending_ttl: Duration = timedelta(minutes=15)
    principals: dict[str, Principal] = Field(default_factory=dict)
    admins: list[str] = Field(default_factory=list)
    roles: dict[str, list[str]] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    mfa: MfaRules = Field(default_factory=MfaRules)
    break_glass: BreakGlass | None = None
    freezes: list[Freeze] = Field(default_factory=list)
    targets: dict[str, Target] = Field(min_length=1)

    def freeze_of(self, target: str, now: datetime) -> Freeze | None:
        """The freeze window `target` is in at `now`, if any."""
        return next((freeze for freeze in self.freezes if freeze.covers(target, now)), None)

    def freeze_during(self, target: str, start: datetime, end: datetime) -> Freeze | None:
        """A freeze window of `target` that overlaps [start, end), if any (an extension may not reach into one)."""
        return next(
            (
                freeze
                for freeze in self.freezes
                if freeze.from_ < end and start < freeze.to and (freeze.targets is None or target in freeze.targets)
            ),
            None,
        )

    def break_glass_covers(self, target: str) -> bool:
        rules = self.break_glass
        return rules is not None and (rules.targets is None or target in rules.targets)

    @property
    def on_call_targets(self) -> list[str]:
        """The targets whose auto-approval asks PagerDuty, by name."""
        return sorted(name for name, target in self.targets.items() if target.auto_approve is not None)

    @property
    def mfa_targets(self) -> list[str]:
        """The targets that require a step-up, by name."""
        return sorted(name for name, target in self.targets.items() if target.require_mfa)

    @field_validator("admins")
    @classmethod
    def _check_admins(cls, value: list[str]) -> list[str]:
        return check_people(value)

    @field_validator("roles")
    @classmethod
    def _check_roles(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, members in value.items():
            if not ROLE_NAME.match(name):
                raise ValueError(f"`{name}` is not a role name (lower case letters, digits, - _)")
            for who in members:
                if not (SLACK_USER.match(who) or SLACK_USERGROUP.match(who)):
                    raise ValueError(f"{name}: `{who}` is neither a Slack user id (U…) nor a usergroup id (S…)")
        return value

    @field_validator("principals")
    @classmethod
    def _check_principal_ids(cls, value: dict[str, Principal]) -> dict[str, Principal]:
        for who in value:
            if not SLACK_USER.match(who):
                raise ValueError(f"`{who}` is not a Slack user id (U…)")
        return value

    @field_validator("targets")
    @classmethod
    def _check_target_names(cls, value: dict[str, Target]) -> dict[str, Target]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", name):
                raise ValueError(f"`{name}` is not a target name (lower case letters, digits, - _ .)")
        return value

    @model_validator(mode="after")
    def _check_requesters(self) -> Policy:
        undefined = [
            (where, name.removeprefix(ROLE_PREFIX))
            for where, names in self._people_fields()
            for name in names
            if name.startswith(ROLE_PREFIX) and name.removeprefix(ROLE_PREFIX) not in self.roles
        ]
        if undefined:
            where, role = undefined[0]
            raise ValueError(f"{where}: `role:{role}` is not defined under roles")
        named = [*(self.break_glass.targets or [] if self.break_glass else [])]
        named += [name for freeze in self.freezes for name in freeze.targets or []]
        unknown = [name for name in named if name not in self.targets]
        if unknown:
            raise ValueError(f"`{unknown[0]}` is named by break_glass or freezes but is not a target")
        for name, target in self.targets.items():
            for who in self.named_users(target.requesters or []):
                principal = self.principals.get(who)
                if principal is None:
                    raise ValueError(f"targets.{name}.requesters: `{who}` is not listed under principals")
                if not _principal_fits(principal, target):
                    raise ValueError(f"targets.{name}.requesters: `{who}` has no {_needed_field(target)}")
            approvers = self.named_users(target.approvers)
            has_groups = any(SLACK_USERGROUP.match(who) for who in self.expand_roles(target.approvers))
            if not has_groups and target.approvals_required > len(approvers):
                raise ValueError(
                    f"targets.{name}: approvals_required is {target.approvals_required} but only {len(approvers)} "
                    "approver(s) are named"
                )
        return self

    def _people_fields(self) -> list[tuple[str, list[str]]]:
        fields = [("admins", self.admins)]
        if self.break_glass is not None:
            fields.append(("break_glass.users", self.break_glass.users))
        for name, target in self.targets.items():
            fields += [(f"targets.{name}.approvers", target.approvers)]
            fields += [(f"targets.{name}.requesters", target.requesters or [])]
        return fields

    def expand_roles(self, names: Iterable[str]) -> list[str]:
        """Policy names with every `role:<name>` replaced by its members (user ids and usergroup ids)."""
        out: list[str] = []
        for name in names:
            out.extend(self.roles.get(name.removeprefix(ROLE_PREFIX), []) if name.startswith(ROLE_PREFIX) else [name])
        return list(dict.fromkeys(out))

    def named_users(self, names: Iterable[str]) -> set[str]:
        """The user ids `names` give without asking Slack: users, and the users of roles (not usergroups)."""
        return {who for who in self.expand_roles(names) if SLACK_USER.match(who)}

    def people(self, names: Iterable[str], members: Members) -> set[str]:
        """Every user `names` stand for: users, roles' members, and usergroups' members as `members` reads them."""
        users: set[str] = set()
        for who in self.expand_roles(names):
            users.update(members(who) if SLACK_USERGROUP.match(who) else [who])
        return users

    def is_admin(self, user: str, members: Members) -> bool:
        return user in self.named_users(self.admins) or user in self.people(self.admins, members)

    def target_for(self, name: str) -> Target | None:
        return self.targets.get(name)

    def channel_for(self, target: Target) -> str:
        return target.approver_channel or self.approver_channel

    def may_request(self, user_id: str, target: Target, members: Members = lambda _: []) -> bool:
        """A principal with the field the target needs, named among its requesters (by id, role or usergroup)."""
        principal = self.principals.get(user_id)
        if principal is None or not _principal_fits(principal, target):
            return False
        if target.requesters is None or user_id in self.named_users(target.requesters):
            return True
        return user_id in self.people(target.requesters, members)

    def targets_for(self, user_id: str, members: Members = lambda _: []) -> dict[str, Target]:
        return {name: t for name, t in self.targets.items() if self.may_request(user_id, t, members)}


def _needed_field(target: Target) -> str:
    return "source_cidr" if target.is_network else "aws_role_name"


def _principal_fits(principal: Principal, target: Target) -> bool:
    return (principal.source_cidr if target.is_network else principal.aws_role_name) is not None


def check_people(value: list[str]) -> list[str]:
    """Who a policy may name: Slack user ids, usergroup ids, and `role:<name>`; duplicates dropped."""
    for who in value:
        if not (SLACK_USER.match(who) or SLACK_USERGROUP.match(who) or who.startswith(ROLE_PREFIX)):
            raise ValueError(f"`{who}` is neither a Slack user id (U…), a usergroup id (S…) nor a role (role:<name>)")
    return list(dict.fromkeys(value))


def parse_policy(data: Any, source: str = "policy") -> Policy:
    """Validate already-loaded policy data; raise PolicyError naming the first bad field."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the policy must be a mapping with approver_channel, principals and targets")
    try:
        return Policy.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if not _is_union_tag(part))
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        if first["type"] == "union_tag_invalid":
            message = f"unknown grant kind `{first['input'].get('kind') if isinstance(first['input'], dict) else ''}`"
        count = err.error_count()
        more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
        raise PolicyError(f"{source}: {where or 'policy'}: {message}{more}") from None


def _is_union_tag(part: int | str) -> bool:
    return part in {"aws_security_group", "aws_alb_listener_rule", "aws_iam_policy", "haproxy_acl", "nginx_allowlist"}


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raise PolicyError with the file and the field at fault."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PolicyError(f"{path}: cannot read the policy file ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PolicyError(f"{path}: not valid YAML ({err})") from None
    return parse_policy(data, str(path))
