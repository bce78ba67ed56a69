"""`python -m bot audit verify|export|who|report FILE…` (docs/auditors.md): the auditor's commands, run where the
files are.

Exit status: 0 the answer (for verify: every chain whole), 1 verify found something wrong (for export: a line
that is not verified, or a chain cut short), 2 the command could not run (a bad argument, an unreadable file).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from jit_lb import cli
from jit_lb.access.errors import AuditFileError
from jit_lb.audit.files import Line, lines, oldest_first
from jit_lb.audit.ocsf import to_ocsf, unreadable
from jit_lb.audit.trails import COLUMNS, Filters, Reading, parse_instant, report, who
from jit_lb.audit.verify import Checkpoint, Outcome, Verifier

FILES = "log files, rotated and gzipped ones too, read oldest first (audit.log.2.gz, audit.log.1, audit.log)"


class AuditorSettings(BaseSettings):
    """The one variable the auditor's machine needs; the product's Settings would ask for a Slack token too."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)

    jit_audit_key: SecretStr | None = None


def main(argv: Sequence[str], out: TextIO | None = None) -> int:
    return cli.run("audit", _parser(), argv, lambda args: _command(args, out or sys.stdout), AuditFileError)


def _command(args: argparse.Namespace, out: TextIO) -> int:
    files = oldest_first(args.files)
    if args.command == "verify":
        return _verify(args, files, out)
    if args.command == "who":
        return _who(args, files, out)
    if args.command == "export":
        return _export(args, files, out)
    return _report(args, files, out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot audit", description="Read jit-lb audit logs.")
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="exit 0 when every chain in the files is whole, else 1 naming the line")
    verify.add_argument("files", nargs="+", metavar="FILE", help=FILES)
    _verify_options(verify)

    export = commands.add_parser(
        "export", help="every record as an OCSF event, one JSON object a line, each verified as it is read"
    )
    export.add_argument("--format", choices=("ocsf",), required=True, help="ocsf: OCSF 1.7.0 events")
    export.add_argument(
        "--flag-unverified",
        action="store_true",
        help="export a line that fails verification too, labelled `unverified` (default: stop there, exit 1)",
    )
    export.add_argument("files", nargs="+", metavar="FILE", help=FILES)
    _verify_options(export)

    who_ = commands.add_parser("who", help="who had access to a target at an instant, from the log alone")
    who_.add_argument("target", metavar="TARGET")
    who_.add_argument("--at", required=True, type=_instant, metavar="TIME", help="ISO 8601; without a zone, UTC")
    who_.add_argument("--format", choices=("text", "json"), default="text", help="json: one object a line")
    who_.add_argument("files", nargs="+", metavar="FILE", help=FILES)
    _verify_options(who_)

    report_ = commands.add_parser("report", help="one row per request, as CSV (with a header) or JSON lines")
    report_.add_argument("--since", type=_instant, metavar="T", help="requests still open at or after T")
    report_.add_argument("--until", type=_instant, metavar="T", help="requests begun before T")
    report_.add_argument("--target", metavar="X")
    report_.add_argument("--user", metavar="U", help="requests U made or approved")
    report_.add_argument("--format", choices=("csv", "json"), default="csv", help="json: one object a line")
    report_.add_argument("files", nargs="+", metavar="FILE", help=FILES)
    _verify_options(report_)
    return parser


def _verify_options(parser: argparse.ArgumentParser) -> None:
    """verify's options; who and report take them too, since they verify every line as they read it."""
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        type=_checkpoint,
        metavar="CHAIN:SEQ:HASH",
        help="a checkpoint as posted to the audit channel: the chain must reach that seq with that hash",
    )
    parser.add_argument(
        "--key-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a file holding a retired JIT_AUDIT_KEY, for chains written before the key was rotated",
    )
    parser.add_argument(
        "--also-unkeyed", action="store_true", help="with a key, also accept SHA-256 chains (from before a key was set)"
    )
    parser.add_argument(
        "--partial", action="store_true", help="chains may begin after seq 1 (older files are not given)"
    )


