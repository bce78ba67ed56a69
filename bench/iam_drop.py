"""A lockdown's IAM work: many inline policies listed and removed, straight to moto or at a region's pace.

IAM reads and deletes one policy a call (GetRolePolicy, DeleteRolePolicy), so a lockdown of IAM grants is as fast as
those calls go side by side. The lockdown figure's product run holds no IAM grants (its goal names SG, ALB and
HAProxy); these rows time what a lockdown's clearing job asks of the IAM provider, `list_managed` then `drop_all`, on
policies it applied: once as it runs (aws_iam.CALL_THREADS calls at a time) and once one call after another, as it ran
before 4 December.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime

from bench.latency_proxy import latency_proxy
from bench.stats import Row
from devtools.moto_server import MotoServer, seed_load_balancer, seed_role
from jit_lb.access.policy import IamPolicyGrant
from workers.providers import aws
from workers.providers.aws_iam import CALL_THREADS, IamPolicyProvider
from workers.providers.base import GrantOrder

ROLES = 4


def iam_drops(count: int, latency: float, label: str) -> list[Row]:
    """Two rows: `count` policies on ROLES roles listed and removed CALL_THREADS calls at a time, then one at a time."""
    with MotoServer() as moto:
        alb = seed_load_balancer(moto)
        roles = [seed_role(moto, f"bench-iam-{index}") for index in range(ROLES)]
        spec = IamPolicyGrant(kind="aws_iam_policy", load_balancer_arn=alb.load_balancer_arn)
        with latency_proxy(moto.endpoint, latency) if latency else contextlib.nullcontext(moto.endpoint) as endpoint:
            provider = _provider(moto, spec, roles, endpoint)
            rows = []
            for threads in (CALL_THREADS, 1):
                provider.threads = threads
                listed, dropped = _timed_lockdown(provider, count)
                how = f"{threads} calls at a time" if threads > 1 else "one call at a time (before)"
                rows.append(
                    Row(
                        f"lockdown's IAM work, {label}: {count} policies on {ROLES} roles, {how}",
                        f"{listed + dropped:.2f} s (listed {listed:.2f} s, deleted {dropped:.2f} s)",
                        note="the provider's list_managed and drop_all (no IAM grant in the lockdown above)",
                    )
                )
    return rows


def _timed_lockdown(provider: IamPolicyProvider, count: int) -> tuple[float, float]:
    """Seconds to list the `count` policies applied, and to delete them all."""
    ends_at = datetime(2100, 1, 1, tzinfo=UTC)
    roles = provider.role_names
    for index in range(count):
        order = GrantOrder(f"jit-b{index:05d}", "lb-bench", provider.spec, ends_at, role_name=roles[index % len(roles)])
        provider.apply(order)
    started = time.monotonic()
    objects = provider.list_managed()
    listed = time.monotonic() - started
    assert len(objects) == count, f"{len(objects)} of {count} policies listed"
    started = time.monotonic()
    dropped = provider.drop_all(objects)
    deleted = time.monotonic() - started
    assert dropped == count, f"{dropped} of {count} policies dropped"
    assert not provider.list_managed(), "every policy is gone"
    return listed, deleted


def _provider(moto: MotoServer, spec: IamPolicyGrant, roles: list[str], endpoint: str) -> IamPolicyProvider:
    """The provider with its clients at `endpoint` (this process has no AWS_ENDPOINT_URL: never real AWS)."""
    provider = IamPolicyProvider(spec, role_names=roles)
    provider.iam = moto.client("iam", via=endpoint, config=aws.RETRY_CONFIG)
    provider.elbv2 = moto.client("elbv2", via=endpoint, config=aws.RETRY_CONFIG)
    return provider
