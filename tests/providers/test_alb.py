"""The listener-rule provider against moto: source-ip rules, leases in tags, shared rules, priorities, limits."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from devtools.moto_server import Alb, MotoServer, seed_load_balancer
from devtools.ports import free_port
from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import ListenerRuleGrant
from workers.providers.aws_alb import ListenerRuleProvider
from workers.providers.base import GrantOrder, Lease, ManagedObject, PartialDropError, objects_of
from workers.providers.markers import format_time

NOW = datetime.now(UTC).replace(microsecond=0)
CIDR = "203.0.113.7/32"


@pytest.fixture(name="alb")
def fixture_alb(moto: MotoServer) -> Alb:
    """A fresh ALB per test, named uniquely, so that tests sharing the moto server do not see each other's rules."""
    return seed_load_balancer(moto)


def grant(alb: Alb, **fields: Any) -> ListenerRuleGrant:
    return ListenerRuleGrant(
        kind="aws_alb_listener_rule",
        region="us-east-1",
        listener_arn=alb.listener_arn,
        target_group_arn=alb.target_group_arn,
        **fields,
    )


@pytest.fixture(name="spec")
def fixture_spec(alb: Alb) -> ListenerRuleGrant:
    return grant(alb, priority_range=(49000, 49999))


def order(spec: ListenerRuleGrant, request_id: str, minutes: int = 10, cidr: str = CIDR) -> GrantOrder:
    return GrantOrder(request_id, "lb-prod", spec, NOW + timedelta(minutes=minutes), cidr=cidr)


def rules(moto: MotoServer, alb: Alb) -> list[dict[str, Any]]:
    """The listener's rules other than the default one, each with its tags under `Tags`."""
    elbv2 = moto.client("elbv2")
    found = [rule for rule in elbv2.describe_rules(ListenerArn=alb.listener_arn)["Rules"] if not rule["IsDefault"]]
    if found:
        tags = elbv2.describe_tags(ResourceArns=[rule["RuleArn"] for rule in found])["TagDescriptions"]
        by_arn = {item["ResourceArn"]: {tag["Key"]: tag["Value"] for tag in item["Tags"]} for item in tags}
        for rule in found:
            rule["Tags"] = by_arn[rule["RuleArn"]]
    return found


def hand_made_rule(moto: MotoServer, alb: Alb, priority: int, cidr: str = CIDR) -> str:
    """A rule someone created outside jit-lb, without our marker."""
    return str(
        moto.client("elbv2").create_rule(
            ListenerArn=alb.listener_arn,
            Priority=priority,
            Conditions=[{"Field": "source-ip", "SourceIpConfig": {"Values": [cidr]}}],
            Actions=[{"Type": "forward", "TargetGroupArn": alb.target_group_arn}],
        )["Rules"][0]["RuleArn"]
    )


def test_apply_creates_a_tagged_source_ip_rule(moto: MotoServer, alb: Alb, spec: ListenerRuleGrant) -> None:
    """Applying creates one rule forwarding the CIDR to the target group, marked with the request id and its end."""
    objects = ListenerRuleProvider(spec).apply(order(spec, "jit-aaaaaa"))
    [rule] = rules(moto, alb)
    assert rule["Conditions"] == [{"Field": "source-ip", "SourceIpConfig": {"Values": [CIDR]}}]
    assert rule["Actions"] == [{"Type": "forward", "TargetGroupArn": alb.target_group_arn}]
    end = NOW + timedelta(minutes=10)
    assert rule["Tags"] == {"jit-lb:managed": "true", "jit-lb:lease:jit-aaaaaa": format_time(end)}
    assert rule["Priority"] == "49000"
    assert [obj.ref for obj in objects] == [rule["RuleArn"]]
    assert objects[0].leases == (Lease("jit-aaaaaa", end),)
    assert re.fullmatch(
        r"rule 49000 on listener app/lb-\w+/\w+/\w+ from 203\.0\.113\.7/32 → tg-\w+", objects[0].description
    )


