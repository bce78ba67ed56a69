"""Access ends whatever changes: policy edits, forged markers, an audit log that fails, limits, stale approvals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from slack_sdk import WebClient

from devtools.slack_standin import TEST_TOKEN
from jit_lb.access.requests import Status
from jit_lb.audit.writer import AuditLog
from slack_out.directory import UsergroupDirectory
from tests.service.world import World, id_in, policy_of
from workers import jobs, reconcile

FOREVER = "2099-01-01T00:00:00Z"


def new_group(world: World) -> str:
    group = world.ec2.create_security_group(
        GroupName=f"jit-moved-{id(world)}-{datetime.now(UTC).timestamp()}",
        Description="the group lb-prod moved to",
        VpcId=world.network.vpc_id,
    )
    return str(group["GroupId"])


def tag(world: World, rule_id: str, key: str, value: str) -> None:
    world.ec2.create_tags(Resources=[rule_id], Tags=[{"Key": key, "Value": value}])


async def test_a_target_moved_to_another_group_is_revoked_where_it_was_applied(world: World) -> None:
    """Pointing lb-prod at a new group ends its grant at once (reason policy), removing the rules from the old one."""
    request = await world.granted()
    assert len(world.rules_of(request.id)) == 2
    moved_to = new_group(world)

    world.edit_policy(lambda p: p["targets"]["lb-prod"]["grant"].update(security_group_id=moved_to))
    assert reconcile.end_orphans() == 1
    world.work()

    assert world.rules_of(request.id) == []
    revoked = world.record("grant.revoked", request.id)
    assert (revoked["reason"], revoked["verified"]) == ("policy", True)
    assert len(revoked["removed"]) == 2
    assert world.rt.store.get(request.id).status is Status.REVOKED
    assert "policy.reloaded" in world.events()


async def test_a_target_removed_from_the_policy_is_revoked_at_once(world: World) -> None:
    """A grant whose target left the policy ends at once (reason policy) where it was applied."""
    request = await world.granted()
    world.edit_policy(lambda p: p["targets"].pop("lb-prod"))
    assert reconcile.end_orphans() == 1
    world.work()
    assert world.rules_of(request.id) == []
    assert world.record("grant.revoked", request.id)["reason"] == "policy"


async def test_the_sweep_looks_where_open_grants_were_applied(world: World) -> None:
    """Past its end, a grant whose target left the policy is still found by the sweep, at its recorded spec."""
    request = await world.granted()
    world.edit_policy(lambda p: p["targets"].pop("lb-prod"))
    assert reconcile.sweep(now=datetime.now(UTC) + timedelta(hours=2)) == 2
    assert world.rules_of(request.id) == []
    assert world.rt.store.get(request.id).status is Status.REVOKED


async def test_an_invalid_policy_is_refused_and_the_old_one_stays(world: World) -> None:
    """A policy file that does not validate is refused and audited; the one in force keeps working."""
    path = Path(world.rt.settings.jit_policy_file)
    path.write_text("targets: {}\n", encoding="utf-8")
    assert not world.rt.reload_policy()
    refused = world.record("policy.refused")
    assert "approver_channel: Field required" in refused["why"]
    assert "lb-prod" in world.rt.policy.targets
    await world.request()  # requests still go through under the old policy


async def test_a_forged_lease_does_not_keep_a_rule_alive(world: World) -> None:
    """A hand-added lease far in the future is dropped with the real one at revoke: the rule goes."""
    request = await world.granted()
    for rule in world.rules_of(request.id):
        tag(world, rule["SecurityGroupRuleId"], "jit-lb:lease:jit-zzzzzz", FOREVER)

    assert jobs.revoke_access(request.id, "revoked", "U0DEV1") == "revoked"

    assert world.rules_of(request.id) == []
    revoked = world.record("grant.revoked", request.id)
    assert revoked["verified"] is True
    assert not any("kept" in line for line in revoked["removed"])
    assert "further ahead" in revoked["dropped_leases"]["jit-zzzzzz"]


async def test_the_sweep_drops_a_forged_lease_on_its_own(world: World) -> None:
    """A rule carrying only a far-future lease of a request nobody knows is removed by the next sweep."""
    request = await world.granted()
    [first, _] = world.rules_of(request.id)
    jobs.revoke_access(request.id, "revoked", "U0DEV1")
    # Someone puts a rule back by hand, tagged as ours with a lease that would never end.
    rule = world.ec2.authorize_security_group_ingress(
        GroupId=world.network.security_group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "192.0.2.9/32"}]}],
    )["SecurityGroupRules"][0]
    tag(world, rule["SecurityGroupRuleId"], "jit-lb:managed", "true")
    tag(world, rule["SecurityGroupRuleId"], "jit-lb:lease:jit-zzzzzz", FOREVER)

    assert reconcile.sweep() == 1

    assert rule["SecurityGroupRuleId"] not in {r["SecurityGroupRuleId"] for r in world.ingress()}
    removed = [r for r in world.audit() if r["event"] == "sweep.removed"]
    assert "further ahead" in removed[-1]["why"]["jit-zzzzzz"]
    assert first["SecurityGroupRuleId"] not in {r["SecurityGroupRuleId"] for r in world.ingress()}


async def test_a_rule_marked_ours_without_a_lease_is_left_alone_and_reported(world: World) -> None:
    """Someone's permanent rule tagged `jit-lb:managed` by mistake is reported, once, never deleted."""
    rule = world.ec2.authorize_security_group_ingress(
        GroupId=world.network.security_group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "192.0.2.8/32"}]}],
    )["SecurityGroupRules"][0]
    tag(world, rule["SecurityGroupRuleId"], "jit-lb:managed", "true")

    assert reconcile.sweep() == 0
    assert reconcile.sweep() == 0

    assert rule["SecurityGroupRuleId"] in {r["SecurityGroupRuleId"] for r in world.ingress()}
    reported = world.record("sweep.reported")
    assert (reported["object"], "no lease" in reported["why"]) == (rule["SecurityGroupRuleId"], True)


