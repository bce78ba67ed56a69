"""What happened during a session (docs/policy.md): changes made at the load balancer while a grant ran, in words.

Each test grants a target, changes the load balancer by hand as another person would, ends the grant
through the worker's jobs, and reads the `grant.activity` record and the closing summary Slack was sent.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from devtools.haproxy import HaproxyServer, http_status
from devtools.moto_server import Alb, MotoServer, seed_load_balancer, seed_role
from devtools.slack_standin import block_kit_errors
from jit_lb.access.errors import ProviderError
from jit_lb.access.policy import spec_record
from jit_lb.access.requests import AccessRequest, Snapshot, Use
from slack_out import summaries
from tests.service.world import APPROVALS, World
from workers import activity, jobs, lockdown, reconcile
from workers.providers import aws
from workers.providers.haproxy import RuntimeApi

LOOPBACK = "127.0.0.7"
LIMITS = {"default_duration": "30m", "min_duration": "1m", "max_duration": "1h", "approvers": ["U0APPROVER1"]}


def add_to_policy(world: World, targets: dict[str, Any], principals: dict[str, Any] | None = None) -> None:
    """Add targets (and principals, or fields of them) to the world's policy file, then reload it as SIGHUP does."""
    path = Path(world.rt.settings.jit_policy_file)
    policy = yaml.safe_load(path.read_text(encoding="utf-8"))
    for user, fields in (principals or {}).items():
        policy["principals"].setdefault(user, {}).update(fields)
    policy["targets"].update({name: {**LIMITS, "grant": grant} for name, grant in targets.items()})
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    assert world.rt.reload_policy()


async def end_by_requester(world: World, request: AccessRequest, user: str = "U0DEV1") -> dict[str, Any]:
    """`/jit revoke` by the requester, run by the worker with its notices; the `grant.activity` record."""
    await world.ask(user, f"revoke {request.id}")
    world.work()
    return world.record("grant.activity", request.id)


def summary_of(world: World, request: AccessRequest) -> dict[str, Any]:
    """The closing summary in the request's thread, checked against Slack's Block Kit limits."""
    card_ts = world.rt.store.get(request.id).card_ts
    found = [m for m in world.slack.thread(APPROVALS, str(card_ts)) if m["text"].startswith(":lock:")]
    assert len(found) == 1, found
    assert block_kit_errors(found[0]["blocks"]) == []
    return found[0]


def changes_shown(summary: dict[str, Any]) -> str:
    """The summary's plain-text sections, where changes and use are listed."""
    return "\n".join(
        block["text"]["text"]
        for block in summary["blocks"]
        if block["type"] == "section" and block.get("text", {}).get("type") == "plain_text"
    )


# --- security group ------------------------------------------------------------------------------


async def test_a_session_without_changes_says_so(world: World) -> None:
    """Nothing changed but jit-lb's own rules: `changes` is empty, and the summary says there were no changes."""
    request = await world.granted()
    assert world.rt.store.get(request.id).start_snapshot is not None

    record = await end_by_requester(world, request)

    assert record["changes"] == []
    assert record["snapshot_at_start"] < record["snapshot_at_end"]
    summary = summary_of(world, request)
    assert summary["text"].endswith("No changes during the session.")
    assert "No changes during the session at the load balancer" in changes_shown(summary)
    assert "The load balancer was read when granted" in str(summary["blocks"])


async def test_rules_added_and_removed_by_hand_are_exactly_the_changes(world: World) -> None:
    """A rule someone added and one someone removed during the session are its changes; jit-lb's own are not."""
    group = world.network.security_group_id
    world.ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "10.1.0.0/16"}]}],
    )
    old = next(rule for rule in world.ingress() if rule["FromPort"] == 80)
    request = await world.granted()

    world.ec2.revoke_security_group_ingress(GroupId=group, SecurityGroupRuleIds=[old["SecurityGroupRuleId"]])
    bastion = {"CidrIp": "10.9.0.0/16", "Description": "bastion"}
    world.ec2.authorize_security_group_ingress(
        GroupId=group, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [bastion]}]
    )
    new = next(rule for rule in world.ingress() if rule["FromPort"] == 22)
    record = await end_by_requester(world, request)

    assert [
        {
            "what": f"security group {group}: ingress tcp/22 from 10.9.0.0/16",
            "before": None,
            "after": f"rule {new['SecurityGroupRuleId']} (bastion)",
        },
        {
            "what": f"security group {group}: ingress tcp/80 from 10.1.0.0/16",
            "before": f"rule {old['SecurityGroupRuleId']}",
            "after": None,
        },
    ] == record["changes"]
    summary = summary_of(world, request)
    assert summary["text"].endswith("2 changes during the session.")
    shown = changes_shown(summary)
    assert f"ingress tcp/22 from 10.9.0.0/16: added — rule {new['SecurityGroupRuleId']} (bastion)" in shown
    assert f"ingress tcp/80 from 10.1.0.0/16: removed — was rule {old['SecurityGroupRuleId']}" in shown
    assert "203.0.113.7" not in json.dumps(record["changes"])  # the grantee's source: only jit-lb's rules admit it


