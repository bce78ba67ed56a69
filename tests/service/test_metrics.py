"""The process's metrics as services and jobs move them: request outcomes, grant and end figures, state from Redis."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from tests.service.world import World, id_in
from workers import jobs


def samples(world: World) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample a scrape of this process would show, by name and labels."""
    assert world.rt.metrics is not None
    text = generate_latest(world.rt.metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(world: World, name: str, **labels: str) -> float | None:
    return samples(world).get((name, tuple(sorted(labels.items()))))


async def test_a_grant_moves_the_request_grant_and_end_figures(world: World) -> None:
    """Created, approved, one grant timed and active, then ended: its end offset observed and active back to 0."""
    assert value(world, "jit_requests_total", target="lb-prod", outcome="created") == 0
    granted = await world.granted()

    assert value(world, "jit_requests_total", target="lb-prod", outcome="created") == 1
    assert value(world, "jit_requests_total", target="lb-prod", outcome="approved") == 1
    assert value(world, "jit_grant_seconds_count", kind="aws_security_group") == 1
    assert value(world, "jit_grants_active", target="lb-prod") == 1
    assert (value(world, "jit_redis_up"), value(world, "jit_lockdown")) == (1, 0)

    assert jobs.revoke_access(granted.id, "revoked", "U0DEV1") == "revoked"

    assert value(world, "jit_access_end_offset_seconds_count", kind="aws_security_group") == 1
    # Revoked by its requester half an hour early: gone before its end.
    assert value(world, "jit_access_end_offset_seconds_bucket", kind="aws_security_group", le="-600.0") == 1
    assert value(world, "jit_grants_active", target="lb-prod") is None


async def test_a_second_approval_counts_the_request_approved_once(world: World) -> None:
    """lb-two needs two approvals: the first leaves it pending, the second approves it, and approved counts 1."""
    request = await world.request("U0DEV1", "request lb-two 30m two keys")
    world.click("U0APPROVER1", "jit_approve", request)
    assert value(world, "jit_requests_total", target="lb-two", outcome="approved") == 0
    world.click("U0APPROVER2", "jit_approve", world.rt.store.get(request.id))
    assert value(world, "jit_requests_total", target="lb-two", outcome="approved") == 1


async def test_a_target_typed_that_is_not_in_the_policy_is_no_label(world: World) -> None:
    """A refused request for `lb-typo-1234` counts under target="other": no label value comes from what was typed."""
    await world.ask("U0DEV1", "request lb-typo-1234 30m oops")
    await world.ask("U0DEV1", "request lb-prod 30x oops")

    assert value(world, "jit_requests_total", target="other", outcome="refused") == 1
    assert value(world, "jit_requests_total", target="lb-prod", outcome="refused") == 1
    assert not any("lb-typo" in str(labels) for _, labels in samples(world))


async def test_denied_and_cancelled_requests_are_counted(world: World) -> None:
    """A denial and a withdrawal each count under their outcome."""
    denied = await world.request("U0DEV1", "request lb-prod 30m first")
    world.click("U0APPROVER1", "jit_deny", denied)
    cancelled = await world.request("U0DEV1", "request lb-prod 30m second")
    await world.ask("U0DEV1", f"cancel {cancelled.id}")
    assert value(world, "jit_requests_total", target="lb-prod", outcome="denied") == 1
    assert value(world, "jit_requests_total", target="lb-prod", outcome="cancelled") == 1


async def test_an_audit_write_that_fails_is_counted(world: World) -> None:
    """With the log's disk full, a request is refused and jit_audit_write_failures_total counts the failed write."""
    assert value(world, "jit_audit_write_failures_total") == 0
    working = world.rt.audit.destination
    world.rt.audit.destination = "/dev/full"
    assert "audit log cannot be written" in await world.ask("U0DEV1", "request lb-prod 30m debugging")
    world.rt.audit.destination = working
    assert value(world, "jit_audit_write_failures_total") == 1
    assert value(world, "jit_requests_total", target="lb-prod", outcome="created") == 0


async def test_a_stored_request_that_cannot_be_read_is_counted_each_time_it_is_read(world: World) -> None:
    """A stored request that cannot be read is left out of the open requests a sweep or a lockdown reads, and its own
    revoke fails: jit_unreadable_requests_total counts each read, so an alert tells the on-call engineer (before, a
    log line alone did)."""
    assert value(world, "jit_unreadable_requests_total") == 0
    request_id = id_in(await world.ask("U0DEV1", "request lb-prod 30m debugging"))
    world.rt.store.redis.set(f"jit:req:{request_id}", "{not a request")
    assert world.rt.store.find_many({request_id}) == {}
    with pytest.raises(ValidationError):
        world.rt.store.get(request_id)
    assert value(world, "jit_unreadable_requests_total") == 2


async def test_redis_unreachable_says_redis_down_and_nothing_it_holds(world: World) -> None:
    """A scrape while Redis does not answer: jit_redis_up 0, and no lockdown or active grants made up."""
    world.rt.store.redis.connection_pool.connection_kwargs.update(port=1, host="127.0.0.1")
    world.rt.store.redis.connection_pool.disconnect()
    assert value(world, "jit_redis_up") == 0
    assert value(world, "jit_lockdown") is None