def test_path_and_host_conditions_join_the_source_ip(moto: MotoServer, alb: Alb) -> None:
    """A spec with path patterns and host headers puts both conditions on the rule beside the source-ip."""
    spec = grant(alb, path_patterns=["/admin/*"], host_headers=["admin.example.com"])
    [obj] = ListenerRuleProvider(spec).apply(order(spec, "jit-aaaaaa"))
    [rule] = rules(moto, alb)
    assert rule["Conditions"] == [
        {"Field": "source-ip", "SourceIpConfig": {"Values": [CIDR]}},
        {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/admin/*"]}},
        {"Field": "host-header", "HostHeaderConfig": {"Values": ["admin.example.com"]}},
    ]
    assert "host admin.example.com path /admin/*" in obj.description
    assert obj.scope == ListenerRuleProvider(spec).scope(order(spec, "jit-aaaaaa"))


def test_apply_twice_makes_one_rule(moto: MotoServer, alb: Alb, spec: ListenerRuleGrant) -> None:
    """A retried grant job does not duplicate the rule."""
    provider = ListenerRuleProvider(spec)
    first = provider.apply(order(spec, "jit-aaaaaa"))
    second = provider.apply(order(spec, "jit-aaaaaa"))
    assert first == second
    assert len(rules(moto, alb)) == 1


def test_overlapping_grants_share_one_rule_until_the_last_ends(
    moto: MotoServer, alb: Alb, spec: ListenerRuleGrant
) -> None:
    """Two grants for the same CIDR share one rule with two leases; the first to end leaves access for the other."""
    provider = ListenerRuleProvider(spec)
    provider.apply(order(spec, "jit-aaaaaa", minutes=5))
    [shared] = provider.apply(order(spec, "jit-bbbbbb", minutes=20))
    assert shared.request_ids() == {"jit-aaaaaa", "jit-bbbbbb"}
    assert len(rules(moto, alb)) == 1

    [first] = objects_of(provider, "jit-aaaaaa")
    assert provider.drop(first, {"jit-aaaaaa"}) is False
    [rule] = rules(moto, alb)
    assert set(rule["Tags"]) == {"jit-lb:managed", "jit-lb:lease:jit-bbbbbb"}

    [second] = objects_of(provider, "jit-bbbbbb")
    assert provider.drop(second, {"jit-bbbbbb"}) is True
    assert rules(moto, alb) == []


def test_different_cidrs_get_distinct_priorities(moto: MotoServer, alb: Alb, spec: ListenerRuleGrant) -> None:
    """Grants for two CIDRs are two rules at two priorities, the lowest free ones first."""
    provider = ListenerRuleProvider(spec)
    provider.apply(order(spec, "jit-aaaaaa", cidr="203.0.113.7/32"))
    provider.apply(order(spec, "jit-bbbbbb", cidr="198.51.100.0/28"))
    assert sorted(rule["Priority"] for rule in rules(moto, alb)) == ["49000", "49001"]


def test_concurrent_grants_all_land_at_distinct_priorities(moto: MotoServer, alb: Alb) -> None:
    """Eight workers granting eight CIDRs at once all succeed, retrying past the priorities others took."""
    spec = grant(alb, priority_range=(100, 119))
    provider = ListenerRuleProvider(spec)
    start = threading.Barrier(8)

    def grant_one(index: int) -> list[ManagedObject]:
        start.wait()
        return provider.apply(order(spec, f"jit-{index:06d}", cidr=f"198.51.100.{index}/32"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(grant_one, range(8)))

    found = rules(moto, alb)
    assert len(found) == 8
    assert len({rule["Priority"] for rule in found}) == 8
    assert {obj.ref for objects in results for obj in objects} == {rule["RuleArn"] for rule in found}


def test_full_priority_range_is_a_clear_error(moto: MotoServer, alb: Alb) -> None:
    """When every priority of the range is taken, the error names the range and what a person can do."""
    spec = grant(alb, priority_range=(10, 11))
    hand_made_rule(moto, alb, 10, cidr="192.0.2.1/32")
    provider = ListenerRuleProvider(spec)
    provider.apply(order(spec, "jit-aaaaaa", cidr="192.0.2.2/32"))
    with pytest.raises(ProviderError, match=r"priority range 10-11 on listener .+ is full .*widen priority_range"):
        provider.apply(order(spec, "jit-bbbbbb", cidr="192.0.2.3/32"))
    assert len(rules(moto, alb)) == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"path_patterns": ["/a", "/b"], "host_headers": ["a.example.com", "b.example.com", "c.example.com"]},
            r"6 condition values \(1 source-ip, 2 path, 3 host\); an ALB rule takes at most 5",
        ),
        ({"path_patterns": ["/a", "/b", "/c", "/d"]}, r"path_patterns has 4 values; .* at most 3"),
        ({"path_patterns": ["/a*?*", "/b*?*"]}, r"6 wildcards; an ALB rule takes at most 5"),
    ],
    ids=["values-per-rule", "values-per-condition", "wildcards"],
)
def test_conditions_beyond_alb_limits_are_refused_before_any_change(
    moto: MotoServer, alb: Alb, fields: dict[str, list[str]], message: str
) -> None:
    """Conditions AWS would refuse are a ProviderError in words, and nothing is created at the listener."""
    spec = grant(alb, **fields)
    with pytest.raises(ProviderError, match=message):
        ListenerRuleProvider(spec).apply(order(spec, "jit-aaaaaa"))
    assert rules(moto, alb) == []


def test_a_full_listener_is_refused_in_words(moto: MotoServer, alb: Alb, spec: ListenerRuleGrant) -> None:
    """A listener holding the 100 rules an ALB allows gets a clear refusal, not an AWS error (moto has no limit)."""
    for priority in range(1, 101):
        hand_made_rule(moto, alb, priority, cidr=f"192.0.2.{priority}/32")
    with pytest.raises(ProviderError, match=r"already has 100 rules, the most an ALB allows"):
        ListenerRuleProvider(spec).apply(order(spec, "jit-aaaaaa"))


def test_missing_listener_is_a_sentence(moto: MotoServer, alb: Alb) -> None:
    """A listener that does not exist is named in the error, with its region."""
    missing = alb.listener_arn.rsplit("/", 1)[0] + "/0123456789abcdef"
    spec = ListenerRuleGrant(
        kind="aws_alb_listener_rule", region="us-east-1", listener_arn=missing, target_group_arn=alb.target_group_arn
    )
    with pytest.raises(ProviderError, match=rf"^listener {re.escape(missing)} not found in us-east-1"):
        ListenerRuleProvider(spec).apply(order(spec, "jit-aaaaaa"))


def test_dropping_a_rule_that_is_gone_succeeds(moto: MotoServer, alb: Alb, spec: ListenerRuleGrant) -> None:
    """Removing a rule someone already deleted by hand is a success, not an error."""
    provider = ListenerRuleProvider(spec)
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))
    moto.client("elbv2").delete_rule(RuleArn=obj.ref)
    assert provider.drop(obj, {"jit-aaaaaa"}) is True
    assert provider.list_managed() == []


def test_list_managed_ignores_rules_without_the_marker(moto: MotoServer, alb: Alb, spec: ListenerRuleGrant) -> None:
    """A hand-made rule for the same CIDR is neither listed, nor tagged, nor shared by a grant."""
    hand_made = hand_made_rule(moto, alb, 5)
    provider = ListenerRuleProvider(spec)
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))
    assert obj.ref != hand_made
    assert provider.list_managed() == [obj]
    assert {rule["RuleArn"]: rule["Tags"] for rule in rules(moto, alb)}[hand_made] == {}


def test_a_lease_whose_end_is_unreadable_has_ended(moto: MotoServer, alb: Alb, spec: ListenerRuleGrant) -> None:
    """A lease tag someone garbled reads as ended, so that the sweep removes access rather than keeping it."""
    provider = ListenerRuleProvider(spec)
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))
    moto.client("elbv2").add_tags(ResourceArns=[obj.ref], Tags=[{"Key": "jit-lb:lease:jit-aaaaaa", "Value": "soon"}])
    [listed] = provider.list_managed()
    assert listed.expired_leases(NOW) == {"jit-aaaaaa"}


def test_unreachable_endpoint_is_a_sentence(alb: Alb, spec: ListenerRuleGrant) -> None:
    """When the ELB API cannot be reached, the error names the call, the listener and the connection failure."""
    provider = ListenerRuleProvider(spec)
    provider.elbv2 = boto3.client(
        "elbv2",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(
        ProviderError, match=r"^elasticloadbalancing:DescribeRules for listener .+ failed: Could not connect"
    ):
        provider.apply(order(spec, "jit-aaaaaa"))


def tagged_rule(
    moto: MotoServer, alb: Alb, priority: int, target_group_arn: str, lease_id: str = "jit-hhhhhh", cidr: str = CIDR
) -> str:
    """A rule someone made by hand and tagged with jit-lb's marker and a lease."""
    end = format_time(NOW + timedelta(minutes=10))
    return str(
        moto.client("elbv2").create_rule(
            ListenerArn=alb.listener_arn,
            Priority=priority,
            Conditions=[{"Field": "source-ip", "SourceIpConfig": {"Values": [cidr]}}],
            Actions=[{"Type": "forward", "TargetGroupArn": target_group_arn}],
            Tags=[{"Key": "jit-lb:managed", "Value": "true"}, {"Key": f"jit-lb:lease:{lease_id}", "Value": end}],
        )["Rules"][0]["RuleArn"]
    )


def other_target_group(moto: MotoServer, alb: Alb) -> str:
    elbv2 = moto.client("elbv2")
    vpc = elbv2.describe_target_groups(TargetGroupArns=[alb.target_group_arn])["TargetGroups"][0]["VpcId"]
    name = "other-" + alb.target_group_arn.rsplit("/", 1)[1][:8]
    return str(
        elbv2.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    )


def test_a_marked_rule_forwarding_elsewhere_is_listed_with_an_anomaly(
    moto: MotoServer, alb: Alb, spec: ListenerRuleGrant
) -> None:
    """A rule marked as ours that forwards to another target group is listed with why; the grant's own conforms."""
    provider = ListenerRuleProvider(spec)
    [mine] = provider.apply(order(spec, "jit-aaaaaa"))
    elsewhere = other_target_group(moto, alb)
    odd = tagged_rule(moto, alb, 49500, elsewhere, cidr="198.51.100.9/32")

    listed = {obj.ref: obj for obj in provider.list_managed()}

    assert listed[mine.ref].anomaly == ""
    assert re.fullmatch(r"it forwards to other-\w+, not tg-\w+", listed[odd].anomaly)
    assert listed[odd].request_ids() == {"jit-hhhhhh"}


@pytest.mark.parametrize(
    ("priority", "cidr", "anomaly"),
    [
        (5, CIDR, "priority 5 is outside priority_range 49000-49999"),
        (49500, "0.0.0.0/0", "its source 0.0.0.0/0 is wider than any grant opens (/8 or narrower)"),
    ],
    ids=["priority", "whole-internet"],
)
def test_a_marked_rule_unlike_the_spec_is_an_anomaly(
    moto: MotoServer, alb: Alb, spec: ListenerRuleGrant, priority: int, cidr: str, anomaly: str
) -> None:
    """A rule marked as ours outside the spec's priorities, or open to everyone, is listed with why."""
    odd = tagged_rule(moto, alb, priority, alb.target_group_arn, cidr=cidr)
    [listed] = ListenerRuleProvider(spec).list_managed()
    assert (listed.ref, listed.anomaly) == (odd, anomaly)


def test_a_lease_with_a_bad_request_id_is_an_anomaly_not_an_error(
    moto: MotoServer, alb: Alb, spec: ListenerRuleGrant
) -> None:
    """A lease tag naming no request id makes the rule an anomaly; listing it does not raise."""
    provider = ListenerRuleProvider(spec)
    [obj] = provider.apply(order(spec, "jit-aaaaaa"))
    moto.client("elbv2").add_tags(ResourceArns=[obj.ref], Tags=[{"Key": "jit-lb:lease:JIT AAA", "Value": "soon"}])
    [listed] = provider.list_managed()
    assert listed.anomaly == "a lease names `JIT AAA`, not a request id"


def test_drop_all_deletes_every_listed_rule(moto: MotoServer, alb: Alb, spec: ListenerRuleGrant) -> None:
    """A lockdown's delete removes each rule once, without reading it again; one deleted meanwhile is no error."""
    provider = ListenerRuleProvider(spec)
    for index in range(3):
        provider.apply(order(spec, f"jit-aaaaa{index}", cidr=f"203.0.113.{10 + index}/32"))
    objects = provider.list_managed()
    assert len(objects) == 3
    moto.client("elbv2").delete_rule(RuleArn=objects[0].ref)
    assert provider.drop_all(objects) == 3
    assert provider.list_managed() == []


def test_drop_all_deletes_the_others_when_one_delete_is_refused(
    moto: MotoServer, alb: Alb, spec: ListenerRuleGrant
) -> None:
    """One DeleteRule refused (throttled past botocore's retries, say) names its rule and stops none of the others:
    a lockdown leaves only that rule, for its revoke job to try again."""
    provider = ListenerRuleProvider(spec)
    for index in range(20):
        provider.apply(order(spec, f"jit-ccccc{index % 10}{'ab'[index // 10]}", cidr=f"203.0.113.{10 + index}/32"))
    objects = provider.list_managed()
    refused = objects[0].ref

    def refuse_one(params: dict[str, Any], **_: Any) -> None:
        if params["RuleArn"] == refused:
            raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "DeleteRule")
        time.sleep(0.3)  # the others still in flight when the refusal is seen, and four of them not yet started

    provider.elbv2 = moto.client("elbv2")  # a client of this test's own: the provider's is shared by the process
    provider.elbv2.meta.events.register("before-parameter-build.elastic-load-balancing-v2.DeleteRule", refuse_one)
    with pytest.raises(
        PartialDropError, match=r"1 of 20 objects not removed; the first: Throttling .* Rate exceeded"
    ) as err:
        provider.drop_all(objects)
    assert [obj.ref for obj in provider.list_managed()] == [refused]
    assert ([obj.ref for obj, _ in err.value.failed], len(err.value.removed)) == ([refused], 19)
