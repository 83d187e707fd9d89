"""The result store: one directory per run, one Parquet file per shard, every row durable the
moment it is measured, every file validated when read.

While a run goes on, each row is appended to a journal (``rows-<shard>.jsonl``, one JSON object per
line, flushed and fsync'ed) the moment it is measured; at the end, on Ctrl-C and on resume, the
journal is folded into ``part-<shard>.parquet`` (schema ``harness.record.SCHEMA``), written to a
temporary file, fsync'ed and renamed (atomic), and only then is the journal removed. A process
killed at any moment leaves at worst a torn last journal line, which is ignored. One writer per
run shard: a second one is refused (an exclusive lock). Reading isolates each file: a corrupt or
foreign file is refused with one line naming it, and the others load. The store knows nothing of
torch. Guarantees: README, "What the store guarantees".
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import LayerbenchError
from harness.record import (
    COLUMN_NAMES,
    META_KEY,
    ROW_ID,
    RUN_ID,
    SCHEMA,
    SCHEMA_VERSION,
    VERSION_KEY,
    Row,
    check_required,
    to_table,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


class StoreError(LayerbenchError, RuntimeError):
    """The store cannot do what was asked (a locked run, a full disk, a run of another machine);
    the message says what to do and that no stored row was lost."""


def shard_label(shard: tuple[int, int]) -> str:
    return f"{shard[0]}of{shard[1]}"


def new_run_dir(out: str | Path, run_id: str) -> Path:
    """Create ``<out>/<run_id>`` for a new run; if it exists (two runs started in the same second),
    ``<run_id>-2``, ``-3``, ...: a new run never writes into another's directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        d = out / (run_id if i == 1 else f"{run_id}-{i}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise StoreError(f"{out}: could not create a new run directory for {run_id}")


