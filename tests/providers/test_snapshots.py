"""What each provider reads around a target (docs/policy.md): other people's objects in words, never jit-lb's own."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from devtools.haproxy import HaproxyServer
from devtools.moto_server import Alb, MotoServer, seed_load_balancer, seed_role, seed_security_group
from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import HaproxyAclGrant, IamPolicyGrant, ListenerRuleGrant, SecurityGroupGrant
from jit_lb.access.requests import Use
from workers.providers.aws_alb import ListenerRuleProvider
from workers.providers.aws_iam import IamPolicyProvider
from workers.providers.aws_sg import SecurityGroupProvider
from workers.providers.base import GrantOrder
from workers.providers.haproxy import HaproxyAclProvider, RuntimeApi, parse_table

END = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
CIDR = "203.0.113.7/32"
SOURCE = "127.0.0.7"
# One request of a fixed shape: HAProxy counts the same bytes for each.
REQUEST = b"GET / HTTP/1.1\r\nHost: jit\r\nConnection: close\r\n\r\n"


def order(spec: SecurityGroupGrant | ListenerRuleGrant | IamPolicyGrant | HaproxyAclGrant, **fields: str) -> GrantOrder:
    return GrantOrder("jit-snapsh", "lb-prod", spec, END, **{"cidr": CIDR, **fields})


# --- security group ------------------------------------------------------------------------------


def test_a_security_group_snapshot_lists_other_rules_and_not_jit_lbs(moto: MotoServer) -> None:
    """Rules added by hand are listed by what they admit, with id and description; jit-lb's own rules are not."""
    network = seed_security_group(moto, name=f"snap-{uuid.uuid4().hex[:8]}")
    spec = SecurityGroupGrant(
        kind="aws_security_group", region="us-east-1", security_group_id=network.security_group_id, ports=[443]
    )
    provider = SecurityGroupProvider(spec)
    provider.apply(order(spec))
    ec2 = moto.client("ec2")
    ec2.authorize_security_group_ingress(
        GroupId=network.security_group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "10.0.0.0/8", "Description": "ssh"}],
            }
        ],
    )
    rule_id = next(
        r["SecurityGroupRuleId"]
        for r in ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [network.security_group_id]}]
        )["SecurityGroupRules"]
        if r.get("FromPort") == 22
    )

    entries = provider.snapshot(order(spec))

    assert {
        f"security group {network.security_group_id}: ingress tcp/22 from 10.0.0.0/8": f"rule {rule_id} (ssh)"
    } == entries


def test_a_security_group_that_is_gone_cannot_be_read(moto: MotoServer) -> None:
    """A snapshot of a missing group raises in words rather than report it empty."""
    spec = SecurityGroupGrant(
        kind="aws_security_group", region="us-east-1", security_group_id="sg-0123456789abcdef0", ports=[443]
    )
    with pytest.raises(ProviderError, match="not found"):
        SecurityGroupProvider(spec).snapshot(order(spec))


# --- ALB -----------------------------------------------------------------------------------------


@pytest.fixture(name="alb")
def fixture_alb(moto: MotoServer) -> Alb:
    return seed_load_balancer(moto)


def alb_spec(alb: Alb) -> ListenerRuleGrant:
    return ListenerRuleGrant(
        kind="aws_alb_listener_rule",
        region="us-east-1",
        listener_arn=alb.listener_arn,
        target_group_arn=alb.target_group_arn,
        priority_range=(100, 199),
    )


def test_an_alb_snapshot_reads_the_listener_its_rules_attributes_and_targets(moto: MotoServer, alb: Alb) -> None:
    """Its attributes, the listener, a hand-made rule, the target group and its targets; not jit-lb's rule."""
    spec = alb_spec(alb)
    provider = ListenerRuleProvider(spec)
    provider.apply(order(spec))
    elbv2, ec2 = moto.client("elbv2"), moto.client("ec2")
    elbv2.create_rule(
        ListenerArn=alb.listener_arn,
        Priority=5,
        Conditions=[{"Field": "path-pattern", "Values": ["/health"]}],
        Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}],
    )
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    elbv2.register_targets(TargetGroupArn=alb.target_group_arn, Targets=[{"Id": instance, "Port": 80}])

    entries = provider.snapshot(order(spec))

    balancer = alb.load_balancer_arn.split("/")[2]
    group = alb.target_group_arn.split("/")[1]
    listener = f"listener {alb.listener_arn.rpartition('/')[2]}"
    assert entries[f"load balancer {balancer}: deletion_protection.enabled"] == "false"
    assert entries[listener] == "HTTP:80, default: fixed-response 403"
    assert entries[f"{listener}: rule 5"] == "if path-pattern /health: fixed-response 200"
    assert [key for key in entries if key.startswith(f"{listener}: rule")] == [f"{listener}: rule 5"]
    assert entries[f"target group {group}"].startswith("instance targets on HTTP:8080")
    assert entries[f"target group {group}: deregistration_delay.timeout_seconds"] == "300"
    assert entries[f"target group {group}: target {instance}:80"] == "healthy"
    assert CIDR not in json.dumps(entries)  # jit-lb's rule, the only one from the grantee's source, is left out


