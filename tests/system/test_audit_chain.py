"""The audit chain with the Procfile's processes: web and two workers write one log, `python -m bot audit` reads it.

The log is checked as an auditor would: `verify` passes on it as written and names the line of each kind of
tampering; `who` and `report` tell the grants this test made; a worker stopped and started again continues
its chain, across a rotation with the older file gzipped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from devtools.stack import ROOT, Stack
from jit_lb.audit.chain import canonical
from jit_lb.audit.ocsf import OCSF_VERSION
from tests.helpers import APPROVALS, granted, rules_of, stack_policy
from tests.ocsf_schema import OcsfSchema

pytestmark = pytest.mark.slow

KEY = "system-test-audit-key-5f0c1e9a7b3d4f2a"
CHECKPOINT = re.compile(r"--checkpoint (\S+:\d+:[0-9a-f]{64})")


def audit(*args: str, key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    """`python -m bot audit …` as an auditor runs it, JIT_AUDIT_KEY in the environment (or not)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("JIT_", "SLACK_"))}
    if key is not None:
        env["JIT_AUDIT_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "bot", "audit", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def posted_checkpoints(stack: Stack, reason: str | None = None) -> list[str]:
    """CHAIN:SEQ:HASH of each checkpoint posted (of `reason` alone, when given)."""
    texts = [str(message.get("text")) for message in stack.slack.messages(APPROVALS)]
    return [m for text in texts if reason is None or f"({reason})" in text for m in CHECKPOINT.findall(text)]


@dataclass
class Trail:
    """What the test did, and the log and checkpoints it left."""

    log: Path
    expired: str
    revoked: str
    during_expired: datetime
    during_revoked: datetime
    checkpoints: list[str]

    @property
    def records(self) -> list[dict[str, Any]]:
        return read(self.log)

    def index(self, event: str, request_id: str) -> int:
        return next(n for n, r in enumerate(self.records) if r["event"] == event and r.get("request_id") == request_id)

    def next_of_chain(self, index: int) -> int:
        records = self.records
        return next(n for n in range(index + 1, len(records)) if records[n]["chain"] == records[index]["chain"])

    def copy(self, lines: list[str]) -> Path:
        copy = self.log.with_name(f"tampered-{len(list(self.log.parent.iterdir()))}.log")
        copy.write_text("".join(lines), encoding="utf-8")
        return copy

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines(keepends=True)


@pytest.fixture(name="trail", scope="module")
def fixture_trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    """One grant left to expire and one its requester ended, in a stack of a web and two workers, all then stopped."""
    with Stack(policy=stack_policy, workers=2, sweep_interval=2.0, extra_env={"JIT_AUDIT_KEY": KEY}) as stack:
        expired = granted(stack, "U0DEV1", "request lb-prod 4s audit trail one")
        assert rules_of(stack, expired)
        during_expired = datetime.now(UTC)
        stack.wait_for(lambda: "grant.revoked" in stack.events(expired), timeout=20, what="the expiry")

        revoked = granted(stack, "U0DEV2", "request lb-prod 1h audit trail two")
        assert rules_of(stack, revoked)
        during_revoked = datetime.now(UTC)
        assert stack.client().command("U0DEV2", f"revoke {revoked}").status == 200
        stack.wait_for(lambda: "grant.revoked" in stack.events(revoked), timeout=20, what="the revoke")

        for process in stack.processes:
            process.stop()  # SIGTERM: each writes its stop checkpoint and posts it
        checkpoints = stack.wait_for(
            lambda: len(posted_checkpoints(stack, "stop")) == 3 and posted_checkpoints(stack, "stop")
        )
        log = tmp_path_factory.mktemp("audit") / "audit.log"
        shutil.copy(stack.audit_path, log)
        yield Trail(log, expired, revoked, during_expired, during_revoked, checkpoints)


def marks(trail: Trail) -> list[str]:
    return [f"--checkpoint={mark}" for mark in trail.checkpoints]


def test_every_process_chains_its_records_and_checkpoints_at_stop(trail: Trail) -> None:
    """Web and both workers each write one chain from seq 1, each ending in the stop checkpoint it posted."""
    chains: dict[str, list[dict[str, Any]]] = {}
    for record in trail.records:
        chains.setdefault(record["chain"], []).append(record)

    assert sorted(name.split("@")[0] for name in chains) == ["web.1", "worker.1", "worker.2"]
    for records in chains.values():
        assert list(range(1, len(records) + 1)) == [r["seq"] for r in records]
        assert (records[-1]["event"], records[-1]["reason"]) == ("audit.checkpoint", "stop")
    posted = {f"{r[-1]['chain']}:{r[-1]['seq']}:{r[-1]['hash']}" for r in chains.values()}
    assert posted == set(trail.checkpoints)


def test_verify_passes_on_the_log_as_written(trail: Trail) -> None:
    """`audit verify` with the key and the posted checkpoints exits 0 and names the three chains."""
    result = audit("verify", str(trail.log), *marks(trail))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "in 3 chain(s), HMAC-SHA256" in result.stdout


def test_the_ocsf_export_of_the_log_validates_against_the_ocsf_schema(trail: Trail) -> None:
    """`audit export --format ocsf` over the processes' log: one valid OCSF 1.7.0 event a record, as `verify` holds."""
    result = audit("export", "--format", "ocsf", str(trail.log), *marks(trail))

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [event["unmapped"] for event in events] == trail.records
    schema = OcsfSchema(OCSF_VERSION)
    assert {e["metadata"]["event_code"]: schema.problems(e) for e in events if schema.problems(e)} == {}
    revoked = [e for e in events if e["metadata"]["event_code"] == "grant.revoked"]
    assert sorted(e["metadata"]["correlation_uid"] for e in revoked) == sorted([trail.expired, trail.revoked])
    assert {e["type_uid"] for e in revoked} == {300502}


def test_without_the_key_the_log_does_not_verify(trail: Trail) -> None:
    """The same log, checked without JIT_AUDIT_KEY: line 1 fails (its HMAC is not a SHA-256)."""
    result = audit("verify", str(trail.log), key=None)

    assert result.returncode == 1
    assert f"{trail.log}:1: edited" in result.stdout


def tamper_edit(trail: Trail) -> tuple[Path, int, str]:
    index = trail.index("request.created", trail.expired)
    lines = trail.lines()
    lines[index] = lines[index].replace("audit trail one", "audit trail 1")
    return trail.copy(lines), index + 1, "edited"


def tamper_remove(trail: Trail) -> tuple[Path, int, str]:
    index = trail.index("grant.applied", trail.expired)
    following = trail.next_of_chain(index)
    lines = trail.lines()
    del lines[index]
    return trail.copy(lines), following, "removed"  # the next record of its chain moved up a line


def tamper_swap(trail: Trail) -> tuple[Path, int, str]:
    index = trail.index("request.created", trail.revoked)
    following = trail.next_of_chain(index)
    lines = trail.lines()
    lines[index], lines[following] = lines[following], lines[index]
    return trail.copy(lines), index + 1, "removed"  # the later record comes first: its predecessor is missing there


def tamper_rehash(trail: Trail) -> tuple[Path, int, str]:
    index = trail.index("grant.revoked", trail.revoked)
    record = trail.records[index]
    record["reason"] = "expired"
    record["hash"] = hashlib.sha256(canonical(record)).hexdigest()
    lines = trail.lines()
    lines[index] = json.dumps(record, ensure_ascii=False) + "\n"
    return trail.copy(lines), index + 1, "re-hashed without the key"


def tamper_cut(trail: Trail) -> tuple[Path, int, str]:
    records = trail.records
    web = [n for n, r in enumerate(records) if r["chain"].startswith("web.")]
    lines = trail.lines()
    del lines[web[-1]]  # the web's stop checkpoint, its last record: only the posted checkpoint tells
    return trail.copy(lines), web[-2] + 1, "cut"


def tamper_duplicate_key(trail: Trail) -> tuple[Path, int, str]:
    index = trail.index("grant.revoked", trail.revoked)
    lines = trail.lines()
    lines[index] = lines[index].replace('{"ts"', '{"reason": "expired", "ts"', 1)  # a reader that takes the first
    return trail.copy(lines), index + 1, "edited: the key 'reason' appears twice"


def tamper_respace(trail: Trail) -> tuple[Path, int, str]:
    index = trail.index("request.created", trail.revoked)
    lines = trail.lines()
    lines[index] = lines[index].replace('", "', '","')  # the same record, other bytes
    return trail.copy(lines), index + 1, "edited: the line's bytes are not the writer's form"


@pytest.mark.parametrize(
    "tamper",
    [tamper_edit, tamper_remove, tamper_swap, tamper_rehash, tamper_cut, tamper_duplicate_key, tamper_respace],
)
def test_verify_names_the_first_tampered_line(trail: Trail, tamper: Any) -> None:
    """One field edited, one line removed, two lines swapped, one line re-hashed with SHA-256, the tail cut, a key
    given twice, a line re-spaced: each copy exits 1 naming the line and what is wrong."""
    copy, line, what = tamper(trail)

    result = audit("verify", str(copy), *marks(trail))

    assert result.returncode == 1, result.stdout
    assert f"FAILED {copy}:{line}: {what}" in result.stdout


def test_who_names_the_grant_in_force_at_each_moment(trail: Trail) -> None:
    """`audit who` at a moment inside each grant names that grant alone, with its requester and approver."""
    for moment, request_id, requester in (
        (trail.during_expired, trail.expired, "U0DEV1"),
        (trail.during_revoked, trail.revoked, "U0DEV2"),
    ):
        result = audit("who", "lb-prod", "--at", moment.isoformat(), "--format", "json", str(trail.log))
        assert result.returncode == 0, result.stderr
        (grant,) = [json.loads(line) for line in result.stdout.splitlines()]
        assert (request_id, requester, ["U0APPROVER1"]) == (grant["request_id"], grant["requester"], grant["approvers"])
    text = audit("who", "lb-prod", "--at", trail.during_revoked.isoformat(), str(trail.log)).stdout
    assert trail.revoked in text and "revoked (revoked)" in text


def test_who_and_report_refuse_a_log_with_a_forged_line_appended(trail: Trail) -> None:
    """A line appended that ends the revoked grant early (not chained): `who` at a moment inside the grant and
    `report` answer nothing from the log, exit 1 and name the line, as verify does."""
    records = trail.records
    applied = records[trail.index("grant.applied", trail.revoked)]
    forged = {**applied, "event": "grant.revoked", "reason": "expired", "ts": applied["ts"]}
    forged["ended_at"] = applied["ts"]
    forged["seq"] += 1000
    copy = trail.copy([*trail.lines(), json.dumps(forged, ensure_ascii=False) + "\n"])
    moment = trail.during_revoked.isoformat()

    who = audit("who", "lb-prod", "--at", moment, str(copy), *marks(trail))
    report = audit("report", "--format", "json", str(copy), *marks(trail))

    for result in (who, report):
        assert (result.returncode, result.stdout) == (1, "")
        assert "refused: the files do not verify" in result.stderr
        assert f"FAILED {copy}:{len(records) + 1}: " in result.stderr


def test_report_has_one_row_per_grant_as_it_happened(trail: Trail) -> None:
    """`audit report` gives each request's requester, reason, approver, and how and when it ended."""
    result = audit("report", "--format", "json", str(trail.log))

    assert result.returncode == 0, result.stderr
    rows = {row["request_id"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert {trail.expired, trail.revoked} == set(rows)
    expired, revoked = rows[trail.expired], rows[trail.revoked]
    assert (
        expired["requester"],
        expired["reason"],
        expired["end_reason"],
        expired["ended_by"],
    ) == ("U0DEV1", "audit trail one", "expired", "system")
    assert (
        revoked["requester"],
        revoked["reason"],
        revoked["end_reason"],
        revoked["ended_by"],
    ) == ("U0DEV2", "audit trail two", "revoked", "U0DEV2")
    for row in (expired, revoked):
        assert (row["target"], row["approvers"], row["outcome"]) == ("lb-prod", ["U0APPROVER1"], "revoked")
    assert 0 <= expired["lasted_seconds"] <= 4  # the 4 seconds run from the approval; access ends by then
    assert expired["granted_at"] < trail.during_expired.isoformat() < expired["ended_at"]
    header = audit("report", str(trail.log)).stdout.splitlines()[0]
    assert header.startswith("request_id,requester,target,reason,source,approvers,requested_at,granted_at")


def test_a_tail_cut_while_the_processes_run_shows_against_the_checkpoints_posted_seconds_after_the_grant() -> None:
    """Within seconds of an approval and its grant, web and worker each post a checkpoint covering them; a copy of
    the log with those records cut from the end (and the processes killed, so no stop checkpoint follows) fails
    `verify` against the posted checkpoints; without them, verify says plainly a cut tail cannot be seen."""
    with Stack(policy=stack_policy, sweep_interval=2.0, extra_env={"JIT_AUDIT_KEY": KEY}) as stack:
        request_id = granted(stack, "U0DEV1", "request lb-prod 1h witnessed grant")
        approved, applied = (
            next(r for r in stack.audit(request_id) if r["event"] == event)
            for event in ("request.approved", "grant.applied")
        )

        def covering() -> list[str]:
            marks = [m.split(":") for m in posted_checkpoints(stack, "security")]
            return [
                ":".join(mark)
                for mark in marks
                for record in (approved, applied)
                if mark[0] == record["chain"] and int(mark[1]) > record["seq"]
            ]

        posted = stack.wait_for(lambda: len(covering()) >= 2 and covering(), timeout=20, what="checkpoints posted")
        for process in stack.processes:
            process.stop(signal.SIGKILL)
        lines = stack.audit_path.read_text(encoding="utf-8").splitlines(keepends=True)
        first_cut = [json.loads(line) for line in lines].index(approved)
        copy = stack.workdir / "cut.log"
        copy.write_text("".join(lines[:first_cut]), encoding="utf-8")

        result = audit("verify", str(copy), *[f"--checkpoint={mark}" for mark in posted])
        blind = audit("verify", str(copy))

    assert result.returncode == 1, result.stdout
    assert "FAILED" in result.stdout and ": cut: chain " in result.stdout
    assert blind.returncode == 0, blind.stdout
    assert "a cut tail cannot be seen" in blind.stdout


def test_a_restarted_worker_continues_its_chain_across_a_gzipped_rotation() -> None:
    """Stop the worker, rotate the log, start a worker: its chain goes on from the stop checkpoint, and the two
    files (the older gzipped, given newest first) verify as one, against the checkpoint posted."""
    with Stack(policy=stack_policy, sweep_interval=2.0, extra_env={"JIT_AUDIT_KEY": KEY}) as stack:
        before = granted(stack, "U0DEV1", "request lb-prod 1h before the restart")
        chain = next(r for r in stack.audit(before) if r["event"] == "grant.applied")["chain"]
        (worker,) = stack.by_prefix("worker")
        worker.stop()
        stop = [r for r in stack.audit() if r["chain"] == chain][-1]
        assert (stop["event"], stop["reason"]) == ("audit.checkpoint", "stop")
        mark = f"{chain}:{stop['seq']}:{stop['hash']}"
        stack.wait_for(lambda: mark in posted_checkpoints(stack), what="the stop checkpoint in Slack")
        rotated = stack.audit_path.with_name("audit.log.1")
        stack.audit_path.rename(rotated)

        stack.start_worker()
        after = granted(stack, "U0DEV2", "request lb-prod 1h after the restart")
        start = stack.wait_for(
            lambda: [m for m in posted_checkpoints(stack, "start") if m.startswith(f"{chain}:{stop['seq'] + 1}:")],
            what="the continuation posted",
        )
        assert any(
            f"continues from seq {stop['seq']}, hash `{stop['hash']}`" in str(m.get("text"))
            for m in stack.slack.messages(APPROVALS)
            if start[0] in str(m.get("text"))
        )

        continued = [r for r in stack.audit() if r["chain"] == chain]
        assert continued, "the new worker writes the same chain"
        assert (stop["seq"] + 1, stop["hash"]) == (continued[0]["seq"], continued[0]["prev"])
        assert any(r["event"] == "grant.applied" and r["request_id"] == after for r in continued)
        for process in stack.processes:
            process.stop()
        with rotated.open("rb") as plain, gzip.open(f"{rotated}.gz", "wb") as packed:
            shutil.copyfileobj(plain, packed)
        rotated.unlink()

        result = audit("verify", str(stack.audit_path), f"{rotated}.gz", f"--checkpoint={mark}")

        assert result.returncode == 0, result.stdout + result.stderr
        assert f"files, oldest first: {rotated}.gz, {stack.audit_path}" in result.stdout
        who = audit(
            "who",
            "lb-prod",
            "--at",
            datetime.now(UTC).isoformat(),
            "--format",
            "json",
            *map(str, [stack.audit_path, f"{rotated}.gz"]),
        )
        assert {before, after} == {json.loads(line)["request_id"] for line in who.stdout.splitlines()}
