"""Runs every figure against the product as the Procfile starts it, and prints the table."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench import deadline, grants, ha, home_storm, iam_drop, lockdown, memory, metrics_cost, nginx, slash, sweep
from bench.goals import Goals
from bench.latency_proxy import latency_proxy
from bench.lockdown import Mix
from bench.moto_view import install_speedups, reset_moto
from bench.plots import Collected
from bench.stats import Row, empty_rows, render, summarize
from bench.world import World, settle, workers_through
from devtools.stack import Stack

T = TypeVar("T")


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
    lockdown_iam: int = 100  # IAM policies one drop_all removes (bench/iam_drop.py)
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
    lockdown_iam=20,
    nginx_rounds=(10, 3, 1),
    home_storm_rounds=1,
    metrics_requests=200,
)


def timed_result(name: str, step: Callable[[], T]) -> T:
    started = time.monotonic()
    grants.log(f"{name} ...")
    result = step()
    grants.log(f"{name} done in {time.monotonic() - started:.1f}s")
    return result


def timed(name: str, step: Callable[[], list[Row]]) -> list[Row]:
    return timed_result(name, step)


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


@dataclass
class Measured:
    """What the runs produced besides the table: the goals, and the samples for the pictures."""

    goals: Goals = field(default_factory=Goals)
    plots: Collected = field(default_factory=Collected)


def latency_label(latency_ms: float) -> str:
    return f"{latency_ms:.0f} ms AWS latency" if latency_ms else "no added latency"


def deadline_runs(stack: Stack, world: World, plan: Plan, latency_ms: float, measured: Measured) -> list[Row]:
    """The deadline figure straight to moto, then with the workers' AWS calls through the latency proxy."""
    shortest, longest = plan.deadline_seconds
    rows: list[Row] = []
    for delay_ms in (0.0, latency_ms):
        label = latency_label(delay_ms)
        with contextlib.ExitStack() as proxied:
            if delay_ms:
                workers_through(stack, proxied.enter_context(latency_proxy(stack.moto.endpoint, delay_ms / 1000)))
            result = timed(
                f"revoke vs deadline, {label}",
                lambda label=label: deadline.revoke_deadline(
                    stack, world, plan.deadline_grants, shortest, longest, label
                ),
            )
            settle(stack)
            if delay_ms:
                workers_through(stack, None)
        rows += result.rows
        measured.plots.deadline[label] = result.differences_s
        measured.plots.deadline_spread[label] = result.ends_spread_s
        p99 = summarize(result.differences_s).p99
        p50_short = summarize(result.cut_short_s).p50
        measured.goals.add(f"deadline, {label}: p99 (gone - end) <= 0 s", f"{p99:+.2f} s", p99 <= 0)
        measured.goals.add(
            f"deadline, {label}: access cut short p50 <= 2 s",
            f"{p50_short:.2f} s",
            len(result.cut_short_s) > 0 and p50_short <= 2,
        )
    return rows


def main_stack_rows(plan: Plan, only: set[str], latency_ms: float, measured: Measured) -> dict[str, list[Row]]:
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
            rows["deadline"] = deadline_runs(stack, world, plan, latency_ms, measured)
        if "burst" in only:
            rows["burst"] = timed("burst", lambda: grants.burst(stack, world, plan.burst))
            settle(stack)
        if "slash" in only:
            count, concurrency = plan.slash_requests, plan.slash_concurrency
            result = timed_result("slash commands", lambda: slash.slash_commands(stack, world, count, concurrency))
            rows["slash"] = result.rows
            measured.goals.add(
                "slash: p99 jit-lb (workers paused) <= 1.5x the fair floor (median of 3 rounds)",
                f"{result.ratio:.2f}x (workers live: {result.live_ratio:.2f}x)",
                result.ratio <= 1.5,
            )
        if "metrics" in only:
            count, concurrency = plan.metrics_requests, plan.slash_concurrency
            rows["metrics"] = timed("metrics cost", lambda: metrics_cost.metrics_cost(stack, world, count, concurrency))
        if "memory" in only:
            rows["memory"] = memory.peak_memory(stack)
    reset_moto()  # moto's state is global to this process; the next Stack starts from nothing
    return rows


