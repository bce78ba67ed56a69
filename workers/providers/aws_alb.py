"""ALB listener-rule grants: one forwarding rule per source CIDR, its leases in the rule's tags."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import ListenerRuleGrant
from jit_lb.access.requests import Use
from workers.providers import aws, markers
from workers.providers.base import Entries, GrantOrder, Lease, ManagedObject, drop_side_by_side, in_parallel

if TYPE_CHECKING:
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_elbv2.type_defs import RuleConditionTypeDef, RuleTypeDef, TagDescriptionTypeDef, TagTypeDef

KIND = "aws_alb_listener_rule"

# ALB quotas (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-limits.html).
MAX_VALUES_PER_CONDITION = 3
MAX_VALUES_PER_RULE = 5
MAX_WILDCARDS_PER_RULE = 5
MAX_RULES_PER_LISTENER = 100
MAX_TAGS_PER_RULE = 50
# Concurrent workers may pick the same free priority; each retry re-reads the listener first.
PRIORITY_ATTEMPTS = 8
# describe_tags takes at most 20 ARNs per call.
TAGS_BATCH = 20
# A snapshot reads at most this many target groups (three calls each); past them it says how many it left out.
SNAPSHOT_TARGET_GROUPS = 20

_GONE = frozenset({"RuleNotFound", "ListenerNotFound", "LoadBalancerNotFound"})
# DeleteRule calls in flight at once in drop_all, and DescribeTags calls in a listing: at a region's ~50 ms a call,
# a listener's 100 rules go in 0.35 s, where one after another they take 5 s. Under ELBv2's per-account request
# rate for a job or two side by side, and botocore's retries take a throttled call again.
DELETE_THREADS = 16
_CONFIG_KEYS = {
    "source-ip": "SourceIpConfig",
    "path-pattern": "PathPatternConfig",
    "host-header": "HostHeaderConfig",
    "http-header": "HttpHeaderConfig",
    "http-request-method": "HttpRequestMethodConfig",
    "query-string": "QueryStringConfig",
}

ConditionKey = frozenset[tuple[str, tuple[str, ...]]]


@dataclass(frozen=True)
class _Rule:
    """A listener rule as read back, with its tags."""

    arn: str
    priority: int | None
    conditions: ConditionKey
    target_groups: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    # The type of each action, in order: a rule of ours has exactly one, `forward`.
    actions: tuple[str, ...] = ()

    @property
    def managed(self) -> bool:
        return markers.is_managed(self.tags)

    @property
    def leases(self) -> list[Lease]:
        return sorted(markers.read_leases(self.tags), key=lambda lease: (lease.ends_at, lease.request_id))


class ListenerRuleProvider:
    """Forwarding rules on one ALB listener; each rule's tags hold a lease per request it serves."""

    owns_unleased = False  # a tag on a rule can be put there by hand

    def __init__(self, spec: ListenerRuleGrant) -> None:
        self.spec = spec
        self.elbv2: ElasticLoadBalancingv2Client = aws.client("elbv2", spec.region)
        self._where = f"listener {spec.listener_arn} in {spec.region}"
        self._listener_name = spec.listener_arn.partition(":listener/")[2]
        self._target_group_name = spec.target_group_arn.partition(":targetgroup/")[2].split("/")[0]

    def scope(self, order: GrantOrder) -> str:
        return f"{KIND}:{self.spec.listener_arn}:{markers.require_cidr(order)}"

    def apply(self, order: GrantOrder) -> list[ManagedObject]:
        cidr = markers.require_cidr(order)
        # Refuse what AWS would refuse, before anything is created.
        conditions = self._conditions(cidr)
        wanted = _condition_key(conditions)
        lease: TagTypeDef = {"Key": markers.lease_key(order.request_id), "Value": markers.format_time(order.ends_at)}
        rules = self._rules()
        existing = self._match(rules, wanted)
        arn = self._add_lease(existing, lease) if existing else self._create(conditions, wanted, lease, rules)
        rule = self._rule(arn)
        if rule is None:
            raise ProviderError(f"rule {arn} on {self._where} vanished right after the grant; retry the request")
        return [self._managed(rule)]

    def list_managed(self) -> list[ManagedObject]:
        return [self._managed(rule) for rule in self._rules() if rule.managed]

    def read(self, ref: str) -> ManagedObject | None:
        rule = self._rule(ref)
        return self._managed(rule) if rule is not None and rule.managed else None

    def objects_for(self, request_id: str) -> list[ManagedObject] | None:
        """No query of its own: ELBv2 cannot filter rules by tag, so the listing decides."""
        return None

    def restore(self, now: datetime) -> list[str]:
        """Nothing to restore: the leases live on the rules themselves."""
        return []

    def snapshot(self, order: GrantOrder) -> Entries:
        """The listener, its rules other than jit-lb's, its load balancer's attributes, and the target groups used.

        Target groups are those the listener's default actions and its other rules forward to, and the
        spec's own; each with its settings, attributes and registered targets (with their health).
        """
        with self._errors("elasticloadbalancing:DescribeListeners"):
            listener = self.elbv2.describe_listeners(ListenerArns=[self.spec.listener_arn])["Listeners"][0]
        balancer = listener["LoadBalancerArn"]
        with self._errors("elasticloadbalancing:DescribeLoadBalancerAttributes"):
            attributes = self.elbv2.describe_load_balancer_attributes(LoadBalancerArn=balancer)["Attributes"]
        entries = {
            f"load balancer {_balancer_name(balancer)}: {a.get('Key')}": str(a.get("Value") or "(empty)")
            for a in attributes
        }
        here = f"listener {self.spec.listener_arn.rpartition('/')[2]}"
        default_actions = listener.get("DefaultActions", [])
        entries[here] = f"{listener.get('Protocol')}:{listener.get('Port')}, default: {_actions_text(default_actions)}"
        groups = [*aws.forwarded_to(default_actions), self.spec.target_group_arn]
        groups += _rule_entries(entries, here, self._rules_of_others())
        return _with_target_groups(entries, groups, self._group_entries)

    def use_of(self, cidr: str) -> Use | None:
        """Not counted: an ALB keeps no per-source counts (its access logs in S3 would; see docs/policy.md)."""
        return None

    def _rules_of_others(self) -> list[RuleTypeDef]:
        """The listener's rules that are not jit-lb's nor the default one, as AWS describes them."""
        described: list[RuleTypeDef] = []
        with self._errors("elasticloadbalancing:DescribeRules"):
            for page in self.elbv2.get_paginator("describe_rules").paginate(ListenerArn=self.spec.listener_arn):
                described.extend(rule for rule in page["Rules"] if not rule.get("IsDefault"))
        tags = self._tags([rule["RuleArn"] for rule in described])
        # A rule deleted while we read has no tags to judge it by: it is gone, and left out.
        return [rule for rule in described if rule["RuleArn"] in tags and not markers.is_managed(tags[rule["RuleArn"]])]

    def _group_entries(self, arn: str) -> Entries:
        """One target group's settings, attributes and targets; none when it is gone."""
        return target_group_entries(self.elbv2, arn, self._errors)

    def drop_all(self, objects: list[ManagedObject]) -> int:
        """Delete each rule just listed without reading it again (a lockdown, a batch of revokes: one DeleteRule a
        rule, not three), DELETE_THREADS calls at a time: ELBv2 deletes no two rules in one call, and at a real
        region's ~50 ms a call, 50 rules one after another would take 2.5 s."""

        def delete(obj: ManagedObject) -> None:
            with self._errors("elasticloadbalancing:DeleteRule", passing=_GONE):
                self.elbv2.delete_rule(RuleArn=obj.ref)

        return drop_side_by_side(delete, objects, DELETE_THREADS)

    def drop(self, obj: ManagedObject, request_ids: set[str], fresh: bool = False) -> bool:
        rule = self._rule(obj.ref)
        if rule is None:
            return True
        if not rule.managed:
            # Someone took our marker off: the rule is theirs now, not ours to remove.
            return False
        remaining = [lease for lease in rule.leases if lease.request_id not in request_ids]
        if remaining:
            gone = [markers.lease_key(lease.request_id) for lease in rule.leases if lease.request_id in request_ids]
            if gone:
                with self._errors("elasticloadbalancing:RemoveTags", passing=_GONE) as passed:
                    self.elbv2.remove_tags(ResourceArns=[obj.ref], TagKeys=gone)
                if passed:
                    return True
            return False
        with self._errors("elasticloadbalancing:DeleteRule", passing=_GONE):
            self.elbv2.delete_rule(RuleArn=obj.ref)
        return True

    def _conditions(self, cidr: str) -> list[RuleConditionTypeDef]:
        """The rule's conditions for `cidr`, refused in words where an ALB would refuse them."""
        self._check_limits()
        return self._conditions_for(cidr)

    def _check_limits(self) -> None:
        spec = self.spec
        for name, values in (("path_patterns", spec.path_patterns), ("host_headers", spec.host_headers)):
            if len(values) > MAX_VALUES_PER_CONDITION:
                raise ProviderError(
                    f"{name} has {len(values)} values; an ALB rule condition takes at most "
                    f"{MAX_VALUES_PER_CONDITION}: shorten the grant in the policy file"
                )
        total = 1 + len(spec.path_patterns) + len(spec.host_headers)
        if total > MAX_VALUES_PER_RULE:
            raise ProviderError(
                f"the rule would have {total} condition values (1 source-ip, {len(spec.path_patterns)} path, "
                f"{len(spec.host_headers)} host); an ALB rule takes at most {MAX_VALUES_PER_RULE}: "
                "shorten path_patterns or host_headers in the policy file"
            )
        wildcards = sum(value.count("*") + value.count("?") for value in [*spec.path_patterns, *spec.host_headers])
        if wildcards > MAX_WILDCARDS_PER_RULE:
            raise ProviderError(
                f"path_patterns and host_headers hold {wildcards} wildcards; an ALB rule takes at most "
                f"{MAX_WILDCARDS_PER_RULE}: simplify them in the policy file"
            )

    def _conditions_for(self, cidr: str) -> list[RuleConditionTypeDef]:
        spec = self.spec
        conditions: list[RuleConditionTypeDef] = [{"Field": "source-ip", "SourceIpConfig": {"Values": [cidr]}}]
        if spec.path_patterns:
            conditions.append({"Field": "path-pattern", "PathPatternConfig": {"Values": list(spec.path_patterns)}})
        if spec.host_headers:
            conditions.append({"Field": "host-header", "HostHeaderConfig": {"Values": list(spec.host_headers)}})
        return conditions

    def _match(self, rules: list[_Rule], wanted: ConditionKey) -> _Rule | None:
        return next(
            (
                rule
                for rule in rules
                if rule.managed and rule.conditions == wanted and rule.target_groups == (self.spec.target_group_arn,)
            ),
            None,
        )

    def _add_lease(self, rule: _Rule, lease: TagTypeDef) -> str:
        if lease["Key"] not in rule.tags and len(rule.tags) >= MAX_TAGS_PER_RULE:
            raise ProviderError(
                f"rule {rule.priority} on {self._where} already holds {len(rule.leases)} overlapping grants, "
                f"the most its {MAX_TAGS_PER_RULE} tags can record; wait for one to end"
            )
        with self._errors("elasticloadbalancing:AddTags"):
            self.elbv2.add_tags(ResourceArns=[rule.arn], Tags=[lease])
        return rule.arn

    def _create(
        self, conditions: list[RuleConditionTypeDef], wanted: ConditionKey, lease: TagTypeDef, rules: list[_Rule]
    ) -> str:
        low, high = self.spec.priority_range
        for attempt in range(PRIORITY_ATTEMPTS):
            if len(rules) >= MAX_RULES_PER_LISTENER:
                raise ProviderError(
                    f"the {self._where} already has {MAX_RULES_PER_LISTENER} rules, the most an ALB "
                    "allows; remove unused rules or ask AWS to raise the quota"
                )
            used = {rule.priority for rule in rules}
            free = [priority for priority in range(low, high + 1) if priority not in used]
            if not free:
                raise ProviderError(
                    f"priority range {low}-{high} on {self._where} is full ({high - low + 1} rules); "
                    "widen priority_range in the policy file or wait for grants to end"
                )
            # The lowest free priority first, for people reading the console; a random one after a
            # collision, so that workers racing for the same slot spread out.
            priority = free[0] if attempt == 0 else secrets.choice(free)
            with self._errors("elasticloadbalancing:CreateRule", passing={"PriorityInUse"}) as passed:
                response = self.elbv2.create_rule(
                    ListenerArn=self.spec.listener_arn,
                    Priority=priority,
                    Conditions=conditions,
                    Actions=[{"Type": "forward", "TargetGroupArn": self.spec.target_group_arn}],
                    Tags=[{"Key": markers.MANAGED_TAG, "Value": markers.MANAGED_VALUE}, lease],
                )
            if not passed:
                return response["Rules"][0]["RuleArn"]
            rules = self._rules()
            # Our own create may have landed before its response was lost and botocore retried it.
            existing = self._match(rules, wanted)
            if existing is not None:
                return existing.arn if lease["Key"] in existing.tags else self._add_lease(existing, lease)
        raise ProviderError(
            f"no free priority in {low}-{high} on {self._where} after {PRIORITY_ATTEMPTS} attempts: "
            "other rules keep taking them; retry the request"
        )

    def _rules(self) -> list[_Rule]:
        described: list[RuleTypeDef] = []
        marker: str | None = None
        while True:
            with self._errors("elasticloadbalancing:DescribeRules"):
                if marker is None:
                    page = self.elbv2.describe_rules(ListenerArn=self.spec.listener_arn)
                else:
                    page = self.elbv2.describe_rules(ListenerArn=self.spec.listener_arn, Marker=marker)
            described.extend(page["Rules"])
            marker = page.get("NextMarker")
            if not marker:
                break
        tags = self._tags([rule["RuleArn"] for rule in described if not rule.get("IsDefault")])
        return [_read(rule, tags.get(rule["RuleArn"], {})) for rule in described if not rule.get("IsDefault")]

    def _rule(self, arn: str) -> _Rule | None:
        with self._errors("elasticloadbalancing:DescribeRules", passing=_GONE) as passed:
            page = self.elbv2.describe_rules(RuleArns=[arn])
        if passed or not page["Rules"]:
            return None
        tags = self._tags([arn])
        if arn not in tags:
            return None
        return _read(page["Rules"][0], tags[arn])

    def _tags(self, arns: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each rule's tags, TAGS_BATCH rules a call and DELETE_THREADS calls at a time; a rule deleted while we read
        is left out."""
        batches = [arns[start : start + TAGS_BATCH] for start in range(0, len(arns), TAGS_BATCH)]
        found: dict[str, dict[str, str]] = {}
        for tags in in_parallel(self._tags_of, batches, DELETE_THREADS):
            found.update(tags)
        return found

    def _tags_of(self, batch: Sequence[str]) -> dict[str, dict[str, str]]:
        with self._errors("elasticloadbalancing:DescribeTags", passing=_GONE) as passed:
            page = self.elbv2.describe_tags(ResourceArns=list(batch))
        if not passed:
            return _tag_dicts(page["TagDescriptions"])
        # One rule of the batch went away meanwhile; ask for each alone to keep the others.
        found: dict[str, dict[str, str]] = {}
        for arn in batch:
            with self._errors("elasticloadbalancing:DescribeTags", passing=_GONE) as gone:
                single = self.elbv2.describe_tags(ResourceArns=[arn])
            if not gone:
                found.update(_tag_dicts(single["TagDescriptions"]))
        return found

    def _managed(self, rule: _Rule) -> ManagedObject:
        values = dict(rule.conditions)
        sources = ", ".join(values.get("source-ip", ()))
        paths = " ".join(values.get("path-pattern", ()))
        hosts = " ".join(values.get("host-header", ()))
        where = "".join([f" host {hosts}" if hosts else "", f" path {paths}" if paths else ""])
        target = (
            self._target_group_name
            if rule.target_groups == (self.spec.target_group_arn,)
            else ", ".join(map(_group_name, rule.target_groups))
        )
        return ManagedObject(
            kind=KIND,
            ref=rule.arn,
            description=f"rule {rule.priority} on listener {self._listener_name} from {sources}{where} → {target}",
            leases=tuple(rule.leases),
            scope=f"{KIND}:{self.spec.listener_arn}:{sources}",
            anomaly=self._anomaly(rule),
        )

    def _anomaly(self, rule: _Rule) -> str:
        """How a rule carrying our marker differs from the rules this spec makes, or "" when it does not."""
        reasons: list[str] = []
        if rule.actions != ("forward",):
            done = ", ".join(rule.actions) or "none"
            reasons.append(f"its actions are {done}, not one forward to {self._target_group_name}")
        elif rule.target_groups != (self.spec.target_group_arn,):
            groups = ", ".join(map(_group_name, rule.target_groups))
            reasons.append(f"it forwards to {groups}, not {self._target_group_name}")
        sources = dict(rule.conditions).get("source-ip", ())
        if len(sources) != 1:
            reasons.append(f"it has {len(sources)} source-ip values, not one")
        elif markers.cidr_anomaly(sources[0]):
            reasons.append(markers.cidr_anomaly(sources[0]))
        elif rule.conditions != _condition_key(self._conditions_for(sources[0])):
            reasons.append("its path or host conditions are not the spec's")
        low, high = self.spec.priority_range
        if rule.priority is None or not low <= rule.priority <= high:
            reasons.append(f"priority {rule.priority} is outside priority_range {low}-{high}")
        reasons.append(markers.lease_anomaly(rule.leases))
        return markers.join_anomalies(*reasons)

    def _errors(self, action: str, passing: Iterable[str] = ()) -> AbstractContextManager[aws.Passed]:
        """Turn botocore errors into sentences; codes in `passing` are expected and recorded instead."""
        return aws.translated(action, self._where, passing, self._explain)

    def _explain(self, code: str) -> ProviderError | None:
        spec = self.spec
        if code == "ListenerNotFound":
            return ProviderError(f"listener {spec.listener_arn} not found in {spec.region}; check the policy file")
        if code == "TargetGroupNotFound":
            return ProviderError(
                f"target group {spec.target_group_arn} not found in {spec.region}; check the policy file"
            )
        if code == "TooManyRules":
            return ProviderError(
                f"the load balancer of {self._where} has reached its rule quota (TooManyRules); "
                "remove unused rules or ask AWS to raise the quota"
            )
        if code == "TooManyTags":
            return ProviderError(
                f"a rule on {self._where} has no room for another lease tag (TooManyTags); wait for a grant to end"
            )
        return None


# A provider's `_errors(action, passing=…)`: botocore's errors as sentences, the codes in `passing` recorded.
ErrorsFor = Callable[..., AbstractContextManager[aws.Passed]]


def target_group_entries(elbv2: ElasticLoadBalancingv2Client, arn: str, errors: ErrorsFor) -> Entries:
    """One target group's settings, attributes and registered targets (with their health); none when it is gone."""
    with errors("elasticloadbalancing:DescribeTargetGroups", passing={"TargetGroupNotFound"}) as gone:
        found = elbv2.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"]
    if gone or not found:
        return {}
    group = found[0]
    here = f"target group {group.get('TargetGroupName') or _group_name(arn)}"
    check = f"{group.get('HealthCheckProtocol')} {group.get('HealthCheckPath', '')}".strip()
    entries = {
        here: f"{group.get('TargetType')} targets on {group.get('Protocol')}:{group.get('Port')}, "
        f"health check {check} every {group.get('HealthCheckIntervalSeconds')}s"
    }
    with errors("elasticloadbalancing:DescribeTargetGroupAttributes", passing={"TargetGroupNotFound"}):
        for attribute in elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]:
            entries[f"{here}: {attribute.get('Key')}"] = str(attribute.get("Value") or "(empty)")
    with errors("elasticloadbalancing:DescribeTargetHealth", passing={"TargetGroupNotFound"}):
        for described in elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]:
            target = described.get("Target", {})
            port = f":{target['Port']}" if target.get("Port") else ""
            entries[f"{here}: target {target.get('Id')}{port}"] = str(
                described.get("TargetHealth", {}).get("State", "unknown")
            )
    return entries