async def test_nothing_found_is_not_verified(world: World) -> None:
    """A revoke that finds none of the grant's objects, because someone removed them by hand, reads them back by id."""
    request = await world.granted()
    for rule in world.rules_of(request.id):
        world.ec2.revoke_security_group_ingress(
            GroupId=world.network.security_group_id, SecurityGroupRuleIds=[rule["SecurityGroupRuleId"]]
        )
    assert jobs.revoke_access(request.id, "revoked", "U0DEV1") == "revoked"
    revoked = world.record("grant.revoked", request.id)
    assert (revoked["removed"], revoked["verified"]) == ([], True)  # read back by id: gone, which is the goal

    record_free = await world.granted(text="request lb-prod 30m again")
    world.rt.store.update(record_free.id, object_refs=())  # a grant from before objects were recorded
    for rule in world.rules_of(record_free.id):
        world.ec2.revoke_security_group_ingress(
            GroupId=world.network.security_group_id, SecurityGroupRuleIds=[rule["SecurityGroupRuleId"]]
        )
    jobs.revoke_access(record_free.id, "revoked", "U0DEV1")
    assert world.record("grant.revoked", record_free.id)["verified"] is False


# --- the audit log fails closed -------------------------------------------------------------------


def full_log(world: World) -> AuditLog:
    """Point the runtime's audit log at /dev/full (every write fails with ENOSPC); returns the working one."""
    working = world.rt.audit
    world.rt.audit = AuditLog.open("/dev/full")
    return working


async def test_no_request_is_stored_when_its_record_cannot_be_written(world: World) -> None:
    """With the audit log full, `/jit request` is refused, and nothing is stored or queued for a card."""
    full_log(world)
    answer = await world.ask("U0DEV1", "request lb-prod 30m debugging")
    assert "audit log cannot be written" in answer
    assert world.rt.store.open_requests() == []
    assert world.outbox() == []


async def test_no_approval_counts_without_its_record(world: World) -> None:
    """A click while the log is full changes nothing; the approver is told why."""
    request = await world.request()
    full_log(world)
    world.click("U0APPROVER1", "jit_approve", request)
    assert world.rt.store.get(request.id).status is Status.PENDING
    assert world.queued() == []
    told = world.slack.calls("chat.postEphemeral")
    assert "audit log cannot be written" in told[-1].args["text"]


async def test_no_grant_is_applied_without_its_record(world: World) -> None:
    """An approved request whose grant cannot be recorded fails and leaves nothing at the load balancer."""
    request = await world.request()
    world.click("U0APPROVER1", "jit_approve", request)
    working = full_log(world)

    assert jobs.grant_access(request.id) == "failed"

    assert world.ingress() == []
    assert world.rt.store.get(request.id).status is Status.FAILED
    world.rt.audit.destination = working.destination  # the disk has room again
    assert world.rt.audit.flush()
    assert "audit log cannot be written" in world.record("grant.failed", request.id)["error"]


async def test_a_revoke_goes_ahead_and_its_record_waits_for_the_log(world: World) -> None:
    """With the log full a revoke still removes access; its record is written, in order, once the log is back."""
    request = await world.granted()
    working = full_log(world)

    assert jobs.revoke_access(request.id, "revoked", "U0DEV1") == "revoked"
    assert world.rules_of(request.id) == []
    assert world.rt.audit.spooled == 2  # grant.revoked, then grant.activity (what changed during it)
    assert "grant.revoked" not in world.events(request.id)

    world.rt.audit.destination = working.destination
    assert world.rt.audit.flush()
    assert world.rt.audit.spooled == 0
    assert world.events(request.id)[-2:] == ["grant.revoked", "grant.activity"]