async def test_a_grant_the_sweep_ends_records_its_session_too(world: World) -> None:
    """The sweep's end of a grant Redis knows compares the snapshots as a revoke does."""
    request = await world.granted()
    world.ec2.authorize_security_group_ingress(
        GroupId=world.network.security_group_id,
        IpPermissions=[{"IpProtocol": "udp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.2.0.0/16"}]}],
    )
    reconcile.sweep(now=datetime.now(UTC) + timedelta(hours=2))
    record = world.record("grant.activity", request.id)
    assert [f"security group {world.network.security_group_id}: ingress udp/53 from 10.2.0.0/16"] == [
        change["what"] for change in record["changes"]
    ]
    assert world.record("grant.revoked", request.id)["reason"] == "sweep"


async def test_many_changes_are_listed_up_to_a_cap_within_block_kit(world: World) -> None:
    """55 rules with long descriptions added by hand: all are recorded; the summary lists 30, says how many more,
    and stays valid Block Kit."""
    request = await world.granted()
    permissions = [
        {
            "IpProtocol": "tcp",
            "FromPort": port,
            "ToPort": port,
            "IpRanges": [{"CidrIp": "10.3.0.0/16", "Description": "<@U0ADMIN> *bold* " + "x" * 230}],
        }
        for port in range(20000, 20055)
    ]
    world.ec2.authorize_security_group_ingress(GroupId=world.network.security_group_id, IpPermissions=permissions)

    record = await end_by_requester(world, request)

    assert len(record["changes"]) == 55
    summary = summary_of(world, request)
    assert summary["text"].endswith("55 changes during the session.")
    assert f"… and {55 - summaries.MAX_CHANGES_SHOWN} more" in changes_shown(summary)
    assert "<@U0ADMIN>" not in str([b for b in summary["blocks"] if b.get("text", {}).get("type") == "mrkdwn"])


def test_changes_past_the_cap_are_counted_not_kept() -> None:
    """150 changes: the activity keeps 100 and counts 50 more."""
    start = Snapshot(at=AT, entries={})
    end = Snapshot(at=AT, entries={f"rule {index:03}": "open" for index in range(150)})
    happened = activity.compare(start, end)
    assert happened.changes is not None
    assert (len(happened.changes), happened.changes_left_out) == (activity.MAX_CHANGES, 50)


# --- ALB -----------------------------------------------------------------------------------------


@pytest.fixture(name="alb")
def fixture_alb(moto: MotoServer) -> Alb:
    return seed_load_balancer(moto)


