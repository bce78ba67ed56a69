"""The audit log's hash chain, written by the real writer to real files and read back by `audit verify`."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from jit_lb.access.errors import AuditUnavailableError
from jit_lb.audit import cli
from jit_lb.audit import writer as audit_module
from jit_lb.audit.chain import canonical
from jit_lb.audit.files import oldest_first
from jit_lb.audit.verify import Checkpoint, Verifier
from jit_lb.audit.writer import CHECKPOINT_SECONDS, AuditLog

KEY = "k3y-for-the-unit-tests-0123456789abcdef"


@pytest.fixture(name="path")
def fixture_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


@pytest.fixture(name="keyed")
def fixture_keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    """JIT_AUDIT_KEY in the auditor's environment."""
    monkeypatch.setenv("JIT_AUDIT_KEY", KEY)


def writer(path: Path, kind: str = "worker", key: str | None = KEY) -> AuditLog:
    audit = AuditLog.open(str(path))
    audit.start_chain(kind, SecretStr(key) if key is not None else None)
    return audit


def write(audit: AuditLog, count: int, **fields: Any) -> list[dict[str, Any]]:
    return [
        audit.record("request.created", actor="U0DEV1", target="lb-prod", request_id=f"jit-{n:06d}", **fields)
        for n in range(count)
    ]


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def verify(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(["verify", *args], out=out)
    return code, out.getvalue()


# --- the record's hash ------------------------------------------------------------------------------


def test_canonical_json_sorts_keys_has_no_spaces_keeps_utf8_and_leaves_out_the_hash() -> None:
    """Canonical JSON: keys sorted, `,` and `:` alone, non-ASCII as UTF-8 bytes, no `hash`."""
    record = {"seq": 2, "actor": "U0DEV1", "hash": "ignored", "reason": "débogage ✓", "nested": {"b": 1, "a": [1, 2]}}

    assert '{"actor":"U0DEV1","nested":{"a":[1,2],"b":1},"reason":"débogage ✓","seq":2}'.encode() == canonical(record)


def test_a_keyed_record_is_an_hmac_of_its_canonical_json(path: Path) -> None:
    """With JIT_AUDIT_KEY, `hash` is the hex HMAC-SHA256 of the record (as read back) without `hash`."""
    written = write(writer(path), 1, request_reason="why")[0]

    (read,) = records(path)
    assert written == read
    expected = hmac.new(KEY.encode(), canonical(read), hashlib.sha256).hexdigest()
    assert (expected, 1, "") == (read["hash"], read["seq"], read["prev"])


def test_an_unkeyed_record_is_a_sha256_of_its_canonical_json(path: Path) -> None:
    """Without a key, `hash` is the plain SHA-256 of the same bytes."""
    write(writer(path, key=None), 1)

    (read,) = records(path)
    assert hashlib.sha256(canonical(read)).hexdigest() == read["hash"]


def test_each_record_names_the_previous_ones_hash(path: Path) -> None:
    """seq counts 1, 2, 3 in one chain, and each `prev` is the record before's `hash`."""
    write(writer(path), 3)

    read = records(path)
    assert [r["seq"] for r in read] == [1, 2, 3]
    assert ["", read[0]["hash"], read[1]["hash"]] == [r["prev"] for r in read]
    assert len({r["chain"] for r in read}) == 1


def test_what_json_cannot_carry_is_hashed_as_it_is_read_back(path: Path, keyed: None) -> None:
    """A tuple, a set, a lone surrogate and an int-keyed dict are hashed as a reader parses them: verify passes."""
    audit = writer(path)
    audit.record("grant.activity", actor="system", changes=({1: "a"},), ports={443, 80}, note="bad \ud800 text")

    (read,) = records(path)
    assert (read["changes"], read["ports"], read["note"]) == ([{"1": "a"}], [80, 443], "bad ? text")
    assert verify(str(path))[0] == 0


def test_the_chains_own_fields_cannot_be_given() -> None:
    """A caller cannot set `seq` or `hash`: the writer alone does."""
    audit = AuditLog("-")
    with pytest.raises(ValueError, match="seq"):
        audit.record("request.created", actor="U0DEV1", seq=7)


# --- only accepted records take a seq ---------------------------------------------------------------


def test_a_record_that_fails_closed_leaves_its_seq_to_the_next(path: Path, keyed: None) -> None:
    """A write that fails (the disk is full) raises, and the next record written takes the seq it did not use."""
    audit = writer(path)
    write(audit, 1)
    audit.destination = "/dev/full"
    with pytest.raises(AuditUnavailableError):
        audit.record("request.created", actor="U0DEV1", request_id="jit-failed")
    audit.destination = str(path)

    write(audit, 1)

    assert [(r["seq"], r["request_id"]) for r in records(path)] == [(1, "jit-000000"), (2, "jit-000000")]
    assert verify(str(path))[0] == 0


def test_a_spooled_record_keeps_its_seq_and_is_written_before_later_ones(path: Path, keyed: None) -> None:
    """A revoke's record spooled while the log fails keeps seq 2; a refused record takes none; both land in order."""
    audit = writer(path)
    write(audit, 1)
    audit.destination = "/dev/full"
    audit.record("grant.revoked", actor="system", request_id="jit-revoked", must=True)
    with pytest.raises(AuditUnavailableError):
        audit.record("request.created", actor="U0DEV1", request_id="jit-refused")
    assert audit.spooled == 1
    audit.destination = str(path)

    audit.record("request.created", actor="U0DEV1", request_id="jit-later")

    read = records(path)
    assert [(r["seq"], r["request_id"]) for r in read] == [(1, "jit-000000"), (2, "jit-revoked"), (3, "jit-later")]
    assert audit.spooled == 0
    assert verify(str(path))[0] == 0


# --- a chain outlives its process ---------------------------------------------------------------------


def test_a_restart_continues_the_chain_from_its_stop_checkpoint(path: Path, keyed: None) -> None:
    """The next writer of the same kind takes the free slot and continues the chain at the next seq."""
    first = writer(path)
    write(first, 2)
    stop = first.checkpoint("stop", background=False)
    assert stop is not None
    first.close()

    second = writer(path)
    write(second, 1)

    read = records(path)
    assert [stop["chain"]] * 4 == [r["chain"] for r in read]
    assert [r["seq"] for r in read] == [1, 2, 3, 4]
    assert (stop["hash"], "audit.checkpoint", "stop") == (read[3]["prev"], read[2]["event"], read[2]["reason"])
    assert verify(str(path), "--checkpoint", f"{stop['chain']}:{stop['seq']}:{stop['hash']}")[0] == 0


def test_a_writer_that_died_between_record_and_saved_head_is_followed(path: Path, keyed: None) -> None:
    """Without a stop checkpoint, the next writer reads on from the saved head and continues after the last record."""
    first = writer(path)
    write(first, 5)  # written within a second: the saved head is older than the last records
    first.close()  # as a process that died: no checkpoint, the slot released by the kernel

    second = writer(path)
    write(second, 1)

    read = records(path)
    assert len({r["chain"] for r in read}) == 1
    assert [r["seq"] for r in read] == [1, 2, 3, 4, 5, 6]
    assert verify(str(path))[0] == 0


@pytest.mark.parametrize("move", ["rotate", "truncate", "truncate and regrow"])
def test_a_writer_that_died_before_a_rotation_is_not_forked(path: Path, keyed: None, move: str) -> None:
    """Died unsaved, then the file rotated (or truncated in place): its last records cannot be read on from, so the
    next writer starts a new chain rather than reuse their seqs."""
    first = writer(path)
    old = write(first, 5)[0]["chain"]
    first.close()
    if move == "rotate":
        path.rename(path.with_name("audit.log.1"))
    else:
        path.with_name("audit.log.1").write_bytes(path.read_bytes())  # logrotate's copytruncate
        path.write_bytes(b"")
    if move == "truncate and regrow":
        write(writer(path, "web"), 10)  # past the worker's saved offset again

    second = writer(path)
    write(second, 1)

    read = records(path)[-1]
    assert (read["seq"], read["prev"]) == (1, "")
    assert read["chain"] != old
    assert verify(str(path), str(path.with_name("audit.log.1")))[0] == 0


def test_two_live_writers_of_a_kind_write_two_chains(path: Path, keyed: None) -> None:
    """Two workers sharing one log each take a slot of their own: two chains, both whole."""
    one, two = writer(path), writer(path)
    write(one, 2)
    write(two, 2)
    write(one, 1)

    read = records(path)
    assert len({r["chain"] for r in read}) == 2
    assert [r["seq"] for r in read] == [1, 2, 1, 2, 3]
    assert verify(str(path))[0] == 0


def test_a_new_key_starts_a_new_chain_and_old_keys_verify_the_old_one(path: Path, tmp_path: Path) -> None:
    """A restart with another key begins a new chain; verify needs the retired key (--key-file) for the old one."""
    old = writer(path, key="an-old-key-that-was-rotated-away")
    write(old, 2)
    old.checkpoint("stop", background=False)
    old.close()
    new = writer(path)
    write(new, 1)
    retired = tmp_path / "retired.key"
    retired.write_text("an-old-key-that-was-rotated-away\n")

    os.environ["JIT_AUDIT_KEY"] = KEY
    try:
        assert [r["seq"] for r in records(path)] == [1, 2, 3, 1]
        assert verify(str(path), "--key-file", str(retired))[0] == 0
        code, out = verify(str(path))
    finally:
        del os.environ["JIT_AUDIT_KEY"]
    assert code == 1
    assert f"{path}:1: edited, or hashed with a key not given" in out


def test_stdout_writes_a_fresh_chain_each_start(capfd: pytest.CaptureFixture[str]) -> None:
    """With `-` there is nothing to find a chain again by: each start is a chain of its own from seq 1."""
    for _ in range(2):
        audit = AuditLog.open("-")
        audit.start_chain("web", SecretStr(KEY))
        audit.record("request.created", actor="U0DEV1")
    read = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["seq"] for r in read] == [1, 1]
    assert read[0]["chain"] != read[1]["chain"]


