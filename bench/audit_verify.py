"""`python -m bench.audit_verify`: time `python -m bot audit verify` (and `who`, `report`) over a million records.

A log of web and worker chains is generated into a temporary folder the way the writer writes it (HMAC
chain, records the size of the real ones), rotated into four files with the two oldest gzipped, then each
command runs as a subprocess, timed by the wall clock, its peak RSS read from wait4's rusage. The
writer's own cost per record (AuditLog.record, chain and head file included) is measured too. Not part of
`make test` or `make bench`: it takes a minute or two and a few hundred MB of disk.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from jit_lb.audit.chain import Hasher, canonical
from jit_lb.audit.writer import AuditLog

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-audit-key-0b7f3c9d2e6a4f18a5c1"
CHAINS = ("web.1", "web.2", "worker.1", "worker.2", "worker.3")
FILES = 4  # audit.log.3.gz, audit.log.2.gz, audit.log.1, audit.log


class Chain:
    """One writer's chain, sealed the way jit_lb/audit/writer.py seals a record."""

    def __init__(self, name: str, hasher: Hasher) -> None:
        self.id = f"{name}@bench.{random.getrandbits(32):08x}"
        self.seq = 0
        self.hash = ""
        self.hasher = hasher

    def line(self, record: dict[str, Any]) -> bytes:
        self.seq += 1
        record = {**record, "chain": self.id, "seq": self.seq, "prev": self.hash}
        body = json.dumps(record, ensure_ascii=False).encode()
        self.hash = self.hasher(canonical(record))
        return body[:-1] + b', "hash": "' + self.hash.encode() + b'"}\n'