def test_an_alb_target_group_deleted_meanwhile_is_left_out(moto: MotoServer, alb: Alb) -> None:
    """A target group that no longer exists has no entries: its absence is the change, not an unreadable snapshot."""
    spec = alb_spec(alb)
    group = alb.target_group_arn.split("/")[1]
    assert f"target group {group}" in ListenerRuleProvider(spec).snapshot(order(spec))
    moto.client("elbv2").delete_target_group(TargetGroupArn=alb.target_group_arn)
    assert not [key for key in ListenerRuleProvider(spec).snapshot(order(spec)) if key.startswith("target group")]


# --- IAM -----------------------------------------------------------------------------------------


def test_an_iam_snapshot_names_the_roles_other_policies_and_not_jit_lbs(moto: MotoServer, alb: Alb) -> None:
    """The load balancer (attributes, listeners), then the role's other inline policies (with a digest of the
    document) and attached ones; jit-lb's own are not."""
    role = seed_role(moto, f"snap-{uuid.uuid4().hex[:8]}")
    iam = moto.client("iam")
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
    iam.put_role_policy(RoleName=role, PolicyName="read-logs", PolicyDocument=json.dumps(document))
    managed = iam.create_policy(PolicyName=f"audit-{uuid.uuid4().hex[:6]}", PolicyDocument=json.dumps(document))
    iam.attach_role_policy(RoleName=role, PolicyArn=managed["Policy"]["Arn"])
    spec = IamPolicyGrant(kind="aws_iam_policy", load_balancer_arn=alb.load_balancer_arn)
    provider = IamPolicyProvider(spec, role_names=[role])
    provider.apply(order(spec, role_name=role))

    entries = provider.snapshot(order(spec, role_name=role))

    assert sorted(key for key in entries if key.startswith("IAM role")) == [
        f"IAM role {role}: attached policy {managed['Policy']['PolicyName']}",
        f"IAM role {role}: inline policy read-logs",
    ]
    # The load balancer the grant gives actions on comes first, as the ALB kind reads it.
    listener = f"listener {alb.listener_arn.rpartition('/')[2]}"
    assert next(iter(entries)).startswith(f"load balancer {alb.load_balancer_arn.split('/')[2]}: ")
    assert entries[listener].startswith("HTTP:80, default: ")
    assert entries[f"IAM role {role}: inline policy read-logs"].startswith("1 statement(s), document sha256 ")


def test_an_iam_snapshot_of_a_missing_role_raises_in_words(moto: MotoServer, alb: Alb) -> None:
    """A role that does not exist is unreadable, named."""
    spec = IamPolicyGrant(kind="aws_iam_policy", load_balancer_arn=alb.load_balancer_arn)
    with pytest.raises(ProviderError, match="IAM role nobody-here not found"):
        IamPolicyProvider(spec).snapshot(order(spec, role_name="nobody-here"))


# --- HAProxy -------------------------------------------------------------------------------------


def haproxy_spec(haproxy: HaproxyServer, stick_table: str | None = None) -> HaproxyAclGrant:
    return HaproxyAclGrant(
        kind="haproxy_acl", runtime_api=haproxy.runtime_api_unix, acl=haproxy.acl_file, stick_table=stick_table
    )


def raw_get(haproxy: HaproxyServer, source: str) -> bytes:
    """One GET of a fixed shape from `source`, on a connection of its own; the whole answer."""
    with socket.create_connection(("127.0.0.1", haproxy.port), timeout=5, source_address=(source, 0)) as conn:
        conn.sendall(REQUEST)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def used(before: Use, after: Use) -> tuple[int, int, int, int]:
    assert None not in (after.connections, after.http_requests, after.bytes_in, after.bytes_out)
    return (
        (after.connections or 0) - (before.connections or 0),
        (after.http_requests or 0) - (before.http_requests or 0),
        (after.bytes_in or 0) - (before.bytes_in or 0),
        (after.bytes_out or 0) - (before.bytes_out or 0),
    )