class RunWriter:
    """Append rows of one run shard; fold them into Parquet atomically. Holds the shard's lock.

    Args:
        run_dir: the run's directory (created if missing).
        shard: (K, N), 1-based.
        metadata: run metadata, stored as ``run-<shard>.json`` and in the Parquet file's schema metadata.
    """

    def __init__(self, run_dir: str | Path, shard: tuple[int, int], metadata: Mapping[str, Any]) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        label = shard_label(shard)
        self.journal = self.dir / f"rows-{label}.jsonl"
        self.parquet = self.dir / f"part-{label}.parquet"
        self.meta_path = self.dir / f"run-{label}.json"
        self._lock = _lock(self.dir / f".lock-{label}")
        self.metadata = dict(metadata, schema_version=SCHEMA_VERSION)
        _repair_journal(self.journal)
        self._write_meta()
        self._fh = open(self.journal, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run

    def _write_meta(self) -> None:
        _atomic_write_bytes(self.meta_path, (json.dumps(self.metadata, indent=2, default=str) + "\n").encode())

    def stored_records(self) -> list[dict[str, Any]]:
        """Rows already stored for this shard: the Parquet part (validated) and the journal."""
        rows: list[dict[str, Any]] = []
        if self.parquet.exists():
            rows += _read_parquet(self.parquet).to_pylist()
        rows += read_journal(self.journal)
        return rows

    def done_ids(self) -> set[str]:
        """row_ids already stored (Parquet and journal)."""
        return {r[ROW_ID] for r in self.stored_records() if ROW_ID in r}

    def append(self, row: Row) -> None:
        """Write one row to the journal and make it durable before returning."""
        line = json.dumps(row.to_record(), default=str) + "\n"
        try:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as e:
            raise StoreError(f"{self.journal}: could not store a row ({e.strerror or e}); every earlier row is "
                             "stored; free space and run again with --resume") from e

    def finish(self, **metadata: Any) -> Path:
        """Fold the journal into the Parquet file (atomic), update the metadata, remove the journal.
        On failure (a full disk) the journal stays: nothing is lost, ``--resume`` folds it later."""
        self.metadata.update(metadata)
        with contextlib.suppress(OSError):
            self._fh.close()
        try:
            records = _dedupe_records(self.stored_records())
            table = to_table(records, self.metadata)
            _atomic_write_table(table, self.parquet)
            self._write_meta()
        except OSError as e:
            raise StoreError(f"{self.parquet}: could not write ({e.strerror or e}); the rows stay in "
                             f"{self.journal.name}: free space and run again with --resume") from e
        finally:
            self.close()
        self.journal.unlink(missing_ok=True)
        return self.parquet

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        _unlock(self._lock)


def _lock(path: Path) -> Any:
    """An exclusive, non-blocking lock on ``path``; ``StoreError`` if another process holds it."""
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until the writer closes
    if fcntl is not None:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise StoreError(f"{path.parent}: this run shard is being written by {holder}; wait for it, or "
                             "start a new run (without --resume)") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {os.uname().nodename if hasattr(os, 'uname') else 'this host'}")
    fh.flush()
    return fh


def _unlock(fh: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def _repair_journal(path: Path) -> None:
    """Cut a torn last line (a process killed mid-write) so that appended rows start on a fresh line."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        pass


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a journal; a torn or unreadable line is skipped."""
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    break                       # torn last line
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except FileNotFoundError:
        pass
    return rows


def _dedupe_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last: dict[tuple[Any, Any], dict[str, Any]] = {}
    for r in rows:
        last[(r.get(RUN_ID), r.get(ROW_ID))] = r
    return list(last.values())


def write_parquet(frame: pd.DataFrame, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a result table (every schema column, in any order) to ``path`` atomically."""
    path = Path(path)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    _atomic_write_table(to_table(records, metadata), path)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The run metadata stored in a Parquet file's schema (``{}`` when there is none)."""
    meta = pq.read_schema(path).metadata or {}
    try:
        return json.loads(meta[META_KEY]) if META_KEY in meta else {}
    except ValueError:
        return {}


# --- reading ---------------------------------------------------------------------------------------------

class RefusedFile(ValueError):
    """A file that cannot be read as results: the message names the file and what is wrong."""


def _version(schema: pa.Schema, where: str) -> int:
    meta = schema.metadata or {}
    if VERSION_KEY in meta:
        try:
            return int(meta[VERSION_KEY])
        except ValueError:
            raise RefusedFile(f"{where}: schema version {meta[VERSION_KEY]!r}: expected an integer") from None
    if "row_id" in schema.names and "status" in schema.names:
        return 1
    raise RefusedFile(f"{where}: not a layerbench result file (no schema version, no row_id/status columns)")


def validate_table(table: pa.Table, where: str) -> pa.Table:
    """``table`` as ``SCHEMA`` (current version): every column present with a castable type, no
    unknown column, no null where the schema forbids one; ``RefusedFile`` naming the column otherwise."""
    for name in table.schema.names:
        if name not in COLUMN_NAMES:
            raise RefusedFile(f"{where}: column {name}: not in the result schema (version {SCHEMA_VERSION})")
    cols = []
    for f in SCHEMA:
        if f.name not in table.schema.names:
            raise RefusedFile(f"{where}: column {f.name}: missing (expected {f.type})")
        col = table.column(f.name)
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise RefusedFile(f"{where}: column {f.name}: {col.type}, expected {f.type}") from None
        cols.append(col)
    out = pa.Table.from_arrays(cols, schema=SCHEMA)
    try:
        check_required(out, where)
    except ValueError as e:
        raise RefusedFile(str(e)) from None
    return out


def _from_records(records: list[dict[str, Any]], version: int, meta: Mapping[str, Any], where: str) -> pa.Table:
    from harness.upgrade import upgrade_records
    if version != SCHEMA_VERSION:
        try:
            records = upgrade_records(records, version, meta)
        except ValueError as e:
            raise RefusedFile(f"{where}: {e}") from None
    try:
        table = to_table(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
        raise RefusedFile(f"{where}: a row does not fit the result schema ({str(e)[:200]})") from None
    return validate_table(table, where)


def _read_parquet(path: Path) -> pa.Table:
    where = str(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException, ValueError) as e:
        raise RefusedFile(f"{where}: not a readable Parquet file ({str(e)[:200]})") from None
    version = _version(table.schema, where)
    if version == SCHEMA_VERSION:
        return validate_table(table.replace_schema_metadata(None), where)
    if version > SCHEMA_VERSION:
        raise RefusedFile(f"{where}: schema version {version} is newer than this layerbench's ({SCHEMA_VERSION}): "
                          "upgrade layerbench")
    if version >= 2:
        _check_names(table.schema.names, version, where)
    meta = read_metadata(path)
    return _from_records(table.to_pylist(), version, meta, where)


def _check_names(names: list[str], version: int, where: str) -> None:
    """An older file holds exactly the columns of its version: ``RefusedFile`` naming the first that differs."""
    from harness.record import names_in_version
    expected = names_in_version(version)
    for name in names:
        if name not in expected:
            raise RefusedFile(f"{where}: column {name}: not in the result schema (version {version})")
    for name in expected:
        if name not in names:
            raise RefusedFile(f"{where}: column {name}: missing (schema version {version})")


def _journal_meta(path: Path) -> dict[str, Any]:
    label = path.stem.removeprefix("rows-")
    try:
        meta = json.loads((path.parent / f"run-{label}.json").read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _read_journal_table(path: Path) -> pa.Table | None:
    rows = read_journal(path)
    if not rows:
        return None
    meta = _journal_meta(path)
    version = int(meta.get("schema_version", SCHEMA_VERSION if "machine_id" in rows[0] else 1))
    return _from_records(rows, version, meta, str(path))


@dataclass
class Loaded:
    """What ``load_runs`` read: the rows (current schema), each run's metadata, and the files refused
    (one line each: the file and what is wrong)."""

    frame: pd.DataFrame
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


def _expand(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for item in items:
        matches = sorted(glob.glob(str(item), recursive=True)) or [str(item)]
        for m in matches:
            p = Path(m)
            if p.is_dir():
                out += sorted(p.rglob("part-*.parquet")) + sorted(p.rglob("rows-*.jsonl"))
            elif p.exists():
                out.append(p)
    return list(dict.fromkeys(out))


def _read_any(p: Path) -> tuple[pa.Table | None, dict[str, Any]]:
    if p.suffix == ".parquet":
        return _read_parquet(p), read_metadata(p)
    if p.suffix == ".jsonl":
        return _read_journal_table(p), _journal_meta(p)
    if p.suffix == ".json":
        from harness.pytest_bench import pytest_benchmark_table
        return pytest_benchmark_table(p), {}
    raise RefusedFile(f"{p}: not a result file (expected .parquet, .jsonl or pytest-benchmark .json)")


def load_runs(paths: str | Path | Iterable[str | Path]) -> Loaded:
    """Rows of runs, shards and devices, each file validated on its own: Parquet parts, unfinished
    journals (a run killed before its end), pytest-benchmark JSON. A file that cannot be read is
    refused (``Loaded.refused``) and the others load. Duplicate ``(run_id, row_id)``: the last wins.

    Args:
        paths: files, run directories, a results folder, or globs (``results/quick-cpu-*``).
    """
    tables, runs, refused = [], {}, []
    for p in _expand(paths):
        try:
            table, meta = _read_any(p)
        except RefusedFile as e:
            refused.append(str(e))
            continue
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
            refused.append(f"{p}: unreadable ({type(e).__name__}: {str(e)[:200]})")
            continue
        if table is None or table.num_rows == 0:
            continue
        tables.append(table)
        for run_id in set(table.column(RUN_ID).to_pylist()):
            entry = runs.setdefault(run_id, {})
            if meta.get("run_id") == run_id:
                entry.update(meta)
    if not tables:
        return Loaded(pd.DataFrame(columns=list(COLUMN_NAMES)), runs, refused)
    frame = pa.concat_tables(tables).to_pandas()
    frame = frame.drop_duplicates(subset=[RUN_ID, ROW_ID], keep="last").reset_index(drop=True)
    return Loaded(frame, runs, refused)


def load_results(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """``load_runs(paths).frame``; each refused file is logged as a warning."""
    loaded = load_runs(paths)
    for line in loaded.refused:
        log.warning("refused %s", line)
    return loaded.frame