async def test_alb_attribute_rule_and_target_changes_are_exactly_the_changes(
    world: World, moto: MotoServer, alb: Alb
) -> None:
    """An attribute turned on, a rule edited and a target deregistered during the session, and nothing of jit-lb's."""
    elbv2, ec2 = moto.client("elbv2"), moto.client("ec2")
    health = elbv2.create_rule(
        ListenerArn=alb.listener_arn,
        Priority=5,
        Conditions=[{"Field": "path-pattern", "Values": ["/health"]}],
        Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}],
    )["Rules"][0]["RuleArn"]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instances = [i["InstanceId"] for i in ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2)["Instances"]]
    elbv2.register_targets(TargetGroupArn=alb.target_group_arn, Targets=[{"Id": i, "Port": 80} for i in instances])
    add_to_policy(
        world,
        {
            "lb-alb": {
                "kind": "aws_alb_listener_rule",
                "region": "us-east-1",
                "listener_arn": alb.listener_arn,
                "target_group_arn": alb.target_group_arn,
                "priority_range": [100, 199],
            }
        },
    )
    request = await world.granted(text="request lb-alb 30m check the admin pages")

    elbv2.modify_load_balancer_attributes(
        LoadBalancerArn=alb.load_balancer_arn, Attributes=[{"Key": "deletion_protection.enabled", "Value": "true"}]
    )
    elbv2.modify_rule(RuleArn=health, Conditions=[{"Field": "path-pattern", "Values": ["/healthz"]}])
    elbv2.deregister_targets(TargetGroupArn=alb.target_group_arn, Targets=[{"Id": instances[0], "Port": 80}])
    record = await end_by_requester(world, request)

    listener = f"listener {alb.listener_arn.rpartition('/')[2]}"
    balancer, group = alb.load_balancer_arn.split("/")[2], alb.target_group_arn.split("/")[1]
    assert [
        {
            "what": f"{listener}: rule 5",
            "before": "if path-pattern /health: fixed-response 200",
            "after": "if path-pattern /healthz: fixed-response 200",
        },
        {"what": f"load balancer {balancer}: deletion_protection.enabled", "before": "false", "after": "true"},
        {"what": f"target group {group}: target {instances[0]}:80", "before": "healthy", "after": None},
    ] == record["changes"]
    assert f"target group {group}: target {instances[0]}:80: removed — was healthy" in changes_shown(
        summary_of(world, request)
    )


# --- IAM -----------------------------------------------------------------------------------------


@pytest.fixture(name="role")
def fixture_role(moto: MotoServer) -> str:
    return seed_role(moto, f"dev-{uuid.uuid4().hex[:10]}")


def iam_target(world: World, alb: Alb, role: str) -> None:
    add_to_policy(
        world,
        {"lb-iam": {"kind": "aws_iam_policy", "load_balancer_arn": alb.load_balancer_arn}},
        principals={"U0DEV1": {"aws_role_name": role}},
    )


async def test_an_inline_policy_added_to_the_role_is_the_change(
    world: World, moto: MotoServer, alb: Alb, role: str
) -> None:
    """Another inline policy put on the grantee's role during the session is listed; jit-lb's own policy is not."""
    iam_target(world, alb, role)
    request = await world.granted(text="request lb-iam 30m rotate the certificate")
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    moto.client("iam").put_role_policy(RoleName=role, PolicyName="everything-s3", PolicyDocument=json.dumps(document))

    record = await end_by_requester(world, request)

    (change,) = record["changes"]
    assert (change["what"], change["before"]) == (f"IAM role {role}: inline policy everything-s3", None)
    assert change["after"].startswith("1 statement(s), document sha256 ")
    assert request.id not in json.dumps(record["changes"])


async def test_an_iam_grant_records_what_changed_at_its_load_balancer(
    world: World, moto: MotoServer, alb: Alb, role: str
) -> None:
    """The IAM kind gives actions on the load balancer, so what changed there is recorded as for the ALB kind: an
    attribute turned on, a rule added, a target deregistered (then the role's policies, unchanged here)."""
    elbv2, ec2 = moto.client("elbv2"), moto.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    elbv2.register_targets(TargetGroupArn=alb.target_group_arn, Targets=[{"Id": instance, "Port": 80}])
    elbv2.create_rule(  # the listener forwards to the target group: its targets are part of the load balancer
        ListenerArn=alb.listener_arn,
        Priority=6,
        Conditions=[{"Field": "path-pattern", "Values": ["/app"]}],
        Actions=[{"Type": "forward", "TargetGroupArn": alb.target_group_arn}],
    )
    iam_target(world, alb, role)
    request = await world.granted(text="request lb-iam 30m rotate the certificate")

    elbv2.modify_load_balancer_attributes(
        LoadBalancerArn=alb.load_balancer_arn, Attributes=[{"Key": "deletion_protection.enabled", "Value": "true"}]
    )
    elbv2.create_rule(
        ListenerArn=alb.listener_arn,
        Priority=7,
        Conditions=[{"Field": "path-pattern", "Values": ["/maintenance"]}],
        Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503"}}],
    )
    elbv2.deregister_targets(TargetGroupArn=alb.target_group_arn, Targets=[{"Id": instance, "Port": 80}])
    record = await end_by_requester(world, request)

    listener = f"listener {alb.listener_arn.rpartition('/')[2]}"
    balancer, group = alb.load_balancer_arn.split("/")[2], alb.target_group_arn.split("/")[1]
    assert [
        {"what": f"{listener}: rule 7", "before": None, "after": "if path-pattern /maintenance: fixed-response 503"},
        {"what": f"load balancer {balancer}: deletion_protection.enabled", "before": "false", "after": "true"},
        {"what": f"target group {group}: target {instance}:80", "before": "healthy", "after": None},
    ] == record["changes"]
    assert f"load balancer {balancer}: deletion_protection.enabled" in changes_shown(summary_of(world, request))