def balancer_entries(elbv2: ElasticLoadBalancingv2Client, balancer: str, errors: ErrorsFor) -> Entries:
    """A whole load balancer as the ALB kind reads its listener: its attributes; each listener with its default
    action and its rules other than jit-lb's; the target groups they forward to, each with its settings,
    attributes and targets (the first SNAPSHOT_TARGET_GROUPS of them). The IAM kind's snapshot."""
    with errors("elasticloadbalancing:DescribeLoadBalancerAttributes"):
        attributes = elbv2.describe_load_balancer_attributes(LoadBalancerArn=balancer)["Attributes"]
    entries = {
        f"load balancer {_balancer_name(balancer)}: {a.get('Key')}": str(a.get("Value") or "(empty)")
        for a in attributes
    }
    listeners: list[Any] = []
    with errors("elasticloadbalancing:DescribeListeners"):
        for page in elbv2.get_paginator("describe_listeners").paginate(LoadBalancerArn=balancer):
            listeners.extend(page["Listeners"])
    groups: list[str] = []
    for listener in sorted(listeners, key=lambda listener: int(listener.get("Port") or 0)):
        here = f"listener {listener['ListenerArn'].rpartition('/')[2]}"
        default_actions = listener.get("DefaultActions", [])
        entries[here] = f"{listener.get('Protocol')}:{listener.get('Port')}, default: {_actions_text(default_actions)}"
        groups.extend(aws.forwarded_to(default_actions))
        if ":listener/app/" not in listener["ListenerArn"]:
            continue  # only an ALB's listeners have rules
        rules: list[Any] = []
        with errors("elasticloadbalancing:DescribeRules", passing={"ListenerNotFound"}):
            for listed in elbv2.get_paginator("describe_rules").paginate(ListenerArn=listener["ListenerArn"]):
                rules.extend(rule for rule in listed["Rules"] if not rule.get("IsDefault"))
        tags: dict[str, dict[str, str]] = {}
        for start in range(0, len(rules), TAGS_BATCH):
            batch = [rule["RuleArn"] for rule in rules[start : start + TAGS_BATCH]]
            with errors("elasticloadbalancing:DescribeTags", passing=_GONE):
                tags.update(_tag_dicts(elbv2.describe_tags(ResourceArns=batch)["TagDescriptions"]))
        # Not jit-lb's own (another grant's), nor gone while read.
        others = [rule for rule in rules if rule["RuleArn"] in tags and not markers.is_managed(tags[rule["RuleArn"]])]
        groups += _rule_entries(entries, here, others)
    return _with_target_groups(entries, groups, lambda arn: target_group_entries(elbv2, arn, errors))