def lockdown_runs(plan: Plan, latency_ms: float, measured: Measured) -> list[Row]:
    """The lockdown figure without and with the latency proxy, each on a Stack of its own."""
    rows: list[Row] = []
    for delay_ms in (0.0, latency_ms):
        label = latency_label(delay_ms)
        result = timed_result(f"lockdown, {label}", lambda d=delay_ms: lockdown.lockdown(plan.lockdown_mix, d / 1000))
        reset_moto()
        rows += result.rows
        measured.plots.lockdown[label] = result.gone_by_kind
        last = "objects left" if result.last_s is None else f"{result.last_s:.2f} s"
        met = result.last_s is not None and result.last_s <= 3
        measured.goals.add(f"lockdown of {plan.lockdown_mix.total:,} grants, {label}: last gone <= 3 s", last, met)
        twice = next(row.value for row in result.rows if row.name.strip() == "lockdown jobs run twice")
        measured.goals.add(f"lockdown, {label}: no job run twice", twice, twice.startswith("0 of"))
        rows += timed(
            f"lockdown's IAM work, {label}",
            lambda d=delay_ms, named=label: iam_drop.iam_drops(plan.lockdown_iam, d / 1000, named),
        )
        reset_moto()
    return rows


def sweep_goal(rows: list[Row], measured: Measured) -> None:
    """The largest sweep's time against its goal (< 10 s at 5,000 rules), from its row."""
    sized = [row for row in rows if row.goal.startswith("< 10 s")]
    if sized:
        seconds = float(sized[-1].value.split()[0])
        measured.goals.add(f"{sized[-1].name.strip()} < 10 s", sized[-1].value, seconds < 10)


def kept_goals(rows: list[Row], measured: Measured) -> None:
    """The figures kept from before issue 19: the burst's 0 lost and 0 double."""
    found = {row.name.strip(): row.value for row in rows}
    lost, double = found.get("burst: lost (clicked, never granted)"), found.get("burst: double grants")
    if lost is not None and double is not None:
        measured.goals.add("burst: 0 lost, 0 double", f"{lost} lost, {double} double", (lost, double) == ("0", "0"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="jit-lb benchmarks (measurements only)")
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--stock-moto", action="store_true", help="leave moto's region-wide scans in place")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(FIGURES)} (default: all)")
    parser.add_argument(
        "--aws-latency",
        type=float,
        default=50.0,
        metavar="MS",
        help="milliseconds the latency proxy adds to every AWS call in the deadline and lockdown figures' second "
        "run (default 50)",
    )
    parser.add_argument("--plots", default="bench-plots", help="directory the PNG pictures are written to")
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(FIGURES)
    if only - set(FIGURES):
        parser.error(f"unknown figures: {', '.join(sorted(only - set(FIGURES)))}")
    plan = QUICK if args.quick else Plan()
    if not args.stock_moto:
        install_speedups()
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    measured = Measured()
    main_figures = only - {"sweep", "lockdown", "nginx", "ha", "homes"}
    figures = main_stack_rows(plan, only, args.aws_latency, measured) if main_figures else {}
    if "sweep" in only:
        figures["sweep"] = timed("sweep", lambda: sweep.sweeps(list(plan.sweep_sizes), plan.sweep_expired))
        sweep_goal(figures["sweep"], measured)
        reset_moto()
    if "lockdown" in only:
        figures["lockdown"] = lockdown_runs(plan, args.aws_latency, measured)
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
    kept_goals(rows, measured)
    mode = "quick" if args.quick else "full"
    moto = "stock moto" if args.stock_moto else "moto with bench/moto_view.py speed-ups"
    stack = "1 web, 3 workers" if main_figures else "each figure's own processes (see its rows)"
    title = (
        f"jit-lb benchmarks ({mode} counts) on {os.cpu_count()} cores; {stack}, {moto}; "
        f"wall time {time.monotonic() - started:.0f} s; load average {load_before:.2f} before it started, "
        f"{os.getloadavg()[0]:.2f} at the end"
    )
    print()
    print(render(title, rows))
    if measured.goals.goals:  # a run of figures with no goal (--only ha, say) prints no empty heading
        print()
        print(measured.goals.render())
    for path in measured.plots.write(Path(args.plots)):
        print(f"picture: {path}")
    empty = empty_rows(rows)
    if empty:
        print(f"\nFAILED: {len(empty)} row(s) printed with no samples: {'; '.join(empty)}", file=sys.stderr)
        return 1
    return 0