@pytest.mark.haproxy
def test_haproxy_use_of_counts_exactly_the_sources_requests(haproxy: HaproxyServer, redis_client: redis.Redis) -> None:
    """Five requests from 127.0.0.7 count five connections and requests, and five times one request's bytes."""
    provider = HaproxyAclProvider(haproxy_spec(haproxy, haproxy.stick_table), redis_client)
    provider.apply(GrantOrder("jit-usecnt", "edge", provider.spec, END, cidr="127.0.0.9/32"))
    calibration = provider.use_of("127.0.0.9/32")
    assert calibration is not None
    assert raw_get(haproxy, "127.0.0.9").startswith(b"HTTP/1.1 200")
    one = used(calibration, provider.use_of("127.0.0.9/32") or calibration)
    provider.apply(GrantOrder("jit-usecnt", "edge", provider.spec, END, cidr=f"{SOURCE}/32"))
    before = provider.use_of(f"{SOURCE}/32")
    assert before is not None

    for _ in range(5):
        assert raw_get(haproxy, SOURCE).startswith(b"HTTP/1.1 200")
    after = provider.use_of(f"{SOURCE}/32")

    assert after is not None
    assert (5, 5, 5 * one[2], 5 * one[3]) == used(before, after)
    assert one[2] > 0 and one[3] > 0


@pytest.mark.haproxy
def test_haproxy_use_of_a_small_network_sums_its_addresses(haproxy: HaproxyServer, redis_client: redis.Redis) -> None:
    """A /30 is read address by address: requests from two of its addresses are summed."""
    provider = HaproxyAclProvider(haproxy_spec(haproxy, haproxy.stick_table), redis_client)
    provider.apply(GrantOrder("jit-usenet", "edge", provider.spec, END, cidr="127.0.1.0/30"))
    before = provider.use_of("127.0.1.0/30")
    raw_get(haproxy, "127.0.1.1")
    raw_get(haproxy, "127.0.1.2")
    after = provider.use_of("127.0.1.0/30")
    assert before is not None and after is not None
    assert used(before, after)[:2] == (2, 2)


@pytest.mark.haproxy
def test_haproxy_use_is_none_without_a_stick_table_and_refused_in_words_otherwise(
    haproxy: HaproxyServer, redis_client: redis.Redis
) -> None:
    """No stick_table: not counted (None). A missing table, a /24 or a hostile name: a ProviderError saying why."""
    assert HaproxyAclProvider(haproxy_spec(haproxy), redis_client).use_of(CIDR) is None
    with pytest.raises(ProviderError, match=r"no stick table `nope`.*it has jit_use"):
        HaproxyAclProvider(haproxy_spec(haproxy, "nope"), redis_client).use_of(CIDR)
    with pytest.raises(ProviderError, match="at most 16"):
        HaproxyAclProvider(haproxy_spec(haproxy, haproxy.stick_table), redis_client).use_of("127.0.0.0/24")
    with pytest.raises(ProviderError, match="cannot be sent"):
        RuntimeApi(haproxy.runtime_api_unix).show_table(haproxy.stick_table, "127.0.0.1;help")
    with pytest.raises(ValueError, match="No such table"):
        parse_table("No such table")


@pytest.mark.haproxy
def test_haproxy_snapshot_lists_backends_and_servers_with_their_states(
    haproxy: HaproxyServer, redis_client: redis.Redis
) -> None:
    """`show stat` in words: the backend, and its server's state, weight and address; maintenance shows."""
    provider = HaproxyAclProvider(haproxy_spec(haproxy), redis_client)
    api = RuntimeApi(haproxy.runtime_api_unix)
    before = provider.snapshot(order(provider.spec))
    api.command("set server app/app state maint")
    try:
        after = provider.snapshot(order(provider.spec))
    finally:
        api.command("set server app/app state ready")

    assert before["backend app"] == "UP"
    assert before["backend app: server app"].startswith("UP (not health-checked), weight 1, 127.0.0.1:")
    assert after["backend app: server app"].startswith("MAINT, weight 1, 127.0.0.1:")
    assert after["backend app"] == "DOWN"