async def test_a_role_that_cannot_be_read_at_the_end_is_said_not_guessed(
    world: World, moto: MotoServer, alb: Alb, role: str
) -> None:
    """The role deleted during the session: the grant still ends, and what changed is unknown, with why."""
    iam_target(world, alb, role)
    request = await world.granted(text="request lb-iam 30m rotate the certificate")
    iam = moto.client("iam")
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        iam.delete_role_policy(RoleName=role, PolicyName=name)
    iam.delete_role(RoleName=role)

    record = await end_by_requester(world, request)

    assert "changes" not in record
    assert record["changes_unknown"].startswith("the load balancer could not be read when the grant ended: IAM role")
    summary = summary_of(world, request)
    assert summary["text"].endswith("What changed during the session is not known.")
    assert f"IAM role {role} not found" in changes_shown(summary)


# --- HAProxy -------------------------------------------------------------------------------------


def haproxy_target(world: World, haproxy: HaproxyServer, stick_table: str) -> None:
    grant = {
        "kind": "haproxy_acl",
        "runtime_api": haproxy.runtime_api_unix,
        "acl": haproxy.acl_file,
        "stick_table": stick_table,
    }
    add_to_policy(world, {"edge-haproxy": grant}, principals={"U0DEV3": {"source_cidr": f"{LOOPBACK}/32"}})


@pytest.mark.haproxy
async def test_haproxy_maintenance_and_the_sources_use_are_what_happened(world: World, haproxy: HaproxyServer) -> None:
    """A server set to maintenance is the change; the source's 4 requests are its use, read from the stick table."""
    haproxy_target(world, haproxy, haproxy.stick_table)
    request = await world.granted("U0DEV3", "request edge-haproxy 30m check the edge")
    assert [http_status(haproxy.port, LOOPBACK) for _ in range(4)] == [200, 200, 200, 200]
    api = RuntimeApi(haproxy.runtime_api_unix)
    api.command("set server app/app state maint")
    try:
        record = await end_by_requester(world, request, "U0DEV3")
    finally:
        api.command("set server app/app state ready")

    assert [
        (c["what"], c["before"].split(" ")[0].rstrip(","), c["after"].split(" ")[0].rstrip(","))
        for c in record["changes"]
    ] == [("backend app", "UP", "DOWN"), ("backend app: server app", "UP", "MAINT")]
    assert (record["connections"], record["http_requests"]) == (4, 4)
    assert record["bytes_in"] > 0 and record["bytes_out"] > 0
    summary = summary_of(world, request)
    assert summary["text"].endswith("2 changes during the session. 4 HTTP requests from its source.")
    assert f"Use from {LOOPBACK}/32 during the session: 4 connections, 4 HTTP requests" in changes_shown(summary)


@pytest.mark.haproxy
async def test_haproxy_use_from_a_missing_stick_table_is_said_not_guessed(world: World, haproxy: HaproxyServer) -> None:
    """A stick_table HAProxy does not have: the grant works, the changes are read, and the use is unknown, with why."""
    haproxy_target(world, haproxy, "no_such_table")
    request = await world.granted("U0DEV3", "request edge-haproxy 30m check the edge")
    record = await end_by_requester(world, request, "U0DEV3")

    assert record["changes"] == []
    assert "connections" not in record
    assert "no stick table `no_such_table`" in record["use_unknown"]
    assert "during the session is not known" in changes_shown(summary_of(world, request))


