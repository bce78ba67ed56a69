"""`python -m bot` runs the web process; `python -m bot check-policy FILE` validates a policy file; `python -m bot
audit verify|who|report FILE…` reads audit logs (jit_lb/audit/cli.py); `python -m bot policy
explain|test|diff|schema` explains, tests and compares policies (jit_lb/policytools/cli.py); `python -m bot mfa
reset USER REASON…` is the operator's way out when no admin can step up."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from jit_lb.access.durations import format_duration
from jit_lb.access.errors import JitError
from jit_lb.access.policy import load_policy
from jit_lb.logs import configure_logging


def check_policy(path: str) -> int:
    """Validate a policy file and print its targets; exit 1 naming the field when it is invalid."""
    try:
        policy = load_policy(path)
    except JitError as err:
        print(f"invalid policy: {err}", file=sys.stderr)
        return 1
    print(f"{path}: valid; {len(policy.targets)} target(s), {len(policy.principals)} principal(s)")
    for name, target in sorted(policy.targets.items()):
        grant = target.grant
        where = (
            f" (allow_file {grant.allow_file}, pid_file {grant.pid_file})" if grant.kind == "nginx_allowlist" else ""
        )
        print(
            f"  {name}: {grant.kind}{where}, {format_duration(target.min_duration)}.."
            f"{format_duration(target.max_duration)} (default {format_duration(target.default_duration)}), "
            f"{target.approvals_required} of {', '.join(target.approvers)}"
        )
    return 0


def mfa_reset(who: str, why: str) -> int:
    """`python -m bot mfa reset USER REASON…`: remove an enrolment with the processes' environment, when no admin
    can step up (a lost JIT_MFA_KEY, a sole admin's lost phone); recorded and told as an admin's reset is."""
    from bot.service.mfa import MfaService
    from jit_lb.settings import load_settings
    from slack_out.process import connect

    user = who.strip("<@>").split("|")[0].upper()
    if user[:1] not in {"U", "W"} or not user.isalnum():
        print(f"`{who[:40]}` is not a user id (U…)", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        configure_logging(settings.jit_log_level)
        rt, notifier = connect(settings)
        rt.audit.start_chain("cli", settings.jit_audit_key, witness=notifier.post_checkpoint)
        print(MfaService(rt, notifier).operator_reset(user, why))
        rt.audit.checkpoint("stop", background=False)
    except JitError as err:
        print(f"jit-lb mfa reset: {err}", file=sys.stderr)
        return 1
    return 0


def slack_usergroups() -> Callable[[str], list[str] | None] | None:
    """Usergroup members from Slack for the policy tools, when SLACK_BOT_TOKEN is set; else None (unknown).

    A group Slack does not answer for is unknown (None), not empty: the tools then say its members are not
    known, where the product itself would count them as nobody.
    """
    token = os.environ.get("SLACK_BOT_TOKEN")
    if not token:
        return None
    from slack_sdk import WebClient

    from slack_out.poster import call

    url = os.environ.get("SLACK_API_URL", "https://slack.com/api/")
    client = WebClient(token=token, base_url=url if url.endswith("/") else url + "/", timeout=10)

    def members(group: str) -> list[str] | None:
        answer = call(client, "usergroups.users.list", usergroup=group)
        return None if answer is None else [str(user) for user in answer.get("users", [])]

    return members


def main(argv: list[str]) -> int:
    if argv[:1] == ["check-policy"]:
        if len(argv) != 2:
            print("usage: python -m bot check-policy FILE", file=sys.stderr)
            return 2
        return check_policy(argv[1])
    if argv[:1] == ["audit"]:
        from jit_lb.audit.cli import main as audit

        return audit(argv[1:])
    if argv[:1] == ["policy"]:
        from jit_lb.policytools.cli import main as policy_tools

        return policy_tools(argv[1:], slack=slack_usergroups)
    if argv[:2] == ["mfa", "reset"] and len(argv) >= 4:
        return mfa_reset(argv[2], " ".join(argv[3:]))
    if argv:
        print(
            "usage: python -m bot [check-policy FILE | audit verify|who|report … | policy explain|test|diff|schema … "
            "| mfa reset USER REASON…]",
            file=sys.stderr,
        )
        return 2
    # SIGHUP reads the policy again once the server runs (bot/app.py); during start-up the file is read anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from bot.app import serve
    from jit_lb.settings import load_settings

    try:
        settings = load_settings(web=True)
        configure_logging(settings.jit_log_level)
        serve(settings)
    except JitError as err:
        print(f"jit-lb web: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