def _checkpoint(text: str) -> Checkpoint:
    try:
        return Checkpoint.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time, e.g. 2026-11-23T21:00:00Z") from None


# --- verify ----------------------------------------------------------------------------------------


def _verifier(args: argparse.Namespace) -> tuple[Verifier, bool]:
    """The Verifier the options ask for, and whether it has a key."""
    keys = []
    current = AuditorSettings().jit_audit_key
    if current is not None and current.get_secret_value():
        keys.append(current.get_secret_value().encode())
    for key_file in args.key_file:
        try:
            keys.append(Path(key_file).read_text(encoding="utf-8").strip().encode())
        except OSError as err:
            raise AuditFileError(key_file, None, f"cannot be read ({err.strerror or err})") from None
    verifier = Verifier(keys, checkpoints=args.checkpoint, also_unkeyed=args.also_unkeyed, partial=args.partial)
    return verifier, bool(keys)


def _verify(args: argparse.Namespace, files: list[str], out: TextIO) -> int:
    verifier, keyed = _verifier(args)
    outcome = verifier.run(files)
    _print_outcome(outcome, keyed, out)
    if not args.checkpoint:
        print(f"warning: {NO_CHECKPOINT}", file=out)
    return 0 if outcome.ok else 1


NO_CHECKPOINT = (
    "no --checkpoint given, so a cut tail cannot be seen: records removed from the end of a chain leave the rest "
    "whole. Give the latest checkpoint of each chain posted to the audit channel."
)


def _print_outcome(outcome: Outcome, keyed: bool, out: TextIO) -> None:
    if outcome.finding is not None:
        print(f"FAILED {outcome.finding}", file=out)
        print(f"({outcome.records} good records before it; files, oldest first: {', '.join(outcome.files)})", file=out)
        return
    how = "HMAC-SHA256 with the key(s) given" if keyed else "plain SHA-256 (no JIT_AUDIT_KEY set)"
    print(f"ok: {outcome.records} records in {len(outcome.chains)} chain(s), {how}", file=out)
    print(f"files, oldest first: {', '.join(outcome.files)}", file=out)
    for note in outcome.notes:
        print(f"note: {note}", file=out)
    for summary in outcome.chains.values():
        line = f"  {summary.chain}: seq {summary.first_seq}..{summary.seq}{'' if summary.keyed else ' (unkeyed)'}"
        if summary.checkpoint is not None:
            seq, digest, reason = summary.checkpoint
            line += f", last checkpoint {summary.chain}:{seq}:{digest} ({reason})"
        print(line, file=out)


# --- export ----------------------------------------------------------------------------------------


def _export(args: argparse.Namespace, files: list[str], out: TextIO) -> int:
    """One OCSF event a line, each record verified against its chain as it is read (docs/ocsf-export.md).

    A line that fails verification stops the export (exit 1, naming it), or with --flag-unverified is
    exported labelled `unverified` and the rest of its chain is judged afresh; never exported as sound.
    """
    verifier, _ = _verifier(args)
    outcome = Outcome(files=files)
    exported = flagged = 0
    for line in lines(files):
        record, finding = verifier.read(line, outcome)
        if finding is None and record is None:
            continue  # a blank line
        if finding is not None:
            if not args.flag_unverified:
                print(f"audit export: stopped: {finding} ({exported} events exported before it)", file=sys.stderr)
                return 1
            flagged += 1
            verifier.resume(record, outcome)
            labels = ["unverified", f"unverified: {finding.what}"]
            event = to_ocsf(record, labels) if record is not None else unreadable(line.raw, labels)
        else:
            assert record is not None  # a verified line is a record
            event = to_ocsf(record)
        out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
        exported += 1
    cut = verifier.cut(outcome)
    if cut is not None:
        print(f"audit export: {cut} ({exported} events exported)", file=sys.stderr)
        return 1
    if flagged:
        print(f"audit export: {flagged} of {exported} events labelled unverified", file=sys.stderr)
        return 1
    _warn_without_checkpoint(args)
    return 0


