"""The security-group provider against moto: rules, leases in tags, overlap, idempotence, errors in words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devtools.moto_server import MotoServer, seed_security_group
from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import SecurityGroupGrant
from workers.providers import aws_sg
from workers.providers.aws_sg import SecurityGroupProvider
from workers.providers.base import GrantOrder, ManagedObject, PartialDropError, objects_of

NOW = datetime.now(UTC).replace(microsecond=0)
CIDR = "203.0.113.7/32"


@pytest.fixture(name="spec")
def fixture_spec(moto: MotoServer) -> SecurityGroupGrant:
    network = seed_security_group(moto, name=f"sg-test-{datetime.now(UTC).timestamp()}")
    return SecurityGroupGrant(
        kind="aws_security_group", region="us-east-1", security_group_id=network.security_group_id, ports=[443, 8443]
    )


def order(spec: SecurityGroupGrant, request_id: str, minutes: int = 10, cidr: str = CIDR) -> GrantOrder:
    return GrantOrder(request_id, "lb-prod", spec, NOW + timedelta(minutes=minutes), cidr=cidr)


def ingress(moto: MotoServer, spec: SecurityGroupGrant) -> list[dict[str, Any]]:
    rules = moto.client("ec2").describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": [spec.security_group_id]}]
    )["SecurityGroupRules"]
    return [rule for rule in rules if not rule["IsEgress"]]


def test_apply_creates_one_tagged_rule_per_port(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """Applying creates one ingress rule per port, each marked with the request id and its end."""
    objects = SecurityGroupProvider(spec).apply(order(spec, "jit-aaaaaa"))
    rules = ingress(moto, spec)
    assert sorted(rule["FromPort"] for rule in rules) == [443, 8443]
    for rule in rules:
        tags = {tag["Key"]: tag["Value"] for tag in rule["Tags"]}
        assert (NOW + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ") == tags["jit-lb:lease:jit-aaaaaa"]
        assert "jit-lb jit-aaaaaa until" in rule["Description"]
    assert {rule["SecurityGroupRuleId"] for rule in rules} == {obj.ref for obj in objects}


def test_apply_twice_makes_one_set_of_rules(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """A retried grant job does not duplicate rules."""
    provider = SecurityGroupProvider(spec)
    provider.apply(order(spec, "jit-aaaaaa"))
    provider.apply(order(spec, "jit-aaaaaa"))
    assert len(ingress(moto, spec)) == 2


@pytest.mark.parametrize("fresh", [False, True])
def test_overlapping_grants_share_rules_until_the_last_ends(
    moto: MotoServer, spec: SecurityGroupGrant, fresh: bool
) -> None:
    """Two grants for the same CIDR share the rules; the first to end leaves access for the other.

    `fresh` is how a revoke drops (objects read under its lock just now): the other lease still counts.
    """
    provider = SecurityGroupProvider(spec)
    provider.apply(order(spec, "jit-aaaaaa", minutes=5))
    provider.apply(order(spec, "jit-bbbbbb", minutes=20))
    assert len(ingress(moto, spec)) == 2
    for obj in objects_of(provider, "jit-aaaaaa"):
        assert provider.drop(obj, {"jit-aaaaaa"}, fresh=fresh) is False
    rules = ingress(moto, spec)
    assert len(rules) == 2
    assert all("jit-bbbbbb" in rule["Description"] for rule in rules)
    assert all("jit-lb:lease:jit-aaaaaa" not in {tag["Key"] for tag in rule["Tags"]} for rule in rules)
    for obj in objects_of(provider, "jit-bbbbbb"):
        assert provider.drop(obj, {"jit-bbbbbb"}, fresh=fresh) is True
    assert ingress(moto, spec) == []


def test_a_requests_rules_are_found_by_its_lease_tag(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """A revoke asks AWS for the rules carrying its lease tag: exactly that request's rules, no other's."""
    provider = SecurityGroupProvider(spec)
    mine = provider.apply(order(spec, "jit-aaaaaa"))
    provider.apply(order(spec, "jit-bbbbbb", cidr="198.51.100.9/32"))
    found = objects_of(provider, "jit-aaaaaa")
    assert sorted(obj.ref for obj in found) == sorted(obj.ref for obj in mine)
    listed = [obj for obj in provider.list_managed() if "jit-aaaaaa" in obj.request_ids()]
    assert sorted(obj.ref for obj in found) == sorted(obj.ref for obj in listed)
    assert objects_of(provider, "jit-cccccc") == []


class _BlindQuery(SecurityGroupProvider):
    """A load balancer that reads the lease-tag filter differently and answers it with nothing."""

    def objects_for(self, request_id: str) -> list[ManagedObject]:
        return []


def test_a_query_that_finds_nothing_falls_back_to_the_listing(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """If the tag filter ever came back empty, the revoke still finds the rules by listing the group."""
    mine = SecurityGroupProvider(spec).apply(order(spec, "jit-aaaaaa"))
    found = objects_of(_BlindQuery(spec), "jit-aaaaaa")
    assert sorted(obj.ref for obj in found) == sorted(obj.ref for obj in mine)


def test_read_back_after_a_fresh_drop_finds_nothing(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """The revoke's verification: each rule it deleted, read back by id, is gone; the other grant's is not."""
    provider = SecurityGroupProvider(spec)
    mine = provider.apply(order(spec, "jit-aaaaaa"))
    theirs = provider.apply(order(spec, "jit-bbbbbb", cidr="198.51.100.9/32"))
    assert all(provider.drop(obj, {"jit-aaaaaa"}, fresh=True) for obj in mine)
    assert [provider.read(obj.ref) for obj in mine] == [None, None]
    still = [provider.read(obj.ref) for obj in theirs]
    assert all(obj is not None and obj.request_ids() == {"jit-bbbbbb"} for obj in still)
    assert len(ingress(moto, spec)) == 2


def test_dropping_what_is_gone_succeeds(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """Removing a rule someone already deleted by hand is a success, not an error."""
    provider = SecurityGroupProvider(spec)
    objects = provider.apply(order(spec, "jit-aaaaaa"))
    moto.client("ec2").revoke_security_group_ingress(
        GroupId=spec.security_group_id, SecurityGroupRuleIds=[obj.ref for obj in objects]
    )
    assert all(provider.drop(obj, {"jit-aaaaaa"}) for obj in objects)


def test_permanent_rule_is_neither_tagged_nor_removed(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """A hand-made rule for the same CIDR and port is not ours: the grant leaves it alone."""
    moto.client("ec2").authorize_security_group_ingress(
        GroupId=spec.security_group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": CIDR}]}],
    )
    provider = SecurityGroupProvider(spec)
    provider.apply(order(spec, "jit-aaaaaa"))
    for obj in objects_of(provider, "jit-aaaaaa"):
        provider.drop(obj, {"jit-aaaaaa"})
    rules = ingress(moto, spec)
    assert [rule["FromPort"] for rule in rules] == [443]
    assert "Tags" not in rules[0] or not rules[0]["Tags"]


def test_missing_group_is_a_sentence(moto: MotoServer) -> None:
    """A security group that does not exist is named in the error, in words."""
    spec = SecurityGroupGrant(kind="aws_security_group", region="us-east-1", security_group_id="sg-0ffff", ports=[443])
    with pytest.raises(ProviderError, match=r"Security group sg-0ffff in us-east-1 not found"):
        SecurityGroupProvider(spec).apply(order(spec, "jit-aaaaaa"))


def test_partial_apply_is_visible_for_rollback(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """When AWS refuses the second port (rule limit), the rule it did add carries our lease for the rollback."""
    ec2 = moto.client("ec2")
    for index in range(59):  # one short of the 60 ingress rules a VPC security group may hold
        ec2.authorize_security_group_ingress(
            GroupId=spec.security_group_id,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 10000 + index,
                    "ToPort": 10000 + index,
                    "IpRanges": [{"CidrIp": "192.0.2.0/24"}],
                }
            ],
        )
    provider = SecurityGroupProvider(spec)
    with pytest.raises(ProviderError, match="RulesPerSecurityGroupLimitExceeded"):
        provider.apply(order(spec, "jit-aaaaaa"))
    for obj in objects_of(provider, "jit-aaaaaa"):
        provider.drop(obj, {"jit-aaaaaa"})
    assert [rule for rule in ingress(moto, spec) if rule.get("CidrIpv4") == CIDR] == []


def test_objects_name_the_scope_grants_lock(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """A rule as listed names the same lock scope as the grant that made it, so the sweep and grants serialise."""
    provider = SecurityGroupProvider(spec)
    grant = order(spec, "jit-aaaaaa")
    objects = provider.apply(grant)
    assert {provider.scope(grant)} == {obj.scope for obj in objects}


def tagged_rule(
    moto: MotoServer,
    spec: SecurityGroupGrant,
    port: int,
    cidr: str = CIDR,
    protocol: str = "tcp",
    lease_ids: tuple[str, ...] = ("jit-hhhhhh",),
) -> str:
    """A rule someone made by hand and tagged with jit-lb's marker and leases."""
    end = (NOW + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tags = [{"Key": "jit-lb:managed", "Value": "true"}] + [
        {"Key": f"jit-lb:lease:{rid}", "Value": end} for rid in lease_ids
    ]
    ranges = {"Ipv6Ranges": [{"CidrIpv6": cidr}]} if ":" in cidr else {"IpRanges": [{"CidrIp": cidr}]}
    created = moto.client("ec2").authorize_security_group_ingress(
        GroupId=spec.security_group_id,
        IpPermissions=[{"IpProtocol": protocol, "FromPort": port, "ToPort": port, **ranges}],
        TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": tags}],
    )
    return str(created["SecurityGroupRules"][0]["SecurityGroupRuleId"])


def test_a_hand_tagged_rule_on_another_port_is_listed_with_an_anomaly(
    moto: MotoServer, spec: SecurityGroupGrant
) -> None:
    """A rule marked as ours on a port the spec does not name is listed with why; the grant's own rules conform."""
    provider = SecurityGroupProvider(spec)
    mine = provider.apply(order(spec, "jit-aaaaaa"))
    odd = tagged_rule(moto, spec, 22)

    listed = {obj.ref: obj for obj in provider.list_managed()}

    assert listed[odd].anomaly == "port 22, not one of 443, 8443"
    assert listed[odd].request_ids() == {"jit-hhhhhh"}
    assert {obj.ref: "" for obj in mine} == {obj.ref: listed[obj.ref].anomaly for obj in mine}


@pytest.mark.parametrize(
    ("cidr", "protocol", "anomaly"),
    [
        ("0.0.0.0/0", "tcp", "its source 0.0.0.0/0 is wider than any grant opens (/8 or narrower)"),
        ("::/0", "tcp", "its source ::/0 is wider than any grant opens (/32 or narrower)"),
        (CIDR, "udp", "protocol udp, not tcp"),
    ],
    ids=["whole-ipv4-internet", "whole-ipv6-internet", "other-protocol"],
)
def test_a_hand_tagged_rule_unlike_the_spec_is_an_anomaly(
    moto: MotoServer, spec: SecurityGroupGrant, cidr: str, protocol: str, anomaly: str
) -> None:
    """A rule marked as ours open to the whole internet, or on another protocol, is listed with why."""
    odd = tagged_rule(moto, spec, 443, cidr=cidr, protocol=protocol)
    [listed] = SecurityGroupProvider(spec).list_managed()
    assert (listed.ref, listed.anomaly) == (odd, anomaly)


def test_a_lease_with_a_bad_request_id_is_an_anomaly_not_an_error(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """A lease tag naming no request id makes that rule an anomaly; the listing still returns every rule."""
    provider = SecurityGroupProvider(spec)
    first, second = provider.apply(order(spec, "jit-aaaaaa"))
    end = (NOW + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    moto.client("ec2").create_tags(Resources=[first.ref], Tags=[{"Key": "jit-lb:lease:../../etc", "Value": end}])

    listed = {obj.ref: obj for obj in provider.list_managed()}

    assert listed[first.ref].anomaly == "a lease names `../../etc`, not a request id"
    assert listed[second.ref].anomaly == ""


def test_a_marked_rule_with_no_lease_is_listed_without_leases(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """A rule carrying our marker and no lease is returned with empty leases, and no anomaly on that count."""
    bare = tagged_rule(moto, spec, 443, lease_ids=())
    [listed] = SecurityGroupProvider(spec).list_managed()
    assert (listed.ref, listed.leases, listed.anomaly) == (bare, (), "")


def test_dropping_a_lease_keeps_an_odd_rule_as_it_was(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """Removing one lease from a rule unlike the spec rewrites only its description, not its protocol or port."""
    odd = tagged_rule(moto, spec, 22, protocol="udp", lease_ids=("jit-hhhhhh", "jit-kkkkkk"))
    provider = SecurityGroupProvider(spec)
    [obj] = provider.list_managed()

    assert provider.drop(obj, {"jit-hhhhhh"}) is False

    [rule] = ingress(moto, spec)
    assert (rule["SecurityGroupRuleId"], rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == (odd, "udp", 22, 22)
    assert "jit-lb jit-kkkkkk until" in rule["Description"]


def test_drop_all_removes_many_rules_and_survives_one_gone_already(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """A lockdown's batch delete removes every listed rule, even when one of them was removed meanwhile."""
    provider = SecurityGroupProvider(spec)
    for index in range(6):
        provider.apply(order(spec, f"jit-aaaaa{index}", cidr=f"203.0.113.{10 + index}/32"))
    objects = provider.list_managed()
    assert len(objects) == 12
    provider.drop(objects[0], objects[0].request_ids(), fresh=True)  # a revoke job got there first
    assert provider.drop_all(objects) == 12
    assert ingress(moto, spec) == []


def test_a_batch_with_a_rule_gone_already_is_revoked_again_together(moto: MotoServer, spec: SecurityGroupGrant) -> None:
    """When a grant's own revoke took one rule of a batch first (AWS then refuses the whole call), the rules still
    there go in one more call, not one call a rule: at a region's 50 ms a call, 50 rules one by one take 2.5 s."""
    provider = SecurityGroupProvider(spec)
    for index in range(6):
        provider.apply(order(spec, f"jit-bbbbb{index}", cidr=f"203.0.113.{20 + index}/32"))
    objects = provider.list_managed()
    provider.drop(objects[0], objects[0].request_ids(), fresh=True)  # a revoke job got there first
    calls: list[str] = []

    def count(**_: object) -> None:
        calls.append("revoke")

    event = "before-call.ec2.RevokeSecurityGroupIngress"
    provider.ec2.meta.events.register(event, count)
    try:
        assert provider.drop_all(objects) == 12
    finally:
        provider.ec2.meta.events.unregister(event, count)
    assert ingress(moto, spec) == []
    assert calls == ["revoke", "revoke"]


def test_drop_all_tries_every_batch_when_aws_refuses_one(
    moto: MotoServer, spec: SecurityGroupGrant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused RevokeSecurityGroupIngress stops none of the other batches: their rules are gone and named as removed,
    the refused batch's rules named as not (before: the first refusal left every later batch in place, unrecorded)."""
    monkeypatch.setattr(aws_sg, "REVOKE_BATCH", 4)
    provider = SecurityGroupProvider(spec)
    for index in range(6):
        provider.apply(order(spec, f"jit-ddddd{index}", cidr=f"203.0.113.{30 + index}/32"))
    objects = provider.list_managed()
    first = {obj.ref for obj in objects[:4]}

    def refuse_first(params: dict[str, Any], **_: Any) -> None:
        if first & set(params.get("SecurityGroupRuleIds", [])):
            raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "Revoke")

    provider.ec2 = moto.client("ec2")  # a client of this test's own: the provider's is shared by the process
    provider.ec2.meta.events.register("before-parameter-build.ec2.RevokeSecurityGroupIngress", refuse_first)
    with pytest.raises(PartialDropError, match="4 of 12 objects not removed; the first: RequestLimitExceeded") as err:
        provider.drop_all(objects)
    assert {rule["SecurityGroupRuleId"] for rule in ingress(moto, spec)} == first
    assert {obj.ref for obj, _ in err.value.failed} == first
    assert len(err.value.removed) == 8
