"""Records asked for from an event loop are written together on the log's thread (group commit), each on its own."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from jit_lb.access.errors import AuditUnavailableError
from jit_lb.audit import cli
from jit_lb.audit.writer import AuditLog
from tests.helpers import pending

KEY = "k3y-for-the-unit-tests-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(name="path")
def fixture_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JIT_AUDIT_KEY", KEY)
    return tmp_path / "audit.log"


@pytest.fixture(name="audit")
def fixture_audit(path: Path) -> Any:
    audit = AuditLog.open(str(path))
    audit.start_chain("web", SecretStr(KEY))
    yield audit
    audit.close()


ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"  # what a request id is made of


def rid(kind: str, n: int) -> str:
    """A valid request id of its own: `kind` (one letter of the alphabet), then `n` in five letters."""
    digits = ""
    for _ in range(5):
        n, digit = divmod(n, len(ALPHABET))
        digits = ALPHABET[digit] + digits
    return f"jit-{kind}{digits}"


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def verified(path: Path) -> bool:
    return cli.main(["verify", str(path)], out=io.StringIO()) == 0


async def created(audit: AuditLog, request_id: str) -> None:
    await audit.request_event_async("request.created", pending(request_id), actor="U0DEV1")


async def test_records_asked_together_are_written_in_the_order_asked_beside_a_thread_s(
    audit: AuditLog, path: Path
) -> None:
    """60 commands' records asked at once from the loop, while a thread writes 60 of its own: every record is in the
    file once, the loop's in the order they were asked, seq runs 1, 2, 3, … and the chain verifies."""
    asked = [rid("a", n) for n in range(60)]

    def worker() -> None:
        for n in range(60):
            audit.record("grant.revoked", actor="system", request_id=rid("t", n))

    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.gather(*(created(audit, request_id) for request_id in asked))
    thread.join()

    read = records(path)
    from_loop = [r["request_id"] for r in read if r["request_id"].startswith("jit-a")]
    assert asked == from_loop
    assert [rid("t", n) for n in range(60)] == [r["request_id"] for r in read if r["request_id"].startswith("jit-t")]
    assert list(range(1, 121)) == [r["seq"] for r in read if r["event"] != "audit.checkpoint"]
    assert verified(path)


async def test_each_caller_resumes_only_once_its_own_record_is_in_the_file(audit: AuditLog, path: Path) -> None:
    """However many share a batch, a caller that resumes finds its record in the file already."""
    missing: list[str] = []

    async def ask(request_id: str) -> None:
        await created(audit, request_id)
        if request_id not in path.read_text(encoding="utf-8"):
            missing.append(request_id)

    await asyncio.gather(*(ask(rid("b", n)) for n in range(40)))

    assert missing == []


async def test_a_record_that_fails_in_a_batch_fails_its_caller_alone(audit: AuditLog, path: Path) -> None:
    """With the log failing, a batch's `request.created` fails closed for its caller only; the `must` records beside it
    are spooled (their callers resume), then written first, in order, once the log takes writes again."""
    audit.destination = "/dev/full"

    outcomes = await asyncio.gather(
        audit.request_event_async("request.cancelled", pending(rid("c", 1)), actor="system", must=True),
        created(audit, rid("c", 2)),
        audit.request_event_async("request.cancelled", pending(rid("c", 3)), actor="system", must=True),
        return_exceptions=True,
    )
    audit.destination = str(path)
    await created(audit, rid("c", 4))

    assert [None, AuditUnavailableError, None] == [type(o) if isinstance(o, Exception) else o for o in outcomes]
    written = [(r["seq"], r["request_id"]) for r in records(path) if r["event"] != "audit.checkpoint"]
    assert [(1, rid("c", 1)), (2, rid("c", 3)), (3, rid("c", 4))] == written
    assert verified(path)


def test_the_log_serves_one_event_loop_after_another(audit: AuditLog, path: Path) -> None:
    """A loop that ends (a test's, a restart of the web) leaves nothing behind that holds up the next one's records."""
    asyncio.run(created(audit, rid("d", 1)))
    asyncio.run(created(audit, rid("d", 2)))

    assert [rid("d", 1), rid("d", 2)] == [r["request_id"] for r in records(path)]


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pydantic import SecretStr
    from jit_lb.audit.writer import AuditLog
    from tests.helpers import pending

    audit = AuditLog.open(sys.argv[1])
    audit.start_chain("web", SecretStr(sys.argv[2]))

    async def ask(request_id):
        await audit.request_event_async("request.created", pending(request_id), actor="U0DEV1")
        sys.stdout.write("acknowledged " + request_id + "\\n")
        sys.stdout.flush()

    def rid(n):
        alphabet, digits = "23456789abcdefghjkmnpqrstuvwxyz", ""
        for _ in range(6):
            n, digit = divmod(n, len(alphabet))
            digits = alphabet[digit] + digits
        return "jit-" + digits

    async def main():
        n = 0
        while True:
            await asyncio.gather(*(ask(rid(n + i)) for i in range(20)))
            n += 20

    asyncio.run(main())
    """
)


def test_a_process_killed_mid_batch_leaves_no_acknowledged_record_out(path: Path) -> None:
    """A web killed (SIGKILL) while batches of 20 records are being written: every record whose caller had resumed
    (the command would have been answered) is in the file, and the chain the file holds verifies."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), KEY],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    lines = [child.stdout.readline().decode() for _ in range(1000)]
    child.send_signal(signal.SIGKILL)
    child.wait()
    lines += child.stdout.read().decode().splitlines()
    acknowledged = [line.split()[1] for line in lines if line.startswith("acknowledged ")]

    written = {r["request_id"] for r in records(path)}
    assert [request_id for request_id in acknowledged if request_id not in written] == []
    assert len(acknowledged) >= 900
    assert verified(path)


FULL = textwrap.dedent(
    """
    import resource, signal, sys
    from pydantic import SecretStr
    from jit_lb.access.errors import AuditUnavailableError
    from jit_lb.audit.writer import AuditLog
    from tests.helpers import pending

    path, key = sys.argv[1], sys.argv[2]
    audit = AuditLog.open(path)
    audit.start_chain("web", SecretStr(key))
    audit.request_event("request.created", pending("jit-aaaaaa"), actor="U0DEV1")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) as on a full disk
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with open(path, "rb") as log:
        size = len(log.read())
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))  # room for part of the next record only
    try:
        audit.request_event("request.created", pending("jit-bbbbbb"), actor="U0DEV1")
    except AuditUnavailableError:
        print("refused")
    audit.request_event("request.expired", pending("jit-cccccc"), actor="system", must=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again
    audit.request_event("request.created", pending("jit-dddddd"), actor="U0DEV1")
    print("acknowledged")
    audit.close()
    """
)


def test_a_record_the_full_disk_cut_short_leaves_no_fragment_before_the_next(path: Path) -> None:
    """A disk that fills up mid-record: write(2) writes what fits and returns short. The record fails closed (its
    command refused) and no part of it stays in the file; before, the records written once there was room again were
    appended to that fragment, on its line: an acknowledged record unreadable, and the log failed `verify`."""
    done = subprocess.run(
        [sys.executable, "-c", FULL, str(path), KEY],
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    said = [line for line in done.stdout.decode().splitlines() if line in {"refused", "acknowledged"}]
    assert said == ["refused", "acknowledged"]
    assert [r["request_id"] for r in records(path) if r["event"] != "audit.checkpoint"] == [
        "jit-aaaaaa",
        "jit-cccccc",
        "jit-dddddd",
    ]
    assert verified(path)
