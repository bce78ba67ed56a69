"""The audit log's hash chain (docs/auditors.md): canonical JSON, a record's hash, and where a process keeps its head.

Every record carries `chain`, `seq`, `prev` and `hash`; `hash` is the hex HMAC-SHA256 (with JIT_AUDIT_KEY) or
SHA-256 (without) of the record's canonical JSON without `hash`. The writer (writer.py) and the auditor's tools
(verify.py, trails.py) share these few functions, so that both sides hash the same bytes.

A chain outlives the process that writes it: its head (chain id, seq, hash, and where in the log its last
record ended) is kept in `<JIT_AUDIT_LOG>.chains/<kind>.<n>.json`, one slot per live process of a kind, held
with `flock` while the process lives. A process that starts takes the lowest free slot of its kind and
continues that slot's chain; a new key, or a head that disagrees with the log, starts a new chain instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

CHAIN_FIELDS = frozenset({"chain", "seq", "prev", "hash"})
MAX_SLOTS = 256  # live processes of one kind sharing one log; past this, something leaks processes
_KEY_ID_LABEL = b"jit-lb audit key id"
_ANCHOR_WINDOW = 1 << 20  # bytes read back from a saved offset to find the record that ends there


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: its JSON without `hash`, keys sorted, no spaces, UTF-8."""
    body = {key: value for key, value in record.items() if key != "hash"}
    # surrogatepass: a crafted line may carry a lone surrogate escape; it hashes to a mismatch instead of raising.
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


class Hasher:
    """HMAC-SHA256 with a key, or plain SHA-256 without one; `key_id` names the key without revealing it."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key or None
        if self.key is None:
            self.key_id = "sha256"
        else:
            self.key_id = "hmac:" + hmac.digest(self.key, _KEY_ID_LABEL, "sha256").hex()[:16]

    @property
    def keyed(self) -> bool:
        return self.key is not None

    def __call__(self, body: bytes) -> str:
        if self.key is None:
            return hashlib.sha256(body).hexdigest()
        return hmac.digest(self.key, body, "sha256").hex()


@dataclass(frozen=True)
class Head:
    """The last record a chain accepted: `seq` 0 and `hash` "" before the first."""

    chain: str
    seq: int = 0
    hash: str = ""


@dataclass(frozen=True)
class SavedHead:
    """A head as kept beside the log, with where its last record ended (file identity and offset)."""

    head: Head
    key_id: str
    file: tuple[int, int] | None  # (st_dev, st_ino) of the log file the last record went to
    offset: int  # just past that record in that file
    clean: bool  # written at a stop checkpoint: nothing of the chain can follow `offset`


def new_chain_id(kind: str, slot: int | None) -> str:
    """`worker.2@host.9f3a1c2e`: whose chain it is for a reader, and a random part so two chains never share an id.

    Not a pid or start time: the chain outlives the process (a restart continues it). No `:` in it, since a
    checkpoint is written CHAIN:SEQ:HASH.
    """
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:40] or "host"
    where = f"{kind}.{slot}" if slot is not None else kind
    return f"{where}@{host}.{secrets.token_hex(4)}"


class HeadFile:
    """One slot of a kind's chains beside the log, held (flock) for as long as this process writes it."""

    def __init__(self, path: Path, number: int, lock_fd: int) -> None:
        self.path = path
        self.number = number
        self._lock_fd: int | None = lock_fd

    @classmethod
    def claim(cls, log_path: str, kind: str) -> HeadFile:
        """Take the lowest slot of `kind` no live process holds; raises OSError when the folder cannot be used."""
        folder = Path(log_path + ".chains")
        folder.mkdir(mode=0o750, exist_ok=True)
        for number in range(1, MAX_SLOTS + 1):
            lock_fd = os.open(folder / f"{kind}.{number}.lock", os.O_RDWR | os.O_CREAT, 0o640)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(lock_fd)
                continue
            return cls(folder / f"{kind}.{number}.json", number, lock_fd)
        raise OSError(f"all {MAX_SLOTS} chain slots of {kind} in {folder} are held")

    def load(self) -> SavedHead | None:
        """The head kept in this slot, or None when there is none (or it cannot be read: a new chain starts)."""
        try:
            data = json.loads(self.path.read_bytes())
            file = data.get("file")
            return SavedHead(
                head=Head(str(data["chain"]), int(data["seq"]), str(data["hash"])),
                key_id=str(data["key_id"]),
                file=(int(file[0]), int(file[1])) if file else None,
                offset=int(data["offset"]),
                clean=bool(data.get("clean")),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    def save(self, saved: SavedHead) -> None:
        """Replace the slot's head at once (write a temporary file, rename it over); raises OSError."""
        data = {
            "chain": saved.head.chain,
            "seq": saved.head.seq,
            "hash": saved.head.hash,
            "key_id": saved.key_id,
            "file": list(saved.file) if saved.file else None,
            "offset": saved.offset,
            "clean": saved.clean,
        }
        temporary = self.path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, json.dumps(data, separators=(",", ":")).encode())
        finally:
            os.close(fd)
        os.replace(temporary, self.path)

    def release(self) -> None:
        """Let another process take this slot (and continue its chain)."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None


def follow(head: Head, hasher: Hasher, log_path: str, offset: int) -> Head | None:
    """The chain's records written at or after `offset` and not yet in its saved head (a process that died
    between writing a record and saving the head): the head after them, or None when the log disagrees.

    The saved head's own record must end right at `offset`: a file truncated in place (copytruncate) and
    written again is not the file the head was saved in. Other chains' records, and a torn last line,
    are passed over.
    """
    mark = head.chain.encode()
    try:
        with open(log_path, "rb") as log_file:
            if head.seq > 0 and not _ends_with(log_file, offset, head):
                return None
            log_file.seek(offset)
            for line in log_file:
                if mark not in line:
                    continue  # another chain's, and cheap to tell: the process may have been down for long
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(record, dict) or record.get("chain") != head.chain:
                    continue
                follows = record.get("seq") == head.seq + 1 and record.get("prev") == head.hash
                if not follows or hasher(canonical(record)) != record.get("hash"):
                    return None
                head = Head(head.chain, head.seq + 1, str(record["hash"]))
    except OSError:
        return None
    return head


def _ends_with(log_file: BinaryIO, offset: int, head: Head) -> bool:
    """Whether the line that ends at `offset` is the head's own record."""
    start = max(0, offset - _ANCHOR_WINDOW)
    log_file.seek(start)
    before = log_file.read(offset - start)
    if not before.endswith(b"\n"):
        return False
    lines = before[:-1].rsplit(b"\n", 1)
    if len(lines) == 1 and start > 0:
        return False  # a line longer than the window: cannot tell, so it does not count
    try:
        record = json.loads(lines[-1])
    except ValueError:
        return False
    return isinstance(record, dict) and (record.get("chain"), record.get("seq"), record.get("hash")) == (
        head.chain,
        head.seq,
        head.hash,
    )
