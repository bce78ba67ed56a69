"""The worker's jobs and notices in this process: grants and revokes at moto, expiry, and the posts of outcomes."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bot.service.commands import CommandService
from jit_lb.access.errors import ProviderError
from jit_lb.access.requests import EndReason, Status
from tests.service.world import APPROVALS, DEV1_CIDR, DEVS, MISSING_GROUP, World, buttons, id_in
from workers import jobs, notices
from workers.judge import applied_spec
from workers.orders import order_of
from workers.providers import aws, aws_sg
from workers.providers.registry import provider_for


async def test_grant_applies_the_rules_records_and_queues_its_notice(world: World) -> None:
    """`grant_access` adds one marked ingress rule per port at moto, records `grant.applied`, and queues `tell`."""
    request = await world.request()
    world.click("U0APPROVER1", "jit_approve", request)

    assert jobs.grant_access(request.id) == "granted"

    granted = world.rt.store.get(request.id)
    assert granted.status == Status.GRANTED
    assert granted.granted_at is not None and granted.ends_at is not None
    assert timedelta(minutes=30) >= granted.ends_at - granted.granted_at > timedelta(minutes=29, seconds=58)
    rules = world.rules_of(request.id)
    assert sorted(rule["FromPort"] for rule in rules) == [443, 8443]
    marker = granted.ends_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    for rule in rules:
        tags = {tag["Key"]: tag["Value"] for tag in rule["Tags"]}
        assert (rule["CidrIpv4"], rule["IpProtocol"], tags["jit-lb:managed"]) == (DEV1_CIDR, "tcp", "true")
        assert marker == tags[f"jit-lb:lease:{request.id}"]
        assert f"jit-lb {request.id} until {marker}" == rule["Description"]
    applied = world.record("grant.applied", request.id)
    assert (applied["actor"], applied["verified"], applied["kind"]) == ("system", True, "aws_security_group")
    assert sorted(rule["SecurityGroupRuleId"] for rule in rules) == sorted(applied["objects"])
    assert [(request.id, "granted")] == world.notices_queued()
    stamp = int(granted.ends_at.timestamp())
    assert [f"warn-{request.id}-{stamp}"] == world.rt.notices.scheduled_job_registry.get_job_ids()


async def test_grant_twice_is_harmless(world: World) -> None:
    """A second run of the grant (the queued job after a direct run) changes nothing at moto or in the log."""
    request = await world.request()
    world.click("U0APPROVER1", "jit_approve", request)
    assert jobs.grant_access(request.id) == "granted"

    assert jobs.grant_access(request.id) == "already granted"

    assert len(world.rules_of(request.id)) == 2
    assert world.events(request.id).count("grant.applied") == 1


async def test_tell_posts_the_grant_to_the_thread_and_the_requester(world: World) -> None:
    """Running the queued jobs grants, then `tell` edits the card and posts the grant in the thread and by DM."""
    request = await world.request()
    world.click("U0APPROVER1", "jit_approve", request)

    world.work()

    assert world.rt.store.get(request.id).status == Status.GRANTED
    assert world.queued() == [] and world.notices_queued() == []
    said = ":unlock: Access granted to <@U0DEV1> on `lb-prod` until"
    [thread_post] = [m for m in world.slack.thread(APPROVALS, str(request.card_ts)) if said in m["text"]]
    assert "verified at the load balancer" in thread_post["text"]
    assert thread_post["text"].count(f"on {world.network.security_group_id}: tcp/") == 2
    assert said in world.texts(world.slack.dms("U0DEV1"))
    last = world.slack.updates(APPROVALS, str(request.card_ts))[-1]
    assert "Granted by <@U0APPROVER1>" in str(last["blocks"])


async def test_revoke_by_the_requester_removes_the_rules(world: World) -> None:
    """The requester's `/jit revoke`, run by a worker, removes the rules at moto and records a verified revoke."""
    request = await world.granted()
    await world.ask("U0DEV1", f"revoke {request.id}")

    world.work()

    assert world.ingress() == []
    after = world.rt.store.get(request.id)
    assert (after.status, after.end_reason, after.ended_by) == (Status.REVOKED, EndReason.REVOKED, "U0DEV1")
    revoked = world.record("grant.revoked", request.id)
    assert (revoked["actor"], revoked["reason"], revoked["verified"]) == ("U0DEV1", "revoked", True)
    assert len(revoked["removed"]) == 2
    assert world.rt.store.open_requests() == []
    summary = [m for m in world.slack.thread(APPROVALS, str(request.card_ts)) if m["text"].startswith(":lock:")]
    ended = f":lock: Access on `lb-prod` ended (revoked) for `{request.id}`. No changes during the session."
    assert [ended] == [m["text"] for m in summary]
    assert "removal NOT verified" not in str(summary[0]["blocks"])
    assert f"ended (revoked) for `{request.id}`" in world.texts(world.slack.dms("U0DEV1"))