# --- who and report --------------------------------------------------------------------------------


def _verified(args: argparse.Namespace, files: list[str]) -> tuple[Iterator[Line], Outcome]:
    """The files' lines, each verified as it is read: they stop at the first that verify rejects (see Outcome)."""
    verifier, _ = _verifier(args)
    outcome = Outcome(files=files)
    return verifier.passing(lines(files), outcome), outcome


def _refused(command: str, outcome: Outcome) -> int:
    """who and report answer nothing from files that do not verify: they say which line, and exit 1."""
    print(
        f"audit {command}: refused: the files do not verify, so no answer is given from them.\n"
        f"FAILED {outcome.finding}\n(`python -m bot audit verify` with the same files says the same)",
        file=sys.stderr,
    )
    return 1


def _who(args: argparse.Namespace, files: list[str], out: TextIO) -> int:
    verified, outcome = _verified(args, files)
    reading = Reading(verified, needle=json.dumps(args.target, ensure_ascii=False).encode())
    grants = who(args.target, args.at, reading)
    if not outcome.ok:
        return _refused("who", outcome)
    reading.warn()
    _warn_without_checkpoint(args)
    if args.format == "json":
        for grant in grants:
            print(json.dumps(grant, ensure_ascii=False), file=out)
        return 0
    moment = args.at.isoformat().replace("+00:00", "Z")
    if not grants:
        print(f"nobody had access to {args.target} at {moment}", file=out)
    for grant in grants:
        approved = f"approved by {', '.join(grant['approvers'])}" if grant["approvers"] else "no approver"
        print(
            f"{grant['request_id']}  {grant['requester']}  from {grant['source']}  "
            f"granted {grant['granted_at']} until {grant['until']} ({grant['how']})  "
            f"{'break-glass' if grant['break_glass'] else approved}",
            file=out,
        )
    return 0


def _report(args: argparse.Namespace, files: list[str], out: TextIO) -> int:
    verified, outcome = _verified(args, files)
    reading = Reading(verified)
    rows = report(reading, Filters(since=args.since, until=args.until, target=args.target, user=args.user))
    # Rows stream as requests close; they wait in a spooled file until the last line verified, so that a
    # line verify rejects stops the report before any of it is given.
    with tempfile.SpooledTemporaryFile(max_size=_REPORT_IN_MEMORY, mode="w+", encoding="utf-8", newline="") as held:
        if args.format == "json":
            for row in rows:
                print(json.dumps(row, ensure_ascii=False), file=held)
        else:
            writer = csv.DictWriter(held, fieldnames=COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow(_csv_row(row))
        if not outcome.ok:
            return _refused("report", outcome)
        held.seek(0)
        shutil.copyfileobj(held, out)
    reading.warn()
    _warn_without_checkpoint(args)
    return 0


_REPORT_IN_MEMORY = 8 << 20  # bytes of a report held in memory before it waits on disk


def _warn_without_checkpoint(args: argparse.Namespace) -> None:
    if not args.checkpoint:
        print(f"note: every line verified as read; {NO_CHECKPOINT}", file=sys.stderr)


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    cells = dict(row)
    cells["approvers"] = " ".join(row["approvers"])
    cells["mfa"] = "yes" if row["mfa"] else "no"
    cells["break_glass"] = "yes" if row["break_glass"] else "no"
    changes = row["changes"]
    cells["changes"] = "" if changes is None else "; ".join(_change(c) for c in changes) or "no changes"
    return {column: _inert(value) for column, value in cells.items()}


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: Any) -> Any:
    """A text cell a spreadsheet would read as a formula (`=HYPERLINK(…)` typed as a reason) starts with `'`."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def _change(change: Any) -> str:
    if not isinstance(change, dict):
        return _plain(change)
    return f"{_plain(change.get('what'))}: {_plain(change.get('before'))} -> {_plain(change.get('after'))}"


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
