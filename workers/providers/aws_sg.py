"""Security-group grants: one ingress rule per port for the principal's CIDR, leases in rule tags."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import SecurityGroupGrant
from jit_lb.access.requests import Use
from workers.providers import aws, markers
from workers.providers.base import Entries, GrantOrder, Lease, ManagedObject, drop_in_batches

KIND = "aws_security_group"
# A rule already gone counts as deleted.
_REVOKED = frozenset({"InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound"})
# Asked for by an id that is gone (or never was one): no such rule.
_NO_RULE = frozenset({"InvalidSecurityGroupRuleId.NotFound", "InvalidSecurityGroupRuleId.Malformed"})
_NO_GROUP = frozenset({"InvalidGroup.NotFound", "InvalidGroupId.Malformed"})


REVOKE_BATCH = 100  # rule ids in one RevokeSecurityGroupIngress
REVOKE_ATTEMPTS = 3  # calls for one batch whose rules others are removing too, before it goes one rule a call


class SecurityGroupProvider:
    """Ingress rules on one security group; each rule's tags hold a lease per request it serves."""

    owns_unleased = False  # a tag on a rule can be put there by hand

    def __init__(self, spec: SecurityGroupGrant) -> None:
        self.spec = spec
        self.ec2 = aws.client("ec2", spec.region)
        self._where = f"security group {spec.security_group_id} in {spec.region}"

    def scope(self, order: GrantOrder) -> str:
        return _scope(self.spec, markers.require_cidr(order))

    def apply(self, order: GrantOrder) -> list[ManagedObject]:
        cidr = markers.require_cidr(order)
        lease_tag = {"Key": markers.lease_key(order.request_id), "Value": markers.format_time(order.ends_at)}
        existing = {rule["FromPort"]: rule for rule in self._rules() if _matches(rule, self.spec, cidr)}
        missing = [port for port in self.spec.ports if port not in existing]
        if missing:
            self._authorize(cidr, missing, order, lease_tag)
        for rule in existing.values():
            if not _is_managed(rule):
                # Someone holds this access permanently; it is not ours to tag or to remove.
                continue
            self._call(
                "ec2:CreateTags", self.ec2.create_tags, Resources=[rule["SecurityGroupRuleId"]], Tags=[lease_tag]
            )
            self._describe(rule, [*_leases(rule), _lease_of(lease_tag)])
        return [obj for obj in self.list_managed() if order.request_id in obj.request_ids()]

    def list_managed(self) -> list[ManagedObject]:
        return _ingress_managed(self._rules(), self.spec)

    def objects_for(self, request_id: str) -> list[ManagedObject]:
        """The rules holding one request's lease: a tag filter, so AWS sends those rules and not the whole group."""
        lease_filter = {"Name": f"tag:{markers.lease_key(request_id)}", "Values": ["*"]}
        return _ingress_managed(self._rules(extra_filters=[lease_filter]), self.spec)

    def read(self, ref: str) -> ManagedObject | None:
        rule = self._rule(ref)
        return _managed(rule, self.spec) if rule is not None and _is_managed(rule) else None

    def restore(self, now: datetime) -> list[str]:
        """Nothing to restore: the leases live on the rules themselves."""
        return []

    def snapshot(self, order: GrantOrder) -> Entries:
        """The group's ingress rules other than jit-lb's: what each admits, and its id and description."""
        where = f"security group {self.spec.security_group_id}"
        return {
            f"{where}: ingress {_admits(rule)}": _rule_state(rule)
            for rule in self._rules()
            if not rule["IsEgress"] and not _is_managed(rule)
        }

    def use_of(self, cidr: str) -> Use | None:
        """Not counted: a security group keeps no per-source counts (VPC flow logs would; see docs/policy.md)."""
        return None

    def drop(self, obj: ManagedObject, request_ids: set[str], fresh: bool = False) -> bool:
        if fresh and not obj.request_ids() - request_ids:
            # Read under the lock just now and no other lease on it: delete without reading it again.
            self._revoke(obj.ref)
            return True
        rule = self._rule(obj.ref)
        if rule is None:
            return True
        remaining = [lease for lease in _leases(rule) if lease.request_id not in request_ids]
        if not remaining:
            self._revoke(obj.ref)
            return True
        gone = [
            {"Key": markers.lease_key(rid)}
            for rid in request_ids
            if rid in {lease.request_id for lease in _leases(rule)}
        ]
        if gone:
            self._call("ec2:DeleteTags", self.ec2.delete_tags, Resources=[obj.ref], Tags=gone)
        self._describe(rule, remaining)
        return False

    def drop_all(self, objects: list[ManagedObject]) -> int:
        """Delete many rules of the group in one RevokeSecurityGroupIngress a hundred (a lockdown: 50 rules in ~16 ms,
        where one call a rule takes ~19 ms each)."""
        batches = [objects[start : start + REVOKE_BATCH] for start in range(0, len(objects), REVOKE_BATCH)]
        return drop_in_batches(lambda batch: self._revoke_batch([obj.ref for obj in batch]), batches, 1)

    def _revoke_batch(self, batch: list[str]) -> None:
        """One call for the batch. AWS refuses the whole call when one rule is gone already (a grant's own revoke took
        it meanwhile): those still there are read back and revoked together again, a few times, then one by one
        (at a region's ~50 ms a call, 50 rules one by one would take 2.5 s)."""
        left = batch
        for _ in range(REVOKE_ATTEMPTS):
            with aws.translated("ec2:RevokeSecurityGroupIngress", self._where, passing=_REVOKED) as passed:
                self.ec2.revoke_security_group_ingress(GroupId=self.spec.security_group_id, SecurityGroupRuleIds=left)
            if not passed:
                return
            wanted = [{"Name": "security-group-rule-id", "Values": left}]
            present = {rule["SecurityGroupRuleId"] for rule in self._rules(extra_filters=wanted)}
            left = [rule_id for rule_id in left if rule_id in present]
            if not left:
                return
        for rule_id in left:
            self._revoke(rule_id)

    def _revoke(self, rule_id: str) -> None:
        """Delete one ingress rule by id; a rule already gone counts as deleted."""
        with aws.translated("ec2:RevokeSecurityGroupIngress", self._where, passing=_REVOKED):
            self.ec2.revoke_security_group_ingress(GroupId=self.spec.security_group_id, SecurityGroupRuleIds=[rule_id])

    def _authorize(self, cidr: str, ports: list[int], order: GrantOrder, lease_tag: dict[str, str]) -> None:
        description = _description([_lease_of(lease_tag)])
        ranges_key, cidr_key = ("Ipv6Ranges", "CidrIpv6") if ":" in cidr else ("IpRanges", "CidrIp")
        permissions = [
            {
                "IpProtocol": self.spec.protocol,
                "FromPort": port,
                "ToPort": port,
                ranges_key: [{cidr_key: cidr, "Description": description}],
            }
            for port in ports
        ]
        tags = [{"Key": markers.MANAGED_TAG, "Value": markers.MANAGED_VALUE}, lease_tag]
        self._call(
            "ec2:AuthorizeSecurityGroupIngress",
            self.ec2.authorize_security_group_ingress,
            GroupId=self.spec.security_group_id,
            IpPermissions=permissions,
            TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": tags}],
        )

    def _describe(self, rule: dict[str, Any], leases: list[Lease]) -> None:
        """Keep the rule's description naming the lease that ends last, for people reading the console.

        The rule is written back as it is (protocol, ports, source), so that a rule unlike the spec stays
        as it was; one that admits a group or prefix list rather than a CIDR keeps its description.
        """
        cidr_key = "CidrIpv6" if rule.get("CidrIpv6") else "CidrIpv4"
        if not rule.get(cidr_key):
            return
        changed: dict[str, Any] = {
            "IpProtocol": rule["IpProtocol"],
            "FromPort": rule["FromPort"],
            "ToPort": rule["ToPort"],
            cidr_key: rule[cidr_key],
            "Description": _description(leases),
        }
        self._call(
            "ec2:ModifySecurityGroupRules",
            self.ec2.modify_security_group_rules,
            GroupId=self.spec.security_group_id,
            SecurityGroupRules=[{"SecurityGroupRuleId": rule["SecurityGroupRuleId"], "SecurityGroupRule": changed}],
        )

    def _rules(self, extra_filters: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The group's rules (those matching `extra_filters` too); with none found, check that the group exists."""
        rules: list[dict[str, Any]] = []
        filters = [{"Name": "group-id", "Values": [self.spec.security_group_id]}, *(extra_filters or [])]
        kwargs: dict[str, Any] = {"Filters": filters}
        while True:
            page = self._call("ec2:DescribeSecurityGroupRules", self.ec2.describe_security_group_rules, **kwargs)
            rules.extend(r for r in page["SecurityGroupRules"] if r["GroupId"] == self.spec.security_group_id)
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        if not rules:
            self._ensure_group_exists()
        return rules

    def _rule(self, rule_id: str) -> dict[str, Any] | None:
        """One rule by its id, or None when it is gone."""
        with aws.translated("ec2:DescribeSecurityGroupRules", self._where, passing=_NO_RULE) as passed:
            page = self.ec2.describe_security_group_rules(SecurityGroupRuleIds=[rule_id])
        if passed:
            return None
        return next((r for r in page["SecurityGroupRules"] if r["GroupId"] == self.spec.security_group_id), None)

    def _ensure_group_exists(self) -> None:
        self._call(
            "ec2:DescribeSecurityGroups", self.ec2.describe_security_groups, GroupIds=[self.spec.security_group_id]
        )

    def _call(self, action: str, method: Any, **kwargs: Any) -> Any:
        """Call the EC2 API with errors in words, naming the group when it is missing."""
        with aws.translated(action, self._where, explain=self._explain):
            return method(**kwargs)

    def _explain(self, code: str) -> ProviderError | None:
        return ProviderError(f"{self._where.capitalize()} not found") if code in _NO_GROUP else None


def _scope(spec: SecurityGroupGrant, cidr: str | None) -> str:
    return f"{KIND}:{spec.region}:{spec.security_group_id}:{cidr}"


def _matches(rule: dict[str, Any], spec: SecurityGroupGrant, cidr: str) -> bool:
    return (
        not rule["IsEgress"]
        and rule["IpProtocol"] == spec.protocol
        and rule["FromPort"] == rule["ToPort"]
        and rule["FromPort"] in spec.ports
        and cidr in {rule.get("CidrIpv4"), rule.get("CidrIpv6")}
    )


def _is_managed(rule: dict[str, Any]) -> bool:
    return markers.is_managed(aws.tag_map(rule.get("Tags", [])))


def _lease_of(tag: dict[str, str]) -> Lease:
    return markers.read_lease(tag["Key"].removeprefix(markers.LEASE_TAG), tag["Value"])


def _leases(rule: dict[str, Any]) -> list[Lease]:
    return markers.read_leases(aws.tag_map(rule.get("Tags", [])))


def _description(held: list[Lease]) -> str:
    last = max(held, key=lambda lease: lease.ends_at)
    more = f" +{len(held) - 1}" if len(held) > 1 else ""
    return f"{markers.MARKER_PREFIX} {last.request_id}{more} until {markers.format_time(last.ends_at)}"


def _source(rule: dict[str, Any]) -> str | None:
    """The CIDR a rule admits; None for a rule that admits a security group or a prefix list instead."""
    cidr = rule.get("CidrIpv4") or rule.get("CidrIpv6")
    return str(cidr) if cidr else None


def _ports(rule: dict[str, Any]) -> str:
    low, high = rule.get("FromPort"), rule.get("ToPort")
    return str(low) if low == high else f"{low}-{high}"


def _admits(rule: dict[str, Any]) -> str:
    """What an ingress rule lets in, in words: `tcp/22 from 10.0.0.0/8`, `all traffic from sg-0abc`."""
    protocol = str(rule.get("IpProtocol"))
    if protocol == "-1":
        traffic = "all traffic"
    elif rule.get("FromPort") in {None, -1}:
        traffic = f"{protocol} (all ports)"
    else:
        traffic = f"{protocol}/{_ports(rule)}"
    source = (
        _source(rule)
        or rule.get("ReferencedGroupInfo", {}).get("GroupId")
        or rule.get("PrefixListId")
        or "an unnamed source"
    )
    return f"{traffic} from {source}"


def _rule_state(rule: dict[str, Any]) -> str:
    """A rule's id and description, as a snapshot records it: a rule re-made by hand shows as changed."""
    description = str(rule.get("Description") or "")
    return f"rule {rule['SecurityGroupRuleId']}" + (f" ({markers.shown(description)})" if description else "")


def _anomaly(rule: dict[str, Any], spec: SecurityGroupGrant) -> str:
    """How a rule carrying our marker differs from the rules this spec makes, or "" when it does not."""
    reasons: list[str] = []
    protocol = str(rule.get("IpProtocol"))
    if protocol != spec.protocol:
        reasons.append(f"protocol {'all' if protocol == '-1' else protocol}, not {spec.protocol}")
    if rule.get("FromPort") != rule.get("ToPort") or rule.get("FromPort") not in spec.ports:
        reasons.append(f"port {_ports(rule)}, not one of {', '.join(map(str, spec.ports))}")
    cidr = _source(rule)
    if cidr is None:
        admits = rule.get("ReferencedGroupInfo", {}).get("GroupId") or rule.get("PrefixListId") or "something"
        reasons.append(f"it admits {admits} rather than a CIDR")
    else:
        reasons.append(markers.cidr_anomaly(cidr))
    reasons.append(markers.lease_anomaly(_leases(rule)))
    return markers.join_anomalies(*reasons)


def _managed(rule: dict[str, Any], spec: SecurityGroupGrant) -> ManagedObject:
    cidr = _source(rule)
    return ManagedObject(
        kind=KIND,
        ref=rule["SecurityGroupRuleId"],
        description=f"{rule['SecurityGroupRuleId']} on {spec.security_group_id}: "
        f"{rule.get('IpProtocol')}/{_ports(rule)} from {cidr}",
        leases=tuple(_leases(rule)),
        scope=_scope(spec, cidr),
        anomaly=_anomaly(rule, spec),
    )


def _ingress_managed(rules: list[dict[str, Any]], spec: SecurityGroupGrant) -> list[ManagedObject]:
    return [_managed(rule, spec) for rule in rules if _is_managed(rule) and not rule["IsEgress"]]
