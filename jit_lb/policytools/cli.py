"""`python -m bot policy explain|test|diff|schema` (docs/policy-tools.md): the policy author's commands.

Exit status: 0 the answer (for test: every case holds), 1 a case that does not hold, 2 the command
could not run (a bad argument, an invalid policy or cases file, an unknown target).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TextIO

from jit_lb import cli
from jit_lb.access.connections import RedisAddress, connect, parse_sentinels
from jit_lb.access.errors import JitError, StoreUnavailableError
from jit_lb.access.policy import Policy, load_policy
from jit_lb.access.requests import Status
from jit_lb.access.store import RequestStore
from jit_lb.clock import utcnow
from jit_lb.policytools.cases import load_cases, run_cases, summary
from jit_lb.policytools.diff import diff, grants_ended
from jit_lb.policytools.explain import explain
from jit_lb.policytools.judge import Directory
from jit_lb.policytools.schema import schema_text

SlackDirectory = Callable[[], Directory]  # Slack's usergroups when SLACK_BOT_TOKEN is set, else None (bot wires it)


def main(argv: Sequence[str], out: TextIO | None = None, slack: SlackDirectory = lambda: None) -> int:
    return cli.run("policy", _parser(), argv, lambda args: _command(args, out or sys.stdout, slack), JitError)


def _command(args: argparse.Namespace, out: TextIO, slack: SlackDirectory) -> int:
    if args.command == "schema":
        out.write(schema_text())
        return 0
    if args.command == "diff":
        return _diff(args, out)
    directory = _directory(args.usergroup, slack)
    policy = load_policy(args.file)
    now = args.at or utcnow()
    if args.command == "explain":
        for line in explain(policy, args.target, now, directory, args.user):
            print(line, file=out)
        return 0
    return _test(policy, args.cases, now, directory, out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot policy", description="Explain, test and compare a policy.")
    commands = parser.add_subparsers(dest="command", required=True)
    explain_ = commands.add_parser("explain", help="who may request and approve a target, and on what terms")
    explain_.add_argument("file", metavar="FILE", help="the policy file")
    explain_.add_argument("--target", required=True, metavar="T")
    explain_.add_argument("--user", metavar="U", help="whether this user may request it now, and if not why")
    test = commands.add_parser("test", help="run a cases file (user, target, expect) against the policy")
    test.add_argument("file", metavar="FILE", help="the policy file")
    test.add_argument("cases", metavar="CASES", help="a YAML list of cases: user, target, expect, …")
    for sub in (explain_, test):
        sub.add_argument("--at", type=_instant, metavar="TIME", help="judge at this instant (ISO 8601), not now")
        sub.add_argument(
            "--usergroup",
            action="append",
            default=[],
            type=_usergroup,
            metavar="S…=U…,U…",
            help="a usergroup's members (else Slack's, with SLACK_BOT_TOKEN; else unknown)",
        )
    diff_ = commands.add_parser("diff", help="what an edit changes, and the active grants it would end")
    diff_.add_argument("old", metavar="OLD")
    diff_.add_argument("new", metavar="NEW")
    commands.add_parser("schema", help="the policy file's JSON Schema")
    return parser


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time, e.g. 2026-12-24T02:00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _usergroup(text: str) -> tuple[str, list[str]]:
    group, _, members = text.partition("=")
    if not group.startswith("S") or not members.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: give a usergroup and its members, e.g. S0SRE=U0DEV1,U0DEV3")
    return group, [member.strip() for member in members.split(",") if member.strip()]


def _directory(given: list[tuple[str, list[str]]], slack: SlackDirectory) -> Directory:
    """Members named on the command line win; then Slack's (when a token is set); else nobody knows them."""
    named: dict[str, list[str] | None] = dict(given)
    asked = slack()
    if not named:
        return asked
    return lambda group: named[group] if group in named else (asked(group) if asked is not None else None)


def _test(policy: Policy, path: str, now: datetime, directory: Directory, out: TextIO) -> int:
    results = run_cases(policy, load_cases(path), now, directory)
    for result in results:
        print(result.line, file=out)
    print(summary(results), file=out)
    return 0 if all(result.passed for result in results) else 1


def _diff(args: argparse.Namespace, out: TextIO) -> int:
    old, new = load_policy(args.old), load_policy(args.new)
    for line in diff(old, new):
        print(line, file=out)
    url = os.environ.get("REDIS_URL")
    sentinels = os.environ.get("REDIS_SENTINELS")
    if not url and not sentinels:
        print("active grants: not read (REDIS_URL is not set)", file=out)
        return 0
    try:
        address = RedisAddress(
            url or "redis://localhost:6379/0",
            parse_sentinels(sentinels or ""),
            os.environ.get("REDIS_SENTINEL_MASTER") or "mymaster",
        )
        store = RequestStore(connect(address))
        active = [request for request in store.open_requests() if request.status is Status.GRANTED]
    except (StoreUnavailableError, ValueError) as err:
        print(f"active grants: not read ({err})", file=out)
        return 0
    ended = grants_ended(new, active)
    print(f"active grants this edit would end (reason policy): {len(ended)} of {len(active)}", file=out)
    for line in ended:
        print(line, file=out)
    return 0
