"""A set of audit log files as the auditor has them (rotated, some gzipped), read oldest first, one line at a time."""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from jit_lb.access.errors import AuditFileError

GZIP_MAGIC = b"\x1f\x8b"
_BUFFER = 1 << 20


@dataclass(frozen=True)
class Line:
    """One line of one file, numbered from 1 as an editor shows it."""

    file: str
    number: int
    raw: bytes


def oldest_first(paths: Iterable[str]) -> list[str]:
    """The files in the order logrotate made them: `audit.log.2.gz`, `audit.log.1`, `audit.log`.

    A larger number is older and the live file (no number) is newest; with logrotate's `dateext`
    (`audit.log-20261123`, gzipped or not) dates go up, before the live file. The same file named
    twice is read once; the `<log>.chains` folder is passed over. Sorting, rather than trusting the
    order given, makes a shell glob (`audit.log*`, which lists the live file first) do the right thing.
    """
    unique: dict[str, str] = {}
    for path in paths:
        if path.endswith(".chains") and os.path.isdir(path):
            continue  # the writers' chain heads beside the log, which `audit.log*` also matches
        unique.setdefault(os.path.realpath(path), path)
    return sorted(unique.values(), key=_rotation)


def _rotation(path: str) -> tuple[str, int, int]:
    name = path.removesuffix(".gz")
    if numbered := re.fullmatch(r"(.+)\.(\d+)", name):
        return (numbered[1], 0, -int(numbered[2]))
    if dated := re.fullmatch(r"(.+)-(\d{8,14})", name):
        return (dated[1], 1, int(dated[2]))
    return (name, 2, 0)


def lines(paths: Iterable[str]) -> Iterator[Line]:
    """Every line of the files in the order given, gzipped ones (told by their first bytes) decompressed as read.

    Streams: one buffer a file, never a whole file. Raises AuditFileError naming the file (and the line
    where a damaged gzip stream stops).
    """
    for path in paths:
        number = 0
        try:
            with _open(path) as stream:
                for number, raw in enumerate(stream, 1):
                    yield Line(path, number, raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise AuditFileError(path, number + 1, f"the gzip stream is damaged ({err})") from None
        except OSError as err:
            raise AuditFileError(path, None, f"cannot be read ({err.strerror or err})") from None


@contextlib.contextmanager
def _open(path: str) -> Iterator[Iterable[bytes]]:
    with open(path, "rb", buffering=_BUFFER) as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        if not gzipped:
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:  # closes itself, not `raw`: the outer `with` does
            yield unzipped
