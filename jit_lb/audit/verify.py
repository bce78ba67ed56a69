"""`audit verify`: are the chains in these files whole? The first line that says otherwise, and what is wrong with it.

Streams: each chain's state is a few fields (its hasher, last seq and hash, where it was last seen), so a
year of logs needs no more memory than an hour of them.

What each finding means:

- edited: the record's hash does not match its content; or a key appears twice in one object (JSON readers
  disagree on which one counts); or the line's bytes are not those the writer writes for that record
  (spacing, key order, escapes changed: the writer's form is the only one it makes);
- re-hashed without the key: its hash is a plain SHA-256 where an HMAC with JIT_AUDIT_KEY is expected;
- removed: the chain skips seqs here (or begins after seq 1: its first records are missing);
- reordered: a seq comes after a later one (two records swapped, or one copied in again);
- inserted: the seq follows but `prev` is not the hash of the record before;
- cut: a checkpoint posted to Slack names a seq the chain never reaches, or another hash at that seq; or a
  chain that replaced another at its start names a seq of that chain which the files do not reach.

Without checkpoints, a chain whose last records were removed looks whole: the file alone cannot show a cut
tail (the CLI says so).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jit_lb.audit.chain import Hasher, canonical
from jit_lb.audit.files import Line, lines

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Checkpoint:
    """CHAIN:SEQ:HASH, as the processes post it to the audit channel."""

    chain: str
    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Raises ValueError naming what is wrong with `text`."""
        chain, _, rest = text.rpartition(":")
        chain, _, seq = chain.rpartition(":")
        if not chain or not seq.isdigit() or int(seq) < 1 or len(rest) != 64 or not _HEX.issuperset(rest):
            raise ValueError(f"{text!r} is not CHAIN:SEQ:HASH (a seq from 1, a hash of 64 hex digits)")
        return cls(chain, int(seq), rest)


@dataclass(frozen=True)
class Finding:
    """What is wrong, and where (no line when a whole chain is missing)."""

    file: str | None
    line: int | None
    what: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else (self.file or "the files")
        return f"{where}: {self.what}"


@dataclass
class ChainSummary:
    """One chain as the files hold it."""

    chain: str
    keyed: bool
    first_seq: int
    seq: int  # the last
    hash: str  # the last record's
    file: str  # where the last record is
    line: int
    records: int = 0
    checkpoint: tuple[int, str, str] | None = None  # the last audit.checkpoint: seq, hash, reason


@dataclass
class Outcome:
    """What `verify` found: a finding (the first) or none, with each chain's summary and notes."""

    files: list[str]
    records: int = 0
    chains: dict[str, ChainSummary] = field(default_factory=dict)
    finding: Finding | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.finding is None