def test_a_forked_child_does_not_write_its_parents_chain(path: Path, keyed: None) -> None:
    """A child forked from a writer (RQ's scheduler) starts a chain of its own: the parent's stays whole."""
    audit = writer(path)
    write(audit, 1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            audit.record("request.created", actor="U0CHILD")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    write(audit, 1)

    read = records(path)
    assert [r["seq"] for r in read] == [1, 1, 2]
    assert read[0]["chain"] == read[2]["chain"] != read[1]["chain"]
    assert verify(str(path), "--also-unkeyed")[0] == 0


# --- checkpoints ---------------------------------------------------------------------------------------


def test_a_checkpoint_is_due_every_five_minutes_and_goes_to_the_witness(path: Path) -> None:
    """Nothing before CHECKPOINT_SECONDS; then an audit.checkpoint, handed to the witness as written."""
    now = [1000.0]
    posted: list[dict[str, Any]] = []
    audit = AuditLog(str(path), clock=lambda: now[0])
    audit.start_chain("worker", SecretStr(KEY), witness=posted.append)
    write(audit, 1)

    assert audit.checkpoint_if_due(now[0] + CHECKPOINT_SECONDS - 1) is None
    written = audit.checkpoint_if_due(now[0] + CHECKPOINT_SECONDS)
    assert written is not None
    assert audit._witnesses is not None
    audit._witnesses.shutdown(wait=True)

    assert [written] == posted[1:]  # after the chain's start, itself a checkpoint posted
    assert (written["event"], written["seq"], written["reason"]) == ("audit.checkpoint", 3, "interval")
    assert records(path)[-1] == written


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    """Poll until `condition()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_approval_is_checkpointed_and_posted_within_seconds(path: Path, keyed: None) -> None:
    """An approval and a grant are followed within SOON_SECONDS by one checkpoint, posted; a copy of the log cut
    back to before the approval fails `verify` against it, and without checkpoints verify says it cannot tell."""
    posted: list[dict[str, Any]] = []
    audit = AuditLog.open(str(path))
    audit.start_chain("worker", SecretStr(KEY), witness=posted.append)
    write(audit, 1)
    approved = audit.record("request.approved", actor="U0APPROVER1", target="lb-prod", request_id="jit-000000")
    granted = audit.record("grant.applied", actor="system", target="lb-prod", request_id="jit-000000")

    wait_until(lambda: any(p["seq"] > granted["seq"] for p in posted))

    (soon,) = [p for p in posted if p["reason"] == "security"]
    assert soon["seq"] == granted["seq"] + 1  # the two shared one checkpoint
    cut = path.with_name("cut.log")
    cut.write_text("".join(lines_of(path)[: approved["seq"] - 1]), encoding="utf-8")
    code, out = verify(str(cut), f"--checkpoint={soon['chain']}:{soon['seq']}:{soon['hash']}")
    assert code == 1
    assert f"cut: chain {soon['chain']} ends here at seq {approved['seq'] - 1}" in out
    code, out = verify(str(cut))
    assert code == 0
    assert "warning: no --checkpoint given, so a cut tail cannot be seen" in out


def test_a_chain_continued_after_a_crash_names_the_head_it_continues_from(path: Path, keyed: None) -> None:
    """A writer that dies without a stop checkpoint: the next one's start record, posted, names the chain and the
    seq and hash it continues from."""
    first = AuditLog.open(str(path))
    first.start_chain("worker", SecretStr(KEY), witness=lambda _: None)
    last = write(first, 3)[-1]
    first.close()  # as a kill -9 leaves it: no stop checkpoint
    posted: list[dict[str, Any]] = []

    second = AuditLog.open(str(path))
    second.start_chain("worker", SecretStr(KEY), witness=posted.append)
    wait_until(lambda: bool(posted))

    (start,) = posted
    assert (start["reason"], start["chain"], start["seq"]) == ("start", last["chain"], last["seq"] + 1)
    assert (last["chain"], last["seq"], last["hash"]) == (
        start["previous_chain"],
        start["previous_seq"],
        start["previous_hash"],
    )


def test_a_new_chain_that_replaces_a_cut_one_shows_the_cut(
    path: Path, keyed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log cut in place behind a dead writer's back: the next writer cannot continue, starts a new chain whose
    start names the old chain's kept head, and verify fails on the cut without any checkpoint given."""
    monkeypatch.setattr(audit_module, "HEAD_SAVE_SECONDS", 0.0)  # the head kept after every record, as after a pause
    first = AuditLog.open(str(path))
    first.start_chain("worker", SecretStr(KEY), witness=lambda _: None)
    write(first, 3)
    first.close()
    kept = lines_of(path)
    path.write_text("".join(kept[:2]), encoding="utf-8")  # the last record removed (same file, shorter)
    posted: list[dict[str, Any]] = []

    second = AuditLog.open(str(path))
    second.start_chain("worker", SecretStr(KEY), witness=posted.append)
    wait_until(lambda: bool(posted))

    (start,) = posted
    old = json.loads(kept[-1])
    assert start["chain"] != old["chain"]
    assert (old["chain"], old["seq"]) == (start["previous_chain"], start["previous_seq"])
    code, out = verify(str(path))
    assert code == 1
    assert f"cut: chain {old['chain']} ends here at seq 2, but the chain that replaced it" in out


def test_a_checkpoint_the_log_cannot_take_is_neither_written_nor_posted(path: Path) -> None:
    """With the disk full, no checkpoint: nothing is posted, and no seq is used."""
    posted: list[dict[str, Any]] = []
    audit = AuditLog.open(str(path))
    audit.start_chain("web", SecretStr(KEY), witness=posted.append)
    audit.destination = "/dev/full"

    assert audit.checkpoint("stop", background=False) is None
    assert audit._witnesses is not None
    audit._witnesses.shutdown(wait=True)
    assert [p["reason"] for p in posted] == ["start"]  # the chain's start alone
    head = audit.chain
    assert head is not None and head.seq == 1


# --- verify ------------------------------------------------------------------------------------------


@pytest.fixture(name="log")
def fixture_log(path: Path, keyed: None) -> Path:
    """Two chains interleaved, 5 records each, the worker's ending in a stop checkpoint."""
    web, worker = writer(path, "web"), writer(path, "worker")
    for n in range(4):
        web.record("request.created", actor="U0DEV1", target="lb-prod", request_id=f"jit-web{n:03d}", n=n)
        worker.record("grant.applied", actor="system", target="lb-prod", request_id=f"jit-web{n:03d}", n=n)
    web.record("request.created", actor="U0DEV2", target="lb-prod", request_id="jit-web004")
    worker.checkpoint("stop", background=False)
    return path


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def tampered(log: Path, lines: list[str]) -> Path:
    copy = log.with_name("tampered.log")
    copy.write_text("".join(lines), encoding="utf-8")
    return copy


def test_a_whole_log_verifies(log: Path) -> None:
    """Exit 0, naming each chain, its seqs and its last checkpoint."""
    code, out = verify(str(log))

    assert code == 0, out
    assert "ok: 10 records in 2 chain(s), HMAC-SHA256" in out
    assert "seq 1..5, last checkpoint worker.1@" in out


def test_an_edited_field_is_named(log: Path) -> None:
    """One value changed: its line fails as edited."""
    lines = lines_of(log)
    lines[4] = lines[4].replace('"U0DEV1"', '"U0DEV9"')

    code, out = verify(str(tampered(log, lines)))

    assert code == 1
    assert "tampered.log:5: edited: its hash does not match its content" in out


def test_a_removed_line_is_named_at_the_gap(log: Path) -> None:
    """Line 3 (the web's seq 2) removed: the web's seq 3, now line 4, fails as a gap."""
    lines = lines_of(log)
    del lines[2]

    code, out = verify(str(tampered(log, lines)))

    assert code == 1
    assert "tampered.log:4: removed: chain web.1@" in out and "goes from seq 1" in out and "to seq 3" in out


def test_two_swapped_lines_are_named(log: Path) -> None:
    """The web's seq 2 and 3 (lines 3 and 5) swapped: line 3 is out of order."""
    lines = lines_of(log)
    lines[2], lines[4] = lines[4], lines[2]

    code, out = verify(str(tampered(log, lines)))

    assert code == 1
    assert "tampered.log:3: removed" in out


def test_a_copied_line_is_named(log: Path) -> None:
    """A record copied in again later: the copy fails as reordered."""
    lines = lines_of(log)
    lines.insert(6, lines[2])

    code, out = verify(str(tampered(log, lines)))

    assert code == 1
    assert "tampered.log:7: reordered: seq 2 of chain web.1@" in out


def test_a_forged_line_with_the_next_seq_is_named(log: Path) -> None:
    """A record forged in with the right seq and a valid unkeyed hash: with the key, it fails as re-hashed."""
    lines = lines_of(log)
    forged = json.loads(lines[2])
    forged["actor"] = "U0FORGER"
    forged["hash"] = hashlib.sha256(canonical(forged)).hexdigest()
    lines[2] = json.dumps(forged) + "\n"

    code, out = verify(str(tampered(log, lines)))

    assert code == 1
    assert "tampered.log:3: re-hashed without the key: a plain SHA-256" in out


def test_without_the_key_a_keyed_log_fails(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An auditor without JIT_AUDIT_KEY cannot vouch for a keyed log: the first line fails, saying why."""
    monkeypatch.delenv("JIT_AUDIT_KEY")

    code, out = verify(str(log))

    assert code == 1
    assert "audit.log:1: edited: its hash does not match its content" in out and "needs JIT_AUDIT_KEY" in out


def test_a_log_cut_before_a_posted_checkpoint_fails(log: Path) -> None:
    """Cut before the worker's stop checkpoint: the chain ends before the seq posted, at its last line."""
    stop = records(log)[-1]
    mark = f"{stop['chain']}:{stop['seq']}:{stop['hash']}"

    code, out = verify(str(tampered(log, lines_of(log)[:-1])), "--checkpoint", mark)

    assert code == 1
    assert (
        f"tampered.log:8: cut: chain {stop['chain']} ends here at seq 4, before the checkpoint posted at seq 5" in out
    )
    assert verify(str(log), "--checkpoint", mark)[0] == 0


def test_a_rewritten_tail_fails_against_the_posted_checkpoint(log: Path) -> None:
    """The same seq with another hash than the one posted fails at that line."""
    stop = records(log)[-1]

    code, out = verify(str(log), "--checkpoint", f"{stop['chain']}:{stop['seq']}:{'0' * 64}")

    assert code == 1
    assert "audit.log:10: cut and rewritten" in out


def test_a_chain_that_begins_after_seq_1_fails_unless_partial_or_anchored(log: Path) -> None:
    """The first two lines removed: both chains begin at seq 2, which --partial or their checkpoints accept."""
    marks = [f"--checkpoint={r['chain']}:1:{r['hash']}" for r in records(log)[:2]]
    cut = tampered(log, lines_of(log)[2:])

    code, out = verify(str(cut))
    assert code == 1
    assert "tampered.log:1: removed: chain web.1@" in out and "seqs 1..1 are missing" in out
    assert verify(str(cut), "--partial")[0] == 0
    assert verify(str(cut), *marks)[0] == 0
    assert verify(str(cut), marks[0])[0] == 1


def test_a_line_that_is_not_a_chained_record_fails(log: Path) -> None:
    """A line of garbage, or a record without chain fields, is named."""
    lines = lines_of(log)
    assert "tampered.log:1: edited or damaged: not a JSON record" in verify(str(tampered(log, ["x\n", *lines])))[1]
    plain = json.dumps({"ts": "2026-11-23T21:00:00Z", "event": "request.created"}) + "\n"
    assert "tampered.log:3: no chain fields" in verify(str(tampered(log, [*lines[:2], plain])))[1]


def test_a_checkpoint_that_is_not_chain_seq_hash_is_refused() -> None:
    """`--checkpoint` takes CHAIN:SEQ:HASH exactly; anything else exits 2."""
    assert Checkpoint("web.1@h.ab", 3, "a" * 64) == Checkpoint.parse(f"web.1@h.ab:3:{'a' * 64}")
    assert verify("--checkpoint", "web:x:y", "audit.log")[0] == 2


# --- rotated and gzipped files ------------------------------------------------------------------------


def test_rotated_files_are_read_oldest_first_whatever_the_order_given() -> None:
    """logrotate's numbers (larger is older) and dateext dates (ascending) come before the live file."""
    given = ["audit.log", "audit.log.1", "audit.log.10.gz", "audit.log.2.gz"]
    assert oldest_first(given) == ["audit.log.10.gz", "audit.log.2.gz", "audit.log.1", "audit.log"]
    dated = ["a.log", "a.log-20261124.gz", "a.log-20261123"]
    assert oldest_first(dated) == ["a.log-20261123", "a.log-20261124.gz", "a.log"]


def test_a_rotated_and_gzipped_log_verifies_as_one(path: Path, keyed: None) -> None:
    """Records before and after two rotations, the oldest file gzipped: the chain is whole across the files."""
    audit = writer(path)
    write(audit, 2)
    path.rename(path.with_name("audit.log.1"))
    write(audit, 2)
    path.with_name("audit.log.1").rename(path.with_name("audit.log.2"))
    path.rename(path.with_name("audit.log.1"))
    write(audit, 2)
    older = path.with_name("audit.log.2")
    with older.open("rb") as plain, gzip.open(str(older) + ".gz", "wb") as packed:
        shutil.copyfileobj(plain, packed)
    older.unlink()
    files = [str(path), str(path.with_name("audit.log.1")), str(path.with_name("audit.log.2.gz"))]

    code, out = verify(*files, f"{path}.chains")  # as `audit.log*` lists them, the writer's folder too

    assert code == 0, out
    assert "ok: 6 records in 1 chain(s)" in out
    assert f"files, oldest first: {files[2]}, {files[1]}, {files[0]}" in out
    assert verify(files[0], files[1])[0] == 1  # without the oldest file the chain begins at seq 3


def test_a_damaged_gzip_file_is_named(path: Path, keyed: None) -> None:
    """A gzip file cut short stops verify with the file named, exit 2."""
    write(writer(path), 50)
    packed = gzip.compress(path.read_bytes())
    damaged = path.with_name("audit.log.1.gz")
    damaged.write_bytes(packed[: len(packed) // 2])

    assert verify(str(damaged))[0] == 2


def test_verify_streams_records_and_keeps_only_chain_state(path: Path, keyed: None) -> None:
    """The verifier keeps a summary per chain, not the records (one chain of 3,000 records here)."""
    write(writer(path), 3000)

    outcome = Verifier([KEY.encode()]).run([str(path)])

    assert outcome.ok and outcome.records == 3000
    assert [summary.seq for summary in outcome.chains.values()] == [3000]


def test_the_stop_checkpoint_is_the_last_record_even_right_after_an_approval(path: Path, keyed: None) -> None:
    """An approval then a stop at once (the operator's `mfa reset`, a SIGTERM): the stop checkpoint covers the
    approval, and no checkpoint follows it (the one that was due is not written after the stop)."""
    posted: list[dict[str, Any]] = []
    audit = AuditLog.open(str(path))
    audit.start_chain("cli", SecretStr(KEY), witness=posted.append)
    audit.record("mfa.reset", actor="operator", target=None, request_id=None)
    stop = audit.checkpoint("stop", background=False)
    time.sleep(audit_module.SOON_BATCH + 0.5)  # past when the cancelled one would have been written

    assert stop is not None
    assert records(path)[-1] == stop
