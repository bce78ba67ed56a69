"""Runs every figure against the product as the Procfile starts it, and prints the table."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import deadline, grants, ha, home_storm, lockdown, memory, metrics_cost, nginx, slash, sweep
from bench.lockdown import Mix
from bench.moto_view import install_speedups, reset_moto
from bench.stats import Row, render
from bench.world import World, settle
from devtools.stack import Stack


@dataclass(frozen=True)
class Plan:
    """How many of each: the full counts by default, smaller ones with --quick."""

    slash_requests: int = 2000
    slash_concurrency: int = 20
    approvals: int = 50
    revokes: int = 200
    revoke_seconds: int = 45
    burst: int = 500
    sweep_sizes: tuple[int, ...] = (500, 1000, 2500, 5000)
    sweep_expired: int = 500
    deadline_grants: int = 200
    deadline_seconds: tuple[int, int] = (30, 50)  # the shortest and longest grant; all end within a few seconds
    lockdown_mix: Mix = field(default_factory=lambda: Mix(sg=600, alb=200, haproxy=200))
    nginx_rounds: tuple[int, int, int] = (30, 10, 3)  # provider apply+drop, through the product, drop while busy
    home_storm_rounds: int = 3  # approvals while 50 Home opens meet a rate-limited views.publish
    metrics_requests: int = 400  # a round, on each web; 8 alternating rounds (9,600 requests: under the pending limit)


QUICK = Plan(
    slash_requests=200,
    approvals=10,
    revokes=30,
    revoke_seconds=15,
    burst=50,
    sweep_sizes=(200, 500),
    sweep_expired=50,
    deadline_grants=30,
    deadline_seconds=(10, 20),
    lockdown_mix=Mix(sg=60, alb=20, haproxy=20),
    nginx_rounds=(10, 3, 1),
    home_storm_rounds=1,
    metrics_requests=200,
)


def timed(name: str, step: Callable[[], list[Row]]) -> list[Row]:
    started = time.monotonic()
    grants.log(f"{name} ...")
    rows = step()
    grants.log(f"{name} done in {time.monotonic() - started:.1f}s")
    return rows


# In the order the table shows them; `deadline` runs on the main Stack; `lockdown`, `sweep`, `nginx`, `ha` and `homes`
# on stacks of their own.
FIGURES = (
    "slash",
    "metrics",
    "approve",
    "revoke",
    "burst",
    "sweep",
    "deadline",
    "lockdown",
    "nginx",
    "ha",
    "homes",
    "memory",
)


def main_stack_rows(plan: Plan, only: set[str]) -> dict[str, list[Row]]:
    """Figures 1-4, 7 and 6 against one Stack (1 web, 3 workers); the slash-command load runs last, then memory."""
    pools = {"sl": 1, "ag": plan.approvals, "rv": plan.revokes, "bu": plan.burst, "dl": plan.deadline_grants}
    world = World(pools)
    stack = Stack(policy=world.policy, webs=1, workers=3)
    world.stack = stack
    rows: dict[str, list[Row]] = {}
    with stack:
        if "approve" in only:
            rows["approve"] = timed(
                "approve → granted", lambda: grants.approve_to_granted(stack, world, plan.approvals)
            )
            settle(stack)
        if "revoke" in only:
            rows["revoke"] = timed(
                "revoke lag", lambda: grants.revoke_lag(stack, world, plan.revokes, plan.revoke_seconds)
            )
            settle(stack)
        if "deadline" in only:
            shortest, longest = plan.deadline_seconds
            rows["deadline"] = timed(
                "revoke vs deadline",
                lambda: deadline.revoke_deadline(stack, world, plan.deadline_grants, shortest, longest),
            )
            settle(stack)
        if "burst" in only:
            rows["burst"] = timed("burst", lambda: grants.burst(stack, world, plan.burst))
            settle(stack)
        if "slash" in only:
            count, concurrency = plan.slash_requests, plan.slash_concurrency
            rows["slash"] = timed("slash commands", lambda: slash.slash_commands(stack, world, count, concurrency))
        if "metrics" in only:
            count, concurrency = plan.metrics_requests, plan.slash_concurrency
            rows["metrics"] = timed("metrics cost", lambda: metrics_cost.metrics_cost(stack, world, count, concurrency))
        if "memory" in only:
            rows["memory"] = memory.peak_memory(stack)
    reset_moto()  # moto's state is global to this process; the next Stack starts from nothing
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="jit-lb benchmarks (measurements only)")
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--stock-moto", action="store_true", help="leave moto's region-wide scans in place")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(FIGURES)} (default: all)")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(FIGURES)
    if only - set(FIGURES):
        parser.error(f"unknown figures: {', '.join(sorted(only - set(FIGURES)))}")
    plan = QUICK if args.quick else Plan()
    if not args.stock_moto:
        install_speedups()
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    figures = main_stack_rows(plan, only) if only - {"sweep", "lockdown", "nginx", "ha", "homes"} else {}
    if "sweep" in only:
        figures["sweep"] = timed("sweep", lambda: sweep.sweeps(list(plan.sweep_sizes), plan.sweep_expired))
        reset_moto()
    if "lockdown" in only:
        figures["lockdown"] = timed("lockdown", lambda: lockdown.lockdown(plan.lockdown_mix))
        reset_moto()
    if "nginx" in only:
        provider_rounds, flow_rounds, busy_rounds = plan.nginx_rounds
        figures["nginx"] = timed("nginx", lambda: nginx.nginx_figures(provider_rounds, flow_rounds, busy_rounds))
        reset_moto()
    if "ha" in only:
        figures["ha"] = timed("high availability", lambda: ha.ha_figures(args.quick))
        reset_moto()
    if "homes" in only:
        rounds = plan.home_storm_rounds
        figures["homes"] = timed("approval under a Home storm", lambda: home_storm.approval_under_home_storm(rounds))
        reset_moto()
    rows = [row for name in FIGURES for row in figures.get(name, [])]
    mode = "quick" if args.quick else "full"
    moto = "stock moto" if args.stock_moto else "moto with bench/moto_view.py speed-ups"
    title = (
        f"jit-lb benchmarks ({mode} counts) on {os.cpu_count()} cores; 1 web, 3 workers, {moto}; "
        f"wall time {time.monotonic() - started:.0f} s; load average {load_before:.2f} before it started"
    )
    print()
    print(render(title, rows))
    return 0
