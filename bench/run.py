"""Runs every figure against the product as the Procfile starts it, and prints the table."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench import grants, memory, slash, sweep
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


QUICK = Plan(
    slash_requests=200, approvals=10, revokes=30, revoke_seconds=15, burst=50, sweep_sizes=(200, 500), sweep_expired=50
)


def timed(name: str, step: Callable[[], list[Row]]) -> list[Row]:
    started = time.monotonic()
    grants.log(f"{name} ...")
    rows = step()
    grants.log(f"{name} done in {time.monotonic() - started:.1f}s")
    return rows


FIGURES = ("slash", "approve", "revoke", "burst", "sweep", "memory")


def main_stack_rows(plan: Plan, only: set[str]) -> list[Row]:
    """Figures 1-4 and 6 against one Stack (1 web, 3 workers); the slash-command load runs last, then memory."""
    world = World({"sl": 1, "ag": plan.approvals, "rv": plan.revokes, "bu": plan.burst})
    stack = Stack(policy=world.policy, webs=1, workers=3)
    world.stack = stack
    rows: list[Row] = []
    with stack:
        if "approve" in only:
            rows += timed("approve → granted", lambda: grants.approve_to_granted(stack, world, plan.approvals))
            settle(stack)
        if "revoke" in only:
            rows += timed("revoke lag", lambda: grants.revoke_lag(stack, world, plan.revokes, plan.revoke_seconds))
            settle(stack)
        if "burst" in only:
            rows += timed("burst", lambda: grants.burst(stack, world, plan.burst))
            settle(stack)
        if "slash" in only:
            count, concurrency = plan.slash_requests, plan.slash_concurrency
            rows[:0] = timed("slash commands", lambda: slash.slash_commands(stack, world, count, concurrency))
        if "memory" in only:
            rows += memory.peak_memory(stack)
    reset_moto()  # moto's state is global to this process; the sweep's Stack starts from nothing
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
    rows = main_stack_rows(plan, only) if only - {"sweep"} else []
    if "sweep" in only:
        sweep_rows = timed("sweep", lambda: sweep.sweeps(list(plan.sweep_sizes), plan.sweep_expired))
        peaks = [row for row in rows if row.name.startswith("6.")]
        rows = [row for row in rows if not row.name.startswith("6.")] + sweep_rows + peaks
    mode = "quick" if args.quick else "full"
    moto = "stock moto" if args.stock_moto else "moto with bench/moto_view.py speed-ups"
    title = (
        f"jit-lb benchmarks ({mode} counts) on {os.cpu_count()} cores; 1 web, 3 workers, {moto}; "
        f"wall time {time.monotonic() - started:.0f} s; load average {load_before:.2f} before it started"
    )
    print()
    print(render(title, rows))
    return 0
