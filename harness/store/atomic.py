"""Files written all or nothing: a fsync'd temporary beside the target, renamed over it, then the
directory fsync'd (a crash leaves the old file or the new one, never half of either)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: Fault-injection seam (tests/test_faults.py): seconds to sleep inside the Parquet commit window,
#: after the new part is written and fsync'ed and before it is renamed over the old one.
COMMIT_DELAY_ENV = "LAYERBENCH_COMMIT_DELAY_S"


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all or nothing: a fsync'd temporary beside it, renamed over it,
    then the directory fsync'd."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_table(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        delay = float(os.environ.get(COMMIT_DELAY_ENV) or 0)
        if delay > 0:
            time.sleep(delay)                                   # fault injection: inside the commit window
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