# --- the comparison itself -----------------------------------------------------------------------

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_a_capped_snapshot_is_compared_only_as_far_as_both_were_kept() -> None:
    """Entries past the cap are not reported as removed: only names up to the last one kept are compared."""
    many = {f"rule {index:04}": "open" for index in range(activity.MAX_ENTRIES + 50)}
    kept, left_out = activity.bounded(many)
    assert (len(kept), left_out) == (activity.MAX_ENTRIES, 50)
    start = Snapshot(at=AT, entries=kept, left_out=left_out)
    end_entries, end_left_out = activity.bounded(
        {**many, "rule 0000": "closed", "rule 0220": "closed", "rule 9999": "x"}
    )
    end = Snapshot(at=AT + timedelta(minutes=5), entries=end_entries, left_out=end_left_out)

    happened = activity.compare(start, end)

    assert happened.changes is not None
    assert [(c.what, c.before, c.after) for c in happened.changes] == [("rule 0000", "open", "closed")]
    assert happened.not_compared is not None and "rule 0199" in happened.not_compared


def test_a_snapshot_is_bounded_in_size() -> None:
    """Long names and states are cut, and the whole stays within its character budget."""
    kept, left_out = activity.bounded({f"{index:03} " + "n" * 1000: "s" * 1000 for index in range(100)})
    assert all(len(what) == activity.MAX_WHAT and what.endswith("…") for what in kept)
    assert sum(len(what) + len(state) for what, state in kept.items()) <= activity.MAX_SNAPSHOT_CHARS
    assert len(kept) + left_out == 100


def test_counts_that_fell_were_reset_and_are_counted_from_the_reset() -> None:
    """HAProxy restarted during the session: the counts it holds now are the use, marked as counted since a reset."""
    start = Snapshot(at=AT, use=Use(connections=50, http_requests=60, bytes_in=1000, bytes_out=9000))
    end = Snapshot(at=AT, use=Use(connections=3, http_requests=3, bytes_in=120, bytes_out=400))
    happened = activity.compare(start, end)
    assert happened.use == Use(connections=3, http_requests=3, bytes_in=120, bytes_out=400)
    assert happened.use_reset


def test_no_start_snapshot_is_said() -> None:
    """A grant with no start snapshot (applied before jit-lb took them): the changes are unknown, saying why."""
    happened = activity.compare(None, Snapshot(at=AT, entries={"backend app": "UP"}))
    assert happened.changes is None
    assert happened.unknown == activity.NO_START


def test_a_grant_redis_no_longer_knows_has_no_start_snapshot(world: World) -> None:
    """The record the sweep's end of an unknown request carries: no start snapshot exists, and why."""
    activity.record_unknown(world.rt, "jit-gone22", "aws_security_group")
    record = world.record("grant.activity", "jit-gone22")
    assert record["changes_unknown"] == activity.UNKNOWN_REQUEST
    assert (record["actor"], record["kind"], "changes" in record) == ("system", "aws_security_group", False)


@pytest.mark.haproxy
async def test_a_use_count_that_falls_is_not_use_and_the_idle_grant_ends(world: World, haproxy: HaproxyServer) -> None:
    """Used, then seen used again a second later; then its stick-table entry is cleared (as an expiry or an HAProxy
    restart does) so the count falls to 0: that is no use, and the grant ends idle `idle_timeout` after the last
    real use, not that long after the fall."""
    haproxy_target(world, haproxy, haproxy.stick_table)
    path = Path(world.rt.settings.jit_policy_file)
    policy = yaml.safe_load(path.read_text(encoding="utf-8"))
    policy["targets"]["edge-haproxy"]["idle_timeout"] = "1m"
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    assert world.rt.reload_policy()
    request = await world.granted("U0DEV3", "request edge-haproxy 30m check the edge")
    assert [http_status(haproxy.port, LOOPBACK) for _ in range(3)] == [200, 200, 200]
    start = datetime.now(UTC)
    assert reconcile.end_idle(start) == 0  # the first look: 3 connections
    assert http_status(haproxy.port, LOOPBACK) == 200
    assert reconcile.end_idle(start + timedelta(seconds=1)) == 0  # 4: used at start + 1 s
    table = haproxy.stick_table.rsplit("/", 1)[-1]
    RuntimeApi(haproxy.runtime_api_unix).command(f"clear table {table} key ::ffff:{LOOPBACK}")  # a type ipv6 table

    assert reconcile.end_idle(start + timedelta(seconds=61)) == 1  # 0 now: a fall, not use; a minute since the use

    world.work()
    assert world.record("grant.revoked", request.id)["reason"] == "idle"