async def test_records_go_to_the_new_file_after_rotation(world: World) -> None:
    """After logrotate moves the file away (no copytruncate), the next record opens the path again."""
    await world.request()
    world.audit_path.rename(world.audit_path.with_suffix(".1"))
    await world.request(text="request lb-prod 30m after rotation")
    assert world.events() == ["request.created"]
    assert world.audit()[0]["request_reason"] == "after rotation"


# --- limits -----------------------------------------------------------------------------------------


async def test_pending_requests_per_user_are_limited(world: World) -> None:
    """The fourth pending request of one person is refused (limits.pending_per_user defaults to 3)."""
    for n in range(3):
        await world.request(text=f"request lb-prod 30m reason {n}")
    answer = await world.ask("U0DEV1", "request lb-prod 30m one too many")
    assert "already have 3 pending" in answer
    assert len(world.rt.store.open_requests()) == 3


async def test_a_flood_of_commands_is_refused_and_recorded_in_summary(world: World) -> None:
    """Past 20 commands a minute a person is refused; the refusals are one record and one summary, not 130."""
    now = world.commands.clock()
    answers = [await world.ask("U0DEV2", "list") for _ in range(150)]
    assert sum("this minute" in answer for answer in answers) >= 129

    refused = [r for r in world.audit() if r["event"] == "request.refused"]
    assert len(refused) == 1
    assert refused[0]["more_counted"] is True

    assert reconcile.record_refusal_summaries(now + timedelta(minutes=3)) >= 1
    summary = [r for r in world.audit() if r["event"] == "request.refused" and r.get("summary")]
    assert sum(r["refused"] for r in summary) + 1 == sum("this minute" in answer for answer in answers)


async def test_list_is_bounded(world: World) -> None:
    """`/jit list` shows at most 25 requests and says how many more there are."""
    world.edit_policy(lambda p: p.setdefault("limits", {}).update(pending_per_user=40, commands_per_minute=100))
    for n in range(30):
        id_in(await world.ask("U0DEV1", f"request lb-prod 30m reason {n}"))
    answer = await world.ask("U0DEV1", "list")
    assert answer.count("• `jit-") == 25
    assert "… and 5 more" in answer


# --- approvals judged again when the grant is applied -------------------------------------------------


async def test_an_approver_removed_since_counts_for_nothing(world: World) -> None:
    """Approved by someone the policy no longer names, a request fails at grant time and nothing is applied."""
    request = await world.request()
    world.click("U0APPROVER1", "jit_approve", request)
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(approvers=["U0APPROVER2"]))

    assert jobs.grant_access(request.id) == "failed"

    assert world.ingress() == []
    assert "no longer approvers: <@U0APPROVER1>" in world.record("grant.failed", request.id)["error"]


async def test_an_approval_older_than_the_pending_ttl_counts_for_nothing(world: World) -> None:
    """A grant applied long after its approval (its job lost for hours) is refused."""
    request = await world.request()
    world.decisions.clock = lambda: datetime.now(UTC) - timedelta(hours=3)
    world.click("U0APPROVER1", "jit_approve", request)
    assert jobs.grant_access(request.id) == "failed"
    assert "approved too long ago" in world.record("grant.failed", request.id)["error"]
    assert world.ingress() == []


def test_policy_of_the_world_is_valid(world: World) -> None:
    """The service tests' own policy loads (a guard for the tests above)."""
    assert set(policy_of(world.network)["targets"]) <= set(world.rt.policy.targets)


async def test_a_requester_removed_since_is_refused_at_grant_time(world: World) -> None:
    """A requester no longer allowed to ask for the target when the grant is applied gets nothing."""
    request = await world.request()
    world.click("U0APPROVER1", "jit_approve", request)
    world.edit_policy(lambda p: p["targets"]["lb-prod"].update(requesters=["U0DEV2"]))
    assert jobs.grant_access(request.id) == "failed"
    assert "may no longer request" in world.record("grant.failed", request.id)["error"]


def test_usergroup_members_are_not_served_from_a_cache_without_bound(world: World) -> None:
    """While Slack fails, a group's members read recently still count; past the bound, nobody does."""
    now = [1000.0]
    client = WebClient(token=TEST_TOKEN, base_url=world.slack.api_url)  # no retries: each failure answers at once
    directory = UsergroupDirectory(client, fresh=60.0, max_stale=300.0, clock=lambda: now[0])
    world.slack.set_usergroup("S0NETOPS", ["U0NETOPS1"])
    assert directory.members("S0NETOPS") == ["U0NETOPS1"]

    world.slack.fail_next("usergroups.users.list", times=100, status=500)
    now[0] += 120  # stale, Slack failing: the members read two minutes ago still count
    assert directory.members("S0NETOPS") == ["U0NETOPS1"]
    now[0] += 240  # six minutes: fail closed
    assert directory.members("S0NETOPS") == []
    assert len(world.slack.calls("usergroups.users.list")) == 3  # one call a look-up: failures are not hammered
