"""What the operators' command lines (`python -m bot audit …`, `python -m bot policy …`) share."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def run(
    name: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    command: Callable[[argparse.Namespace], int],
    errors: type[Exception],
) -> int:
    """Parse `argv` and run `command` on it: its exit code; argparse's own for bad words (help is 0).

    An error of `errors` is said on stderr as `<name> <subcommand>: <error>`, exit 2.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return command(args)
    except errors as err:
        print(f"{name} {args.command}: {err}", file=sys.stderr)
        return 2