async def test_expiry_revoke_waits_for_the_end(world: World) -> None:
    """A revoke for expiry that runs before the grant's end leaves it alone (an extension may have moved the end)."""
    request = await world.granted()

    assert jobs.revoke_access(request.id) == "not yet"

    assert world.rt.store.get(request.id).status == Status.GRANTED
    assert len(world.rules_of(request.id)) == 2


async def test_revoke_that_cannot_reach_the_group_is_recorded_and_told(world: World) -> None:
    """When the group is gone, the revoke raises for RQ to retry, records `grant.revoke_failed`, and warns approvers."""
    request = await world.granted()
    ec2 = world.ec2
    ec2.revoke_security_group_ingress(
        GroupId=world.network.security_group_id,
        SecurityGroupRuleIds=[rule["SecurityGroupRuleId"] for rule in world.ingress()],
    )
    ec2.delete_security_group(GroupId=world.network.security_group_id)

    with pytest.raises(ProviderError, match="not found"):
        jobs.revoke_access(request.id, "revoked", "U0DEV1")

    assert world.rt.store.get(request.id).status == Status.GRANTED
    failed = world.record("grant.revoke_failed", request.id)
    assert failed["retries_left"] == 0
    assert [(request.id, "revoke_failed")] == world.notices_queued()
    world.work()
    [alarm] = [m for m in world.slack.thread(APPROVALS, str(request.card_ts)) if "failed" in m["text"]]
    assert "<@U0APPROVER1>, <@U0APPROVER2>" in alarm["text"]


async def test_grant_on_a_missing_group_fails_and_leaves_nothing(world: World) -> None:
    """A grant whose security group does not exist fails, records `grant.failed`, holds no end, and says so."""
    request = await world.request("U0DEV2", "request lb-broken 30m fixing the edge")
    world.click("U0APPROVER3", "jit_approve", request)

    assert jobs.grant_access(request.id) == "failed"

    failed = world.rt.store.get(request.id)
    why = f"Security group {MISSING_GROUP} in us-east-1 not found"
    assert (Status.FAILED, why) == (failed.status, failed.failure)
    assert world.rt.store.open_requests() == []
    assert world.rt.store.grants_ended(datetime.now(UTC) + timedelta(days=1)) == {}
    assert why == world.record("grant.failed", request.id)["error"]
    assert "grant.applied" not in world.events(request.id)
    assert world.rt.notices.scheduled_job_registry.get_job_ids() == []
    assert [(request.id, "failed")] == world.notices_queued()

    world.work()

    assert f":x: Could not grant `{request.id}` on `lb-broken`: {why}" in world.texts(world.slack.dms("U0DEV2"))
    assert "Failed" in str(world.slack.updates(APPROVALS, str(request.card_ts))[-1]["blocks"])


async def test_expire_closes_a_pending_request_past_its_window(world: World) -> None:
    """`expire_request` closes a request nobody decided within `pending_ttl`, records it, and tells the requester."""
    long_ago = datetime.now(UTC) - timedelta(minutes=20)
    asked = await CommandService(world.rt, world.mfa, clock=lambda: long_ago).command(
        "U0DEV1", "request lb-prod 30m x", DEVS
    )
    request_id = id_in(asked.text)
    world.outbox()
    notices.announce(request_id)

    assert jobs.expire_request(request_id) == "expired"

    expired = world.rt.store.get(request_id)
    assert (expired.status, expired.decided_by) == (Status.EXPIRED, "system")
    assert world.rt.store.open_requests() == []
    assert world.record("request.expired", request_id)["actor"] == "system"
    assert [(request_id, "expired")] == world.notices_queued()

    world.work()

    assert f"`{request_id}` expired: nobody decided" in world.texts(world.slack.dms("U0DEV1"))
    [update] = world.slack.updates(APPROVALS, str(expired.card_ts))
    assert buttons(update["blocks"]) == []
    assert "Expired without a decision" in str(update["blocks"])


async def test_expire_leaves_a_request_within_its_window(world: World) -> None:
    """`expire_request` on a request still within its approval window changes nothing."""
    request = await world.request()

    assert f"request {request.id} is still within its approval window" == jobs.expire_request(request.id)

    assert world.rt.store.get(request.id).status == Status.PENDING
    assert "request.expired" not in world.events(request.id)


async def test_extend_access_moves_the_lease_at_moto(world: World) -> None:
    """Once an extension is approved, `extend_access` moves the rules' lease to the new end and tells everyone."""
    request = await world.granted()
    await world.approved_extension(request)

    world.work()

    after = world.rt.store.get(request.id)
    assert after.ends_at is not None
    marker = after.ends_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    leases = [{t["Key"]: t["Value"] for t in rule["Tags"]}[f"jit-lb:lease:{request.id}"] for rule in world.ingress()]
    assert [marker, marker] == leases
    extended = world.record("grant.extended", request.id)
    assert (extended["actor"], extended["verified"]) == ("U0APPROVER2", True)
    assert f"`{request.id}` on `lb-prod` now ends" in world.texts(world.slack.dms("U0DEV1"))
    stamp = int(after.ends_at.timestamp())
    assert f"warn-{request.id}-{stamp}" in world.rt.notices.scheduled_job_registry.get_job_ids()