def _rule_entries(entries: Entries, here: str, rules: Iterable[Mapping[str, Any]]) -> list[str]:
    """Each rule added to `entries` as `<here>: rule <priority>`; the groups they forward to."""
    groups: list[str] = []
    for rule in rules:
        conditions = "; ".join(
            f"{name} {' '.join(values)}" for name, values in sorted(_condition_key(rule.get("Conditions", [])))
        )
        actions = rule.get("Actions", [])
        entries[f"{here}: rule {rule.get('Priority')}"] = f"if {conditions or 'anything'}: {_actions_text(actions)}"
        groups.extend(aws.forwarded_to(actions))
    return groups


def _with_target_groups(entries: Entries, groups: list[str], read: Callable[[str], Entries]) -> Entries:
    """`entries` and those `read` gives of each target group in `groups` (the first SNAPSHOT_TARGET_GROUPS of them)."""
    used = sorted(set(groups))
    if len(used) > SNAPSHOT_TARGET_GROUPS:
        entries["target groups in use"] = f"{len(used)}, of which the first {SNAPSHOT_TARGET_GROUPS} are read"
    for arn in used[:SNAPSHOT_TARGET_GROUPS]:
        entries.update(read(arn))
    return entries


def _condition_key(conditions: Iterable[Mapping[str, Any]]) -> ConditionKey:
    """Conditions as a comparable set, whichever form (`Values` or `…Config`) AWS reports them in."""
    key: set[tuple[str, tuple[str, ...]]] = set()
    for condition in conditions:
        name = str(condition.get("Field", ""))
        config = condition.get(_CONFIG_KEYS.get(name, ""), {})
        if name == "http-header":
            name = f"http-header:{config.get('HttpHeaderName', '')}"
        values = config.get("Values") or condition.get("Values") or []
        key.add((name, tuple(sorted(_normal(name, str(value)) for value in values))))
    return frozenset(key)


