"""Security-group grants: one ingress rule per port for the principal's CIDR, leases in rule tags."""

from __future__ import annotations

import ipaddress
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.access.policy import SecurityGroupGrant
from workers.providers import aws
from workers.providers.base import (
    MARKER_PREFIX,
    GrantOrder,
    Lease,
    ManagedObject,
    ProviderError,
    format_time,
    parse_time,
)

MANAGED_TAG = f"{MARKER_PREFIX}:managed"
LEASE_TAG = f"{MARKER_PREFIX}:lease:"


class SecurityGroupProvider:
    """Ingress rules on one security group; each rule's tags hold a lease per request it serves."""

    def __init__(self, spec: SecurityGroupGrant) -> None:
        self.spec = spec
        self.ec2 = aws.client("ec2", spec.region)
        self._where = f"security group {spec.security_group_id} in {spec.region}"

    def scope(self, order: GrantOrder) -> str:
        return f"aws_security_group:{self.spec.region}:{self.spec.security_group_id}:{_require_cidr(order)}"

    def apply(self, order: GrantOrder) -> list[ManagedObject]:
        cidr = _require_cidr(order)
        lease_tag = {"Key": LEASE_TAG + order.request_id, "Value": format_time(order.ends_at)}
        existing = {rule["FromPort"]: rule for rule in self._rules() if _matches(rule, self.spec, cidr)}
        missing = [port for port in self.spec.ports if port not in existing]
        if missing:
            self._authorize(cidr, missing, order, lease_tag)
        for port, rule in existing.items():
            if not _is_managed(rule):
                # Someone holds this access permanently; it is not ours to tag or to remove.
                continue
            self._call(
                "ec2:CreateTags", self.ec2.create_tags, Resources=[rule["SecurityGroupRuleId"]], Tags=[lease_tag]
            )
            self._describe(rule["SecurityGroupRuleId"], cidr, port, [*_leases(rule), _lease_of(lease_tag)])
        return [obj for obj in self.list_managed() if order.request_id in obj.request_ids()]

    def list_managed(self) -> list[ManagedObject]:
        return [_managed(rule, self.spec) for rule in self._rules() if _is_managed(rule) and not rule["IsEgress"]]

    def objects_for(self, request_id: str) -> list[ManagedObject]:
        """The rules holding one request's lease: a tag filter, so AWS sends those rules and not the whole group."""
        lease_filter = {"Name": f"tag:{LEASE_TAG}{request_id}", "Values": ["*"]}
        rules = self._rules(extra_filters=[lease_filter])
        return [_managed(rule, self.spec) for rule in rules if _is_managed(rule) and not rule["IsEgress"]]

    def read(self, ref: str) -> ManagedObject | None:
        rule = self._rule(ref)
        return _managed(rule, self.spec) if rule is not None and _is_managed(rule) else None

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
        gone = [{"Key": LEASE_TAG + rid} for rid in request_ids if rid in {lease.request_id for lease in _leases(rule)}]
        if gone:
            self._call("ec2:DeleteTags", self.ec2.delete_tags, Resources=[obj.ref], Tags=gone)
        self._describe(obj.ref, rule["CidrIpv4"] or rule["CidrIpv6"], rule["FromPort"], remaining)
        return False

    def _revoke(self, rule_id: str) -> None:
        """Delete one ingress rule by id; a rule already gone counts as deleted."""
        try:
            self.ec2.revoke_security_group_ingress(GroupId=self.spec.security_group_id, SecurityGroupRuleIds=[rule_id])
        except ClientError as err:
            if aws.error_code(err) not in {"InvalidPermission.NotFound", "InvalidSecurityGroupRuleId.NotFound"}:
                raise aws.provider_error(err, "ec2:RevokeSecurityGroupIngress", self._where) from None
        except BotoCoreError as err:
            raise aws.provider_error(err, "ec2:RevokeSecurityGroupIngress", self._where) from None

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
        tags = [{"Key": MANAGED_TAG, "Value": "true"}, lease_tag]
        self._call(
            "ec2:AuthorizeSecurityGroupIngress",
            self.ec2.authorize_security_group_ingress,
            GroupId=self.spec.security_group_id,
            IpPermissions=permissions,
            TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": tags}],
        )

    def _describe(self, rule_id: str, cidr: str, port: int, leases: list[Lease]) -> None:
        """Keep the rule's description naming the lease that ends last, for people reading the console."""
        cidr_key = "CidrIpv6" if ":" in cidr else "CidrIpv4"
        rule: dict[str, Any] = {
            "IpProtocol": self.spec.protocol,
            "FromPort": port,
            "ToPort": port,
            cidr_key: cidr,
            "Description": _description(leases),
        }
        self._call(
            "ec2:ModifySecurityGroupRules",
            self.ec2.modify_security_group_rules,
            GroupId=self.spec.security_group_id,
            SecurityGroupRules=[{"SecurityGroupRuleId": rule_id, "SecurityGroupRule": rule}],
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
        try:
            page = self.ec2.describe_security_group_rules(SecurityGroupRuleIds=[rule_id])
        except ClientError as err:
            if aws.error_code(err) in {"InvalidSecurityGroupRuleId.NotFound", "InvalidSecurityGroupRuleId.Malformed"}:
                return None
            raise aws.provider_error(err, "ec2:DescribeSecurityGroupRules", self._where) from None
        except BotoCoreError as err:
            raise aws.provider_error(err, "ec2:DescribeSecurityGroupRules", self._where) from None
        return next((r for r in page["SecurityGroupRules"] if r["GroupId"] == self.spec.security_group_id), None)

    def _ensure_group_exists(self) -> None:
        self._call(
            "ec2:DescribeSecurityGroups", self.ec2.describe_security_groups, GroupIds=[self.spec.security_group_id]
        )

    def _call(self, action: str, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except ClientError as err:
            if aws.error_code(err) in {"InvalidGroup.NotFound", "InvalidGroupId.Malformed"}:
                raise ProviderError(f"{self._where.capitalize()} not found") from None
            raise aws.provider_error(err, action, self._where) from None
        except BotoCoreError as err:
            raise aws.provider_error(err, action, self._where) from None


def _require_cidr(order: GrantOrder) -> str:
    if not order.cidr:
        raise ProviderError(f"request {order.request_id} has no source CIDR for a security-group grant")
    return str(ipaddress.ip_network(order.cidr))


def _matches(rule: dict[str, Any], spec: SecurityGroupGrant, cidr: str) -> bool:
    return (
        not rule["IsEgress"]
        and rule["IpProtocol"] == spec.protocol
        and rule["FromPort"] == rule["ToPort"]
        and rule["FromPort"] in spec.ports
        and cidr in {rule.get("CidrIpv4"), rule.get("CidrIpv6")}
    )


def _tags(rule: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in rule.get("Tags", [])}


def _is_managed(rule: dict[str, Any]) -> bool:
    return _tags(rule).get(MANAGED_TAG) == "true"


def _lease_of(tag: dict[str, str]) -> Lease:
    return Lease(request_id=tag["Key"].removeprefix(LEASE_TAG), ends_at=parse_time(tag["Value"]))


def _leases(rule: dict[str, Any]) -> list[Lease]:
    leases = []
    for key, value in _tags(rule).items():
        if key.startswith(LEASE_TAG):
            try:
                leases.append(Lease(request_id=key.removeprefix(LEASE_TAG), ends_at=parse_time(value)))
            except ValueError:
                # A lease whose end cannot be read has ended: fail closed.
                leases.append(Lease(request_id=key.removeprefix(LEASE_TAG), ends_at=parse_time("1970-01-01T00:00:00Z")))
    return leases


def _description(leases: list[Lease]) -> str:
    last = max(leases, key=lambda lease: lease.ends_at)
    more = f" +{len(leases) - 1}" if len(leases) > 1 else ""
    return f"{MARKER_PREFIX} {last.request_id}{more} until {format_time(last.ends_at)}"


def _managed(rule: dict[str, Any], spec: SecurityGroupGrant) -> ManagedObject:
    cidr = rule.get("CidrIpv4") or rule.get("CidrIpv6")
    return ManagedObject(
        kind="aws_security_group",
        ref=rule["SecurityGroupRuleId"],
        description=f"{rule['SecurityGroupRuleId']} on {spec.security_group_id}: "
        f"{rule['IpProtocol']}/{rule['FromPort']} from {cidr}",
        leases=tuple(_leases(rule)),
        scope=f"aws_security_group:{spec.region}:{spec.security_group_id}:{cidr}",
    )