async def two_iam_grants(world: World, moto: MotoServer, alb: Alb, role: str) -> tuple[AccessRequest, AccessRequest]:
    """An IAM target, and a grant on it for each of U0DEV1 (on `role`) and U0DEV2 (on a role of its own)."""
    other = seed_role(moto, f"dev-{uuid.uuid4().hex[:10]}")
    add_to_policy(
        world,
        {"lb-iam": {"kind": "aws_iam_policy", "load_balancer_arn": alb.load_balancer_arn}},
        principals={"U0DEV1": {"aws_role_name": role}, "U0DEV2": {"aws_role_name": other}},
    )
    kept = await world.granted(text="request lb-iam 30m rotate the certificate")
    gone = await world.granted(user="U0DEV2", text="request lb-iam 30m rotate it too")
    return kept, gone


@contextlib.contextmanager
def iam_refusing(region: str, policy_name: str) -> Iterator[None]:
    """The workers' own IAM client (shared by the process) refuses to delete that one policy, as AWS may."""
    iam = aws.client("iam", region)

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if params["PolicyName"] == policy_name:
            raise ClientError({"Error": {"Code": "ServiceFailure", "Message": "try again"}}, "DeleteRolePolicy")

    iam.meta.events.register("before-parameter-build.iam.DeleteRolePolicy", refuse)
    try:
        yield
    finally:
        iam.meta.events.unregister("before-parameter-build.iam.DeleteRolePolicy", refuse)


def policies_at(moto: MotoServer, request: AccessRequest) -> list[str]:
    role = request.role_name
    assert role is not None
    return list(moto.client("iam").list_role_policies(RoleName=role)["PolicyNames"])


async def test_a_lockdown_records_the_policies_it_removed_when_another_is_refused(
    world: World, moto: MotoServer, alb: Alb, role: str
) -> None:
    """A lockdown's clearing job on an IAM target whose one DeleteRolePolicy AWS refuses removes the others and writes
    their `sweep.removed` records (before: none, as if nothing had gone); the refused one waits for its revoke job."""
    kept, gone = await two_iam_grants(world, moto, alb, role)
    with iam_refusing(alb.load_balancer_arn.split(":")[3], kept.id):
        world.rt.store.start_lockdown("U0ADMIN", datetime.now(UTC), "a leaked key")
        spec = json.dumps(spec_record(world.rt.policy.targets["lb-iam"].grant), sort_keys=True)
        assert lockdown.clear_spec(spec) == "1 removed, 1 failed"
    assert (policies_at(moto, kept), policies_at(moto, gone)) == ([kept.id], [])
    removed = world.record("sweep.removed")
    assert (removed["object"], removed["leases_dropped"]) == (f"{gone.role_name}/{gone.id}", [gone.id])
    assert removed["why"] == "lockdown"


async def test_a_batch_revoke_records_each_grant_as_it_went_when_one_delete_is_refused(
    world: World, moto: MotoServer, alb: Alb, role: str
) -> None:
    """Two grants ending together, one policy's delete refused: the other grant is recorded revoked with its policy
    removed, the refused one `grant.revoke_failed` (before: both failed, and the retry recorded the gone one's end
    with nothing removed); the job's retry then ends the refused one, and the ended one stands down."""
    kept, gone = await two_iam_grants(world, moto, alb, role)
    ids = [kept.id, gone.id]
    ends = [int(request.ends_at.timestamp()) for request in (kept, gone) if request.ends_at is not None]
    with iam_refusing(alb.load_balancer_arn.split(":")[3], kept.id), pytest.raises(ProviderError, match="1 of 2"):
        jobs.revoke_expired(ids, ends)
    assert (policies_at(moto, kept), policies_at(moto, gone)) == ([kept.id], [])
    revoked = world.record("grant.revoked", gone.id)
    [description] = revoked["removed"]
    assert description.startswith(f"policy {gone.id} on IAM role {gone.role_name}: ")
    assert revoked["verified"] is True
    assert "ServiceFailure" in world.record("grant.revoke_failed", kept.id)["error"]
    assert "grant.revoke_failed" not in world.events(gone.id)

    assert jobs.revoke_expired(ids, ends) == "1 revoked"
    assert policies_at(moto, kept) == []
    assert world.record("grant.revoked", kept.id)["verified"] is True
    assert world.events(gone.id).count("grant.revoked") == 1