def lifecycle(n: int, now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """One request's records, as (writer kind, record): created and approved by the web, the rest by a worker."""
    request_id = f"jit-{n:06x}"
    user = f"U0DEV{n % 40}"
    common = {
        "request_id": request_id,
        "target": f"lb-{n % 7}",
        "requester": user,
        "request_reason": f"OPS-{n % 9000} debugging 502s from eu-west after the {n % 13} deploy",
        "duration_seconds": 1800,
        "source_cidr": f"203.0.113.{n % 250}/32",
    }
    rule = f"sgr-{n:017x} on sg-3426609f0920049d4: tcp/443 from 203.0.113.{n % 250}/32"
    granted, ended = now, now + timedelta(minutes=30)

    def at(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    return [
        ("web", {"ts": at(now), "event": "request.created", "actor": user, **common, "status": "pending"}),
        (
            "web",
            {
                "ts": at(now),
                "event": "request.approved",
                "actor": "U0APPROVER1",
                **common,
                "status": "approved",
                "approvers": ["U0APPROVER1"],
                "approvals": 1,
            },
        ),
        (
            "worker",
            {
                "ts": at(granted),
                "event": "grant.applied",
                "actor": "system",
                **common,
                "status": "granted",
                "approvers": ["U0APPROVER1"],
                "granted_at": granted.isoformat(),
                "ends_at": ended.isoformat(),
                "objects": [f"sgr-{n:017x}"],
                "created": [rule],
                "verified": True,
                "kind": "aws_security_group",
            },
        ),
        (
            "worker",
            {
                "ts": at(ended),
                "event": "grant.revoked",
                "actor": "system",
                **common,
                "status": "revoked",
                "approvers": ["U0APPROVER1"],
                "reason": "expired",
                "granted_at": granted.isoformat(),
                "ended_at": ended.isoformat(),
                "ends_at": ended.isoformat(),
                "lasted_seconds": 1800,
                "removed": [rule],
                "verified": True,
            },
        ),
        (
            "worker",
            {
                "ts": at(ended),
                "event": "grant.activity",
                "actor": "system",
                **common,
                "status": "revoked",
                "changes": [{"what": "sg-3426609f0920049d4 rule tcp/22", "before": None, "after": "10.0.0.0/8"}]
                if n % 10 == 0
                else [],
            },
        ),
    ]


def generate(folder: Path, records: int) -> tuple[list[Path], int, int]:
    """The rotated files (oldest first, the two oldest gzipped), their total bytes uncompressed, and the count."""
    hasher = Hasher(KEY.encode())
    chains = {name: Chain(name, hasher) for name in CHAINS}
    webs = [chains[name] for name in CHAINS if name.startswith("web")]
    workers = [chains[name] for name in CHAINS if name.startswith("worker")]
    per_file = records // FILES + 1
    paths = [folder / ("audit.log" if n == 0 else f"audit.log.{n}") for n in reversed(range(FILES))]
    written = size = n = 0
    start = datetime(2026, 11, 1, tzinfo=UTC)
    outputs = [path.open("wb", buffering=1 << 20) for path in paths]
    try:
        while written < records:
            moment = start + timedelta(seconds=n * 7)
            for kind, record in lifecycle(n, moment):
                chain = random.choice(webs if kind == "web" else workers)
                line = chain.line(record)
                outputs[min(written // per_file, FILES - 1)].write(line)
                written, size = written + 1, size + len(line)
                if written % 20_000 == 0:  # every writer checkpoints now and then
                    for other in chains.values():
                        checkpoint = {"ts": record["ts"], "event": "audit.checkpoint", "actor": "system"}
                        outputs[min(written // per_file, FILES - 1)].write(
                            other.line({**checkpoint, "reason": "interval"})
                        )
                        written += 1
                if written >= records:
                    break
            n += 1
    finally:
        for output in outputs:
            output.close()
    for index in (0, 1):  # the two oldest, as logrotate's `compress` leaves them
        with paths[index].open("rb") as plain, gzip.open(f"{paths[index]}.gz", "wb", compresslevel=6) as packed:
            shutil.copyfileobj(plain, packed, 1 << 20)
        paths[index].unlink()
        paths[index] = Path(f"{paths[index]}.gz")
    return paths, size, written


def run(args: list[str]) -> tuple[float, int, int, str]:
    """Run `python -m bot audit …`; wall seconds, peak RSS in KiB (this child alone), exit status, output tail."""
    env = {**os.environ, "JIT_AUDIT_KEY": KEY}
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "bot", "audit", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert child.stdout is not None
    tail = b""
    for chunk in iter(lambda: child.stdout.read(1 << 16), b""):  # type: ignore[union-attr]
        tail = (tail + chunk)[-2000:]
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - started, usage.ru_maxrss, child.returncode, tail.decode(errors="replace")


def writer_cost(folder: Path, count: int = 20_000) -> float:
    """Microseconds per AuditLog.record with the chain (HMAC, head file) on this disk."""
    audit = AuditLog.open(str(folder / "writer.log"))
    audit.start_chain("worker", SecretStr(KEY))
    fields = {
        "requester": "U0DEV1",
        "status": "granted",
        "request_reason": "debugging 502s from eu-west",
        "duration_seconds": 1800,
        "source_cidr": "203.0.113.7/32",
        "approvers": ["U0APPROVER1"],
        "objects": ["sgr-0d158757688d86db2"],
        "verified": True,
    }
    started = time.perf_counter()
    for _ in range(count):
        audit.record("grant.applied", actor="system", target="lb-prod", request_id="jit-abcdef", **fields)
    elapsed = time.perf_counter() - started
    audit.close()
    return elapsed / count * 1e6


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_verify", description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="leave the generated files in place")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="jitlb-audit-bench-"))
    try:
        started = time.monotonic()
        paths, size, written = generate(folder, args.records)
        generated = time.monotonic() - started
        on_disk = sum(path.stat().st_size for path in paths)
        files = [str(path) for path in reversed(paths)]  # newest first, as a shell glob gives them
        print(f"generated {written:,} records in {len(CHAINS)} chains, {size / 2**20:.0f} MiB of JSON lines")
        print(f"  ({on_disk / 2**20:.0f} MiB on disk in {len(paths)} files, two gzipped) in {generated:.1f}s")
        print(f"  average record {size / written:.0f} bytes")
        rows = []
        for name, command in (
            ("verify", ["verify", *files]),
            ("who", ["who", "lb-3", "--at", "2026-11-20T12:00:00Z", *files]),
            ("report (csv)", ["report", "--target", "lb-3", *files]),
        ):
            wall, peak, status, tail = run(command)
            rows.append((name, wall, peak, status))
            if name == "verify":
                print(tail.strip().splitlines()[0])
        print()
        print(f"{'command':<14} {'wall':>8} {'records/s':>11} {'peak RSS':>10} {'exit':>5}")
        for name, wall, peak, status in rows:
            print(f"{name:<14} {wall:>7.1f}s {written / wall:>11,.0f} {peak / 1024:>8.0f} MB {status:>5}")
        print(f"\nAuditLog.record with the chain: {writer_cost(folder):.1f} µs a record (20,000 records, this disk)")
    finally:
        if args.keep:
            print(f"files kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