def _normal(name: str, value: str) -> str:
    if name == "source-ip":
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            return value
    # Host names match case-insensitively at the ALB.
    return value.lower() if name == "host-header" else value


def _read(rule: RuleTypeDef, tags: dict[str, str]) -> _Rule:
    priority = str(rule.get("Priority", "default"))
    actions = rule.get("Actions", [])
    return _Rule(
        arn=rule["RuleArn"],
        priority=int(priority) if priority.isdigit() else None,
        conditions=_condition_key(rule.get("Conditions", [])),
        target_groups=tuple(aws.forwarded_to(actions)),
        tags=tags,
        actions=tuple(str(action.get("Type", "")) for action in actions),
    )


def _balancer_name(arn: str) -> str:
    """A load balancer's name from its ARN (`…:loadbalancer/app/NAME/ID`)."""
    return [*arn.partition(":loadbalancer/")[2].split("/"), "", ""][1] or arn


def _actions_text(actions: Iterable[Mapping[str, Any]]) -> str:
    """What listener or rule actions do, in words: `forward to web-tg`, `fixed-response 403`, `redirect to …`."""
    done = []
    for action in sorted(actions, key=lambda action: int(action.get("Order") or 0)):
        kind = str(action.get("Type", ""))
        if kind == "forward":
            done.append("forward to " + ", ".join(map(_group_name, aws.forwarded_to([action]))))
        elif kind == "fixed-response":
            done.append(f"fixed-response {action.get('FixedResponseConfig', {}).get('StatusCode', '')}".strip())
        elif kind == "redirect":
            to = action.get("RedirectConfig", {})
            where = "".join(
                f"{prefix}{to[key]}"
                for prefix, key in (("", "Protocol"), ("://", "Host"), (":", "Port"), ("", "Path"), ("?", "Query"))
                if to.get(key)
            )
            done.append(f"redirect to {where} ({to.get('StatusCode', '')})")
        else:
            done.append(kind)
    return ", then ".join(done) or "nothing"


def _group_name(arn: str) -> str:
    """A target group's name from its ARN (`…:targetgroup/NAME/ID`)."""
    return arn.partition(":targetgroup/")[2].split("/")[0] or arn


def _tag_dicts(descriptions: Iterable[TagDescriptionTypeDef]) -> dict[str, dict[str, str]]:
    return {
        description["ResourceArn"]: aws.tag_map(description.get("Tags", []))
        for description in descriptions
        if "ResourceArn" in description
    }
