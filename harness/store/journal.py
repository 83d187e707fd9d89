"""JSON-lines journals: the one set of helpers behind the store's row journal (``rows-<shard>.jsonl``,
``harness.store``) and the worker journals of ``--processes`` (``proc-*.jsonl``,
``harness.runner.workers``).

A journal is only ever appended to, one JSON value per line (``json.dumps(item, default=str)``:
NaN and infinities written as ``NaN``/``Infinity``), each line written, flushed and fsync'ed before
``append`` returns. A line counts once its newline is there: a torn last line (a process killed
mid-write) is never read, and ``cut_torn_line`` cuts it off before anything is appended after it.
A line that is not JSON is skipped. ``JournalTail`` reads a journal as it grows, only what was
appended since its last read (a poll costs what was appended, not the whole file).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def dumps(item: Any) -> str:
    """One journal line (with its newline)."""
    return json.dumps(item, default=str, allow_nan=True) + "\n"


def append(fh: IO[str], item: Any) -> None:
    """Append ``item`` as one line to the journal open (text, append mode) as ``fh``, durable
    (flushed and fsync'ed) before returning. ``OSError`` as the file system raises it."""
    fh.write(dumps(item))
    fh.flush()
    os.fsync(fh.fileno())


def cut_torn_line(path: str | Path) -> None:
    """Cut a torn last line (a process killed mid-write) so that the next line appended starts on a
    fresh line. A missing or empty file, or one ending in a newline, is left as it is."""
    try:
        with open(path, "rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if not size:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            fh.truncate(_last_newline(fh, size) + 1)
    except FileNotFoundError:
        pass


def _last_newline(fh: IO[bytes], size: int, block: int = 1 << 16) -> int:
    """Offset of the last ``\\n`` in the first ``size`` bytes of ``fh`` (-1 when there is none),
    read backwards block by block (a torn line is short; the journal may not be)."""
    end = size
    while end > 0:
        start = max(0, end - block)
        fh.seek(start)
        at = fh.read(end - start).rfind(b"\n")
        if at >= 0:
            return start + at
        end = start
    return -1


def parse_lines(data: bytes) -> Iterator[Any]:
    """The JSON values of the complete lines of ``data`` (undecodable bytes replaced, a line that
    is not JSON skipped; the text after the last newline is never read)."""
    lines = data.split(b"\n")
    for line in lines[:-1]:
        try:
            yield json.loads(line.decode("utf-8", errors="replace"))
        except ValueError:
            continue


class JournalTail:
    """A journal read as it grows: each ``read()`` returns the values of the lines completed since
    the last one. ``offset`` is the byte just past the last complete line read; a torn last line
    is left unread until its newline arrives. ``last_read`` is how many bytes the last ``read()``
    consumed."""

    def __init__(self, path: str | Path, offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset
        self.last_read = 0

    def read(self) -> list[Any]:
        self.last_read = 0
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        if not end:
            return []                                   # nothing new, or only a line still being written
        self.offset += end
        self.last_read = end
        return list(parse_lines(data[:end]))


def read_values(path: str | Path) -> list[Any]:
    """Every value of a journal (``[]`` when the file is missing), as ``JournalTail.read`` reads them."""
    return JournalTail(path).read()