class Verifier:
    """Checks every chain in a set of files; `keys` are JIT_AUDIT_KEY and any retired keys.

    With keys, every chain must be an HMAC with one of them (one key a chain); `also_unkeyed` lets
    plain SHA-256 chains (written before a key was set) pass too. Without keys, chains must be SHA-256.
    A chain must start at seq 1, or right after a checkpoint given, or anywhere with `partial` (older
    files not given).
    """

    def __init__(
        self,
        keys: Iterable[bytes] = (),
        *,
        checkpoints: Iterable[Checkpoint] = (),
        also_unkeyed: bool = False,
        partial: bool = False,
    ) -> None:
        self.hashers = [Hasher(key) for key in keys if key]
        self.keyed = bool(self.hashers)
        if not self.keyed or also_unkeyed:
            self.hashers.append(Hasher(None))
        self.checkpoints: dict[str, dict[int, str]] = {}
        for checkpoint in checkpoints:
            self.checkpoints.setdefault(checkpoint.chain, {})[checkpoint.seq] = checkpoint.hash
        self.partial = partial
        self._hashers: dict[str, Hasher] = {}
        # Heads that a later chain's start names for the chain it replaced: chain -> (seq, where it is said).
        self._replaced: dict[str, tuple[int, str]] = {}
        self._resumed: set[str] = set()  # chains judged afresh after a finding (resume)

    def run(self, files: list[str]) -> Outcome:
        """Read the files in the order given (see files.oldest_first); stop at the first finding."""
        outcome = Outcome(files=files)
        for _ in self.passing(lines(files), outcome):
            pass
        return outcome

    def passing(self, given: Iterable[Line], outcome: Outcome) -> Iterator[Line]:
        """The lines that verify, as they are read; at the first that does not, the finding goes in `outcome` and
        the lines stop (as they do after the last line when the files end before a checkpoint given)."""
        for line in given:
            finding = self._check(line, outcome)
            if finding is not None:
                outcome.finding = finding
                return
            yield line
        outcome.finding = self.cut(outcome)

    def _check(self, line: Line, outcome: Outcome) -> Finding | None:
        return self.read(line, outcome)[1]

    def read(self, line: Line, outcome: Outcome) -> tuple[dict[str, Any] | None, Finding | None]:
        """One line checked against its chain: the record (None for a blank line or one that is not a JSON
        object) and the finding, if any. The OCSF export reads records this way, each verified as it is read."""
        if not line.raw.strip():
            return None, None
        try:
            record = json.loads(line.raw, object_pairs_hook=_unique_keys)
        except _DuplicateKeyError as err:
            return None, Finding(line.file, line.number, f"edited: the key {err.key!r} appears twice in one object")
        except ValueError:
            return None, Finding(line.file, line.number, "edited or damaged: not a JSON record")
        if not isinstance(record, dict):
            return None, Finding(line.file, line.number, "edited or damaged: not a JSON object")
        return record, self._check_record(line, record, outcome)

    def resume(self, record: dict[str, Any] | None, outcome: Outcome) -> None:
        """After a finding, judge the rest of the record's chain afresh: its next record begins it again.

        Used by `export --flag-unverified`, which goes on past a bad line: the lines after it are verified
        against each other, not condemned for the one before them.
        """
        chain = record.get("chain") if record is not None else None
        if isinstance(chain, str) and chain:
            outcome.chains.pop(chain, None)
            self._resumed.add(chain)

    def _check_record(self, line: Line, record: dict[str, Any], outcome: Outcome) -> Finding | None:
        chain, seq, prev, digest = record.get("chain"), record.get("seq"), record.get("prev"), record.get("hash")
        if not (isinstance(chain, str) and chain and type(seq) is int and seq >= 1) or not (
            isinstance(prev, str) and isinstance(digest, str)
        ):
            return Finding(line.file, line.number, "no chain fields (chain, seq, prev, hash): edited, or not chained")
        body = canonical(record)
        summary = outcome.chains.get(chain)
        if summary is None:
            return self._begin(line, record, body, outcome)
        hasher = self._hashers[chain]
        if hasher(body) != digest:
            return Finding(line.file, line.number, self._mismatch(body, digest, chain, hasher))
        if not _as_written(line.raw, record):
            return Finding(line.file, line.number, _NOT_AS_WRITTEN)
        if seq <= summary.seq:
            where = f"{summary.file}:{summary.line}"
            what = f"reordered: seq {seq} of chain {chain} comes after seq {summary.seq} ({where}), or is a copy"
            return Finding(line.file, line.number, what)
        if seq > summary.seq + 1:
            missing = seq - summary.seq - 1
            what = (
                f"removed: chain {chain} goes from seq {summary.seq} ({summary.file}:{summary.line}) to seq {seq}; "
                f"{missing} record(s) missing here (deleted, or moved later)"
            )
            return Finding(line.file, line.number, what)
        if prev != summary.hash:
            what = f"inserted: seq {seq} of chain {chain} does not follow seq {summary.seq} (its prev is another hash)"
            return Finding(line.file, line.number, what)
        return self._advance(line, record, summary, outcome)

    def _begin(self, line: Line, record: dict[str, Any], body: bytes, outcome: Outcome) -> Finding | None:
        """The first record of a chain in these files: find its key, and check where it starts."""
        chain, seq, prev, digest = record["chain"], record["seq"], record["prev"], record["hash"]
        hasher = next((candidate for candidate in self.hashers if candidate(body) == digest), None)
        if hasher is None:
            return Finding(line.file, line.number, self._mismatch(body, digest, chain, None))
        if not _as_written(line.raw, record):
            return Finding(line.file, line.number, _NOT_AS_WRITTEN)
        posted = self.checkpoints.get(chain, {})
        if seq == 1 and prev:
            return Finding(line.file, line.number, f"inserted: seq 1 of chain {chain} names a prev")
        if seq > 1:
            if posted.get(seq - 1) == prev or posted.get(seq) == digest:
                outcome.notes.append(f"chain {chain} begins at seq {seq}, right after a checkpoint given")
            elif self.partial:
                outcome.notes.append(f"chain {chain} begins at seq {seq} ({line.file}:{line.number}): partial")
            elif chain in self._resumed:
                outcome.notes.append(f"chain {chain} judged afresh from seq {seq} ({line.file}:{line.number})")
            else:
                what = (
                    f"removed: chain {chain} begins here at seq {seq}, so seqs 1..{seq - 1} are missing "
                    "(deleted, or in older files not given: give them too, or --partial, or a --checkpoint before it)"
                )
                return Finding(line.file, line.number, what)
        self._hashers[chain] = hasher
        summary = ChainSummary(chain, hasher.keyed, seq, seq - 1, prev, line.file, line.number)
        outcome.chains[chain] = summary
        return self._advance(line, record, summary, outcome)

    def _advance(self, line: Line, record: dict[str, Any], summary: ChainSummary, outcome: Outcome) -> Finding | None:
        seq, digest = record["seq"], record["hash"]
        posted = self.checkpoints.get(summary.chain, {}).get(seq)
        if posted is not None and posted != digest:
            what = f"cut and rewritten: the checkpoint posted for seq {seq} of chain {summary.chain} names another hash"
            return Finding(line.file, line.number, what)
        summary.seq, summary.hash, summary.file, summary.line = seq, digest, line.file, line.number
        summary.records += 1
        outcome.records += 1
        if record.get("event") == "audit.checkpoint":
            summary.checkpoint = (seq, digest, str(record.get("reason", "")))
            previous, previous_seq = record.get("previous_chain"), record.get("previous_seq")
            if isinstance(previous, str) and previous != summary.chain and type(previous_seq) is int:
                self._replaced[previous] = (previous_seq, f"{line.file}:{line.number}")
        return None

    def _mismatch(self, body: bytes, digest: str, chain: str, expected: Hasher | None) -> str:
        """Why a hash does not match, as far as the keys given can tell."""
        plain = hashlib.sha256(body).hexdigest() == digest
        if self.keyed and plain and (expected is None or expected.keyed):
            return f"re-hashed without the key: a plain SHA-256 where chain {chain} needs an HMAC with JIT_AUDIT_KEY"
        if expected is not None and any(other(body) == digest for other in self.hashers if other is not expected):
            return f"re-hashed: chain {chain} changes key here"
        if expected is None and self.keyed:
            return f"edited, or hashed with a key not given: its hash matches no key (chain {chain})"
        if not self.keyed:
            return f"edited: its hash does not match its content (chain {chain}; a keyed log needs JIT_AUDIT_KEY)"
        return f"edited: its hash does not match its content (chain {chain})"

    def cut(self, outcome: Outcome) -> Finding | None:
        """After the last line: a chain that stops before a checkpoint posted for it was cut short."""
        for chain, posted in self.checkpoints.items():
            summary = outcome.chains.get(chain)
            last = max(posted)
            if summary is None:
                return Finding(None, None, f"cut: chain {chain} is not in the files, but a checkpoint names seq {last}")
            if summary.seq < last:
                what = f"cut: chain {chain} ends here at seq {summary.seq}, before the checkpoint posted at seq {last}"
                return Finding(summary.file, summary.line, what)
        for chain, (seq, where) in self._replaced.items():
            summary = outcome.chains.get(chain)
            if summary is not None and summary.seq < seq:  # absent: in older files not given
                what = f"cut: chain {chain} ends here at seq {summary.seq}, but the chain that replaced it ({where}) "
                what += f"says it reached seq {seq}"
                return Finding(summary.file, summary.line, what)
        return None


_NOT_AS_WRITTEN = (
    "edited: the line's bytes are not the writer's form of its record (spacing, key order or escapes changed)"
)


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object hook: an object that names a key twice is refused (readers differ on which counts)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKeyError(key)
        found[key] = value
    return found


def _as_written(raw: bytes, record: dict[str, Any]) -> bool:
    """Whether `raw` is the line the writer (jit_lb audit's seal) makes of `record`: json.dumps' default spacing,
    non-ASCII as UTF-8, the record's keys in their order and `hash` last."""
    if "hash" not in record or next(reversed(record)) != "hash":
        return False
    body = json.dumps({key: value for key, value in record.items() if key != "hash"}, ensure_ascii=False)
    written = (body[:-1] + f', "hash": "{record["hash"]}"}}').encode("utf-8", "surrogatepass")
    return raw.removesuffix(b"\n") == written
