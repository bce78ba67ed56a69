"""Time of one `workers.reconcile.sweep()`, run in this process, over thousands of managed rules seeded into moto."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from bench.moto_view import MotoMeter
from bench.stats import Row
from bench.world import RULES_PER_GROUP, create_groups, group_count, policy_document
from devtools.moto_server import Network
from devtools.stack import Stack
from jit_lb.settings import load_settings
from slack_out.process import connect
from workers import context, reconcile
from workers.providers import aws
from workers.providers.markers import format_time
from workers.providers.registry import provider_for, specs_of


class SweepWorld:
    """Enough security groups for the largest size; each size's policy names only the groups it fills."""

    def __init__(self, largest: int, expired: int) -> None:
        self.largest = largest
        self.expired = expired
        self.stack: Stack | None = None
        self.groups: list[str] = []  # live leases, filled in order
        self.expired_groups: list[str] = []  # leases that ended an hour ago
        self.filled = 0  # live rules seeded so far

    def policy(self, network: Network) -> dict[str, Any]:
        assert self.stack is not None, "attach the stack before it starts"
        self.groups = create_groups(self.stack, network.vpc_id, "sweep", group_count(self.largest))
        self.expired_groups = create_groups(self.stack, network.vpc_id, "expired", group_count(self.expired))
        return policy_document({f"sw-{i:03d}": group_id for i, group_id in enumerate(self.groups)})

    def seed(self, total: int) -> None:
        """Fill groups in order with live managed rules until there are `total`."""
        end = datetime.now(UTC) + timedelta(hours=2)
        while self.filled < total:
            index, offset = divmod(self.filled, RULES_PER_GROUP)
            batch = min(RULES_PER_GROUP - offset, total - self.filled)
            self._authorize(self.groups[index], f"jit-s{index:05d}", end, offset, batch)
            self.filled += batch

    def seed_expired(self) -> None:
        """Fill the expired groups with rules whose one lease ended an hour ago."""
        end = datetime.now(UTC) - timedelta(hours=1)
        for index, group_id in enumerate(self.expired_groups):
            batch = min(RULES_PER_GROUP, self.expired - index * RULES_PER_GROUP)
            self._authorize(group_id, f"jit-x{index:05d}", end, 0, batch)

    def _authorize(self, group_id: str, request_id: str, end: datetime, offset: int, batch: int) -> None:
        """`batch` managed rules (one authorize call, 50 addresses at most) sharing one lease."""
        assert self.stack is not None
        tags = [
            {"Key": "jit-lb:managed", "Value": "true"},
            {"Key": f"jit-lb:lease:{request_id}", "Value": format_time(end)},
        ]
        self.stack.moto.client("ec2").authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 443,
                    "ToPort": 443,
                    "IpRanges": [{"CidrIp": f"10.1.{offset + i}.1/32", "Description": "bench"} for i in range(batch)],
                }
            ],
            TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": tags}],
        )

    def write_policy(self, name: str, groups: list[str]) -> str:
        assert self.stack is not None
        named = {f"sw-{i:03d}": group_id for i, group_id in enumerate(groups)}
        path = self.stack.workdir / f"sweep-{name}.yml"
        path.write_text(yaml.safe_dump(policy_document(named), sort_keys=False))
        return str(path)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ set to exactly `values` for the block (load_settings reads it), then put back."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class CallClock:
    """Counts and times the calls one boto3 client makes, from its before-call to its after-call event."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0
        self.seconds = 0.0
        self._started: list[float] = []

    def __enter__(self) -> CallClock:
        self.client.meta.events.register("before-call.ec2", self._before)
        self.client.meta.events.register("after-call.ec2", self._after)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.meta.events.unregister("before-call.ec2", self._before)
        self.client.meta.events.unregister("after-call.ec2", self._after)

    def _before(self, **_: Any) -> None:
        self._started.append(time.perf_counter())

    def _after(self, **_: Any) -> None:
        self.calls += 1
        self.seconds += time.perf_counter() - self._started.pop()


def timed_sweep(stack: Stack, policy_path: str) -> tuple[float, int, CallClock, MotoMeter]:
    """One sweep with a runtime built as the worker builds it; seconds, objects removed, AWS calls."""
    with environment(stack.env({"JIT_POLICY_FILE": policy_path})):
        runtime, notifier = connect(load_settings())
        context.install(context.WorkerContext(runtime, notifier))
        try:
            for spec in specs_of(runtime.policy):
                provider_for(spec, runtime.store.redis, runtime.policy)  # as the worker does at start
            with CallClock(aws.client("ec2", "us-east-1")) as clock, MotoMeter() as meter:
                started = time.perf_counter()
                removed = reconcile.sweep()
                return time.perf_counter() - started, removed, clock, meter
        finally:
            context.install(None)


def sweeps(sizes: list[int], expired: int) -> list[Row]:
    """One sweep at each size of live leases (seeding more between them), then one over `expired` ended leases."""
    world = SweepWorld(max(sizes), expired)
    stack = Stack(policy=world.policy, webs=0, workers=0)
    world.stack = stack
    rows = []
    with stack:
        for size in sorted(sizes):
            world.seed(size)
            policy = world.write_policy(str(size), world.groups[: group_count(size)])
            seconds, removed, clock, meter = timed_sweep(stack, policy)
            note = (
                f"{group_count(size)} groups; {clock.calls} EC2 calls took {clock.seconds:.2f} s "
                f"(moto's CPU {sum(meter.seconds.values()):.2f} s); removed {removed}"
            )
            rows.append(Row(f"5. sweep() over {size:,} managed rules", f"{seconds:.2f} s", "< 10 s at 5,000", note))
        world.seed_expired()
        seconds, removed, clock, meter = timed_sweep(stack, world.write_policy("expired", world.expired_groups))
        note = (
            f"{clock.calls} EC2 calls took {clock.seconds:.2f} s (moto's CPU {sum(meter.seconds.values()):.2f} s); "
            f"removed {removed}"
        )
        leases = len(world.expired_groups)  # one lease a group: its rules were seeded as one grant's
        name = f"   sweep() removing {expired:,} rules of {leases} ended leases"
        rows.append(Row(name, f"{seconds:.2f} s", "", note))
        rows.append(Row("   ... EC2 calls by action", "", "", meter.text(expired, "removed rule")))
    return rows
