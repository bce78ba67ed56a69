"""`python -m bot` runs the web process; `python -m bot check-policy FILE` validates a policy file; `python -m bot
audit verify|who|report FILE…` reads audit logs (jit_lb/auditing/cli.py)."""

from __future__ import annotations

import signal
import sys

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
        print(
            f"  {name}: {target.grant.kind}, {format_duration(target.min_duration)}.."
            f"{format_duration(target.max_duration)} (default {format_duration(target.default_duration)}), "
            f"{target.approvals_required} of {', '.join(target.approvers)}"
        )
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["check-policy"]:
        if len(argv) != 2:
            print("usage: python -m bot check-policy FILE", file=sys.stderr)
            return 2
        return check_policy(argv[1])
    if argv[:1] == ["audit"]:
        from jit_lb.auditing.cli import main as audit

        return audit(argv[1:])
    if argv:
        print("usage: python -m bot [check-policy FILE | audit verify|who|report …]", file=sys.stderr)
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