async def test_warn_expiry_tells_the_requester_how_to_extend(world: World) -> None:
    """The scheduled warning DMs the requester the extend command; a warning for an end since moved does nothing."""
    request = await world.granted()
    assert request.ends_at is not None
    stamp = int(request.ends_at.timestamp())

    assert notices.warn_expiry(request.id, stamp - 60) == "extended since"
    assert notices.warn_expiry(request.id, stamp) == "warned"

    [warning] = [m["text"] for m in world.slack.dms("U0DEV1") if ":alarm_clock:" in m["text"]]
    assert f"`/jit extend {request.id} 30m <reason>`" in warning
    assert "ends in about 30 minutes" in warning
    assert [e for e in world.events(request.id) if e == "grant.warned"] == ["grant.warned"]


async def test_card_slack_refuses_cancels_the_request(world: World) -> None:
    """When Slack refuses the approval card, `announce` cancels the request (nobody could approve it) and says so."""
    request_id = id_in(await world.ask("U0DEV1", "request lb-prod 30m debugging 502s"))
    world.outbox()
    world.slack.fail_next("chat.postMessage", status=400)

    assert notices.announce(request_id) == "cancelled"

    cancelled = world.rt.store.get(request_id)
    why = "the approval card could not be posted to Slack"
    assert (cancelled.status, cancelled.failure, cancelled.card_ts) == (Status.CANCELLED, why, None)
    assert world.rt.store.open_requests() == []
    assert world.record("request.cancelled", request_id)["why"] == why
    assert world.slack.messages(APPROVALS) == []
    assert f"Cancelled: {why} (`{request_id}`)" in world.texts(world.slack.dms("U0DEV1"))


async def test_a_revoke_racing_an_approved_extension_leaves_no_rule(world: World) -> None:
    """An approved extension's job has read the grant and waits for the scope's lock while the requester's revoke
    runs: once both are done, no rule at moto holds the request's lease (the extension stood down or was undone).
    Three rounds: the revoke takes the lock first in most of them, the order that left the rule behind."""
    for round_ in range(3):
        request = await world.granted(text=f"request lb-prod 30m race {round_}")
        await world.approved_extension(request)
        granted = world.rt.store.get(request.id)
        spec = applied_spec(world.rt.policy, granted)
        assert spec is not None and granted.ends_at is not None
        scope = provider_for(spec, world.rt.store.redis, world.rt.policy).scope(
            order_of(granted, granted.ends_at, spec)
        )
        extending = threading.Thread(target=jobs.extend_access, args=(request.id,), name="extend-under-test")

        with world.rt.store.lock(scope):
            extending.start()
            await asyncio.sleep(0.5)  # the extension reads the grant, then waits for the lock held here
        assert jobs.revoke_access(request.id, "revoked", "U0DEV1") == "revoked"
        extending.join(30)

        assert world.rules_of(request.id) == [], f"round {round_}: the extension put the rule back after the revoke"
        assert world.rt.store.get(request.id).status is Status.REVOKED


async def test_a_batch_revoke_refused_in_part_says_what_of_the_grant_went(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grant of two rules whose one revoke AWS refuses: its `grant.revoke_failed` names the refusal and the rule
    that did go (no later record would: the retry finds it gone), and the retry ends the grant with the other."""
    monkeypatch.setattr(aws_sg, "REVOKE_BATCH", 1)
    request = await world.granted()
    first, second = world.rules_of(request.id)
    assert request.ends_at is not None
    end = int(request.ends_at.timestamp())
    ec2 = aws.client("ec2", "us-east-1")  # the workers' own client, shared by the process

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if first["SecurityGroupRuleId"] in params.get("SecurityGroupRuleIds", []):
            raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}}, "Revoke")

    ec2.meta.events.register("before-parameter-build.ec2.RevokeSecurityGroupIngress", refuse)
    try:
        with pytest.raises(ProviderError, match="1 of 1 grants not revoked"):
            jobs.revoke_expired([request.id], [end])
    finally:
        ec2.meta.events.unregister("before-parameter-build.ec2.RevokeSecurityGroupIngress", refuse)
    assert [rule["SecurityGroupRuleId"] for rule in world.rules_of(request.id)] == [first["SecurityGroupRuleId"]]
    failed = world.record("grant.revoke_failed", request.id)["error"]
    assert "RequestLimitExceeded" in failed
    assert f"removed meanwhile: {second['SecurityGroupRuleId']}" in failed
    assert world.rt.store.get(request.id).status is Status.GRANTED

    assert jobs.revoke_expired([request.id], [end]) == "1 revoked"
    assert world.rules_of(request.id) == []
    assert world.record("grant.revoked", request.id)["verified"] is True
