"""The result store: one directory per run, one Parquet file per shard, every row durable the
moment it is measured, every file validated when read.

While a run goes on, each row is appended to a journal (``rows-<shard>.jsonl``, one JSON object per
line, flushed and fsync'ed) the moment it is measured; at the end, on Ctrl-C and on resume, the
journal is folded into ``part-<shard>.parquet`` (schema ``harness.record.SCHEMA``), written to a
temporary file, fsync'ed and renamed (atomic), and only then is the journal removed. A process
killed at any moment leaves at worst a torn last journal line, which is ignored. One writer per
run shard: a second one is refused (an exclusive lock). Reading isolates each file: a corrupt or
foreign file is refused with one line naming it, and the others load. The store knows nothing of
torch. Guarantees: docs/store.md, "What the store guarantees".

Every user-supplied name that becomes a path (a suite's name, a run id) goes through
``safe_name``/``run_path`` (``harness.record.run``): one path component of ``A-Za-z0-9._-``, never
``.``, ``..``, absolute, a separator or a glob character, so nothing is ever written outside the
results folder. A run shard's files are named by ``harness.record.run.RunFiles`` and its metadata
is a ``harness.record.run.RunMeta``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.errors import LayerbenchError, SpecError
from harness.errors import short as _short
from harness.record import (
    BY_NAME,
    COLUMN_NAMES,
    META_KEY,
    ROW_ID,
    RUN_ID,
    SCHEMA,
    SCHEMA_VERSION,
    TIME_MEDIAN,
    VERSION_KEY,
    Row,
    Stability,
    Status,
    check_required,
    names_in_version,
    to_table,
)
from harness.record.run import JOURNAL_GLOB, MAX_RUN_ID, META_FILE, PART_GLOB, RunFiles, RunMeta, meta_beside, safe_name
from harness.store.atomic import atomic_write_bytes, atomic_write_table
from harness.store.confirmations import read_confirmations
from harness.store.journal import append as journal_append
from harness.store.journal import cut_torn_line, read_values
from harness.store.pytest_bench import pytest_benchmark_records
from harness.store.upgrade import upgrade_records

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


class StoreError(LayerbenchError, RuntimeError):
    """The store cannot do what was asked (a locked run, a full disk, a run of another machine);
    the message says what to do and that no stored row was lost."""


#: Longest string any stored cell may hold when read (a layerbench row's longest, its config, is < 2 KiB).
MAX_CELL_CHARS = 1 << 16


def run_path(out: str | Path, run_id: str) -> Path:
    """``<out>/<run_id>`` with ``run_id`` checked by ``safe_name``: the one way a run id becomes a path."""
    return Path(out) / safe_name(run_id, "run_id")


def new_run_dir(out: str | Path, run_id: str) -> Path:
    """Create ``<out>/<run_id>`` for a new run; if it exists (two runs started in the same second),
    ``<run_id>-2``, ``-3``, ...: a new run never writes into another's directory. ``run_id`` is
    checked by ``safe_name``."""
    safe_name(run_id, "run_id")
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
        metadata: the run's metadata, stored as ``run-<shard>.json`` and in the Parquet file's schema
            metadata.
    """

    def __init__(self, run_dir: str | Path, shard: tuple[int, int], metadata: RunMeta) -> None:
        self.dir = Path(run_dir)
        if ".." in self.dir.parts:
            raise SpecError("run directory", str(run_dir), "a path without '..' (a run id names one directory)")
        safe_name(self.dir.name, "run directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        files = RunFiles.of(self.dir, shard)
        label = files.label
        self.journal, self.parquet, self.meta_path, self.rejected = files.journal, files.parquet, files.meta, \
            files.rejected
        self._lock = _lock(files.lock)
        try:
            self.metadata = metadata.replace(schema_version=SCHEMA_VERSION)
            self._check_same_run()
            for stale in self.dir.glob(f".*-{label}.*.tmp"):     # a commit killed midway; we hold the lock
                stale.unlink(missing_ok=True)
            cut_torn_line(self.journal)
            self._write_meta()
            self._fh = open(self.journal, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run
        except BaseException:
            _unlock(self._lock)
            raise

    def _check_same_run(self) -> None:
        """Refuse to append to a shard whose stored metadata names another suite, machine or device:
        rows of two runs never mix, and no run's metadata is overwritten by another's."""
        stored = read_run_meta(self.meta_path)
        for key in ("suite", "machine_id", "device"):
            old, new = getattr(stored, key, None), getattr(self.metadata, key)
            if old is not None and new is not None and old != new:
                raise StoreError(f"{self.dir}: a run of {key} {old!r}, not {new!r}: start a new run (without "
                                 "--resume); its rows are untouched")

    def _write_meta(self) -> None:
        atomic_write_bytes(self.meta_path, (json.dumps(self.metadata.to_json(), indent=2, default=str) + "\n").encode())

    def stored_records(self) -> list[dict[str, Any]]:
        """Rows already stored for this shard: the Parquet part (validated) and the journal."""
        rows: list[dict[str, Any]] = []
        if self.parquet.exists():
            rows += _read_parquet(self.parquet).to_pylist()
        rows += read_journal(self.journal)
        return rows

    def done_ids(self) -> set[str]:
        """row_ids already stored (Parquet and journal); of the Parquet part only its row_id column
        is turned into Python objects."""
        ids = set(_read_parquet(self.parquet).column(ROW_ID).to_pylist()) if self.parquet.exists() else set()
        return ids | {r[ROW_ID] for r in read_journal(self.journal) if ROW_ID in r}

    def append(self, row: Row) -> None:
        """Write one row to the journal and make it durable before returning."""
        try:
            journal_append(self._fh, row.to_record())
        except OSError as e:
            raise StoreError(f"{self.journal}: could not store a row ({e.strerror or e}); every earlier row is "
                             "stored; free space and run again with --resume") from e

    def finish(self, **metadata: Any) -> Path:
        """Fold the journal into the Parquet file (atomic), update the metadata (``RunMeta`` fields),
        remove the journal. On failure (a full disk) the journal stays: nothing is lost, ``--resume``
        folds it later."""
        self.metadata = self.metadata.replace(**metadata)
        with contextlib.suppress(OSError):
            self._fh.close()
        try:
            records = [_finite(r) for r in _dedupe_records(self.stored_records())]
            table = self._fitting_table(records)
            atomic_write_table(table, self.parquet)
            self._write_meta()
        except OSError as e:
            raise StoreError(f"{self.parquet}: could not write ({e.strerror or e}); the rows stay in "
                             f"{self.journal.name}: free space and run again with --resume") from e
        finally:
            self.close()
        self.journal.unlink(missing_ok=True)
        return self.parquet

    def _fitting_table(self, records: list[dict[str, Any]]) -> pa.Table:
        """The records as a ``SCHEMA`` table; a journal line that does not fit (written by hand, by
        another program) is moved to ``rejected-<shard>.jsonl`` with a warning, never dropped."""
        try:
            return to_table(records, self.metadata.to_json())
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
        good, bad = [], []
        for r in records:
            try:
                to_table([r])
                good.append(r)
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                bad.append(r)
        with open(self.rejected, "a", encoding="utf-8") as f:
            for r in bad:
                f.write(json.dumps(r, default=str) + "\n")
        log.warning("%s: %d journal line(s) do not fit the result schema: kept in %s", self.journal, len(bad),
                    self.rejected.name)
        return to_table(good, self.metadata.to_json())

    def close(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self._fh.close()
        _unlock(self._lock)


def _lock(path: Path) -> Any:
    """An exclusive, non-blocking lock on ``path``; ``StoreError`` if another process holds it. The
    holder removes the file when it lets go (``_unlock``), so a lock is taken only on the file the
    path still names: one opened just before its holder removed it is let go and the path opened
    again."""
    while True:
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until the writer closes
        if fcntl is None:
            break
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise StoreError(f"{path.parent}: this run shard is being written by {holder}; wait for it, or "
                             "start a new run (without --resume)") from None
        if _same_file(fh, path):
            break
        fh.close()                             # removed by the holder we waited on: take the new one
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {os.uname().nodename if hasattr(os, 'uname') else 'this host'}")
    fh.flush()
    return fh


def _same_file(fh: Any, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
    except OSError:
        return False


def _unlock(fh: Any) -> None:
    """Remove the lock file, then let go of it (nothing of a finished run is left behind)."""
    with contextlib.suppress(OSError, ValueError):
        if fcntl is not None and _same_file(fh, Path(fh.name)):
            os.unlink(fh.name)
    with contextlib.suppress(OSError, ValueError):      # let go even where the file could not be removed
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a journal (``harness.store.journal``): JSON objects with a string ``run_id`` and ``row_id``;
    a torn last line, a line that is not JSON and a JSON value that is not such an object are skipped."""
    return [row for row in read_values(path)
            if isinstance(row, dict) and isinstance(row.get(RUN_ID), str) and isinstance(row.get(ROW_ID), str)]


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinite floats (a statistic of no samples, a ratio over zero) as null: the store holds
    finite numbers or null, and readers refuse anything else."""
    def fix(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v
    return {k: fix(v) for k, v in record.items()}


def _dedupe_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last: dict[tuple[Any, Any], dict[str, Any]] = {}
    for r in rows:
        last[(r.get(RUN_ID), r.get(ROW_ID))] = r
    return list(last.values())


def write_parquet(frame: pd.DataFrame, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a result table (every schema column, in any order) to ``path`` atomically."""
    path = Path(path)
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    atomic_write_table(to_table(records, metadata), path)
    return path


def read_metadata(path: str | Path) -> RunMeta | None:
    """The run metadata stored in a Parquet file's schema (``None`` when there is none)."""
    meta = pq.read_schema(path).metadata or {}
    try:
        return RunMeta.from_json(json.loads(meta[META_KEY])) if META_KEY in meta else None
    except ValueError:
        return None


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
    return _check_values(out, where)


#: Units of numeric columns that are never negative (a count, a size, a time, a rate, a share).
NON_NEGATIVE_UNITS = frozenset({"B/s", "FLOP/byte", "FLOP/s", "fraction", "s", "FLOP", "MAC", "MHz", "byte", "call",
                                "count", "element"})
#: Units of columns that are positive where not null (every rate is a peak or a measured roof).
POSITIVE_UNITS = frozenset({"FLOP/s", "B/s"})
#: Columns positive where not null beyond those units: the median time (other times, a spread, may be 0).
POSITIVE_COLUMNS = frozenset({TIME_MEDIAN})


def _check_values(table: pa.Table, where: str) -> pa.Table:
    """``table`` with NaN numbers as null (NaN and null both mean "no value"); ``RefusedFile`` naming
    the column when a number is infinite, negative where its unit cannot be (``NON_NEGATIVE_UNITS``),
    not positive (``POSITIVE_UNITS``, ``POSITIVE_COLUMNS``), a string is longer than
    ``MAX_CELL_CHARS``, or a word column (``status``, ``stability``, ``device_type``, ``run_id``)
    holds what no layerbench row does."""
    table = _check_numbers(table, where)
    _check_words(table, where)
    return table


def _check_numbers(table: pa.Table, where: str) -> pa.Table:
    for i, f in enumerate(table.schema):
        col = table.column(f.name)
        kind = f.type.value_type if pa.types.is_list(f.type) else f.type
        flat = pc.list_flatten(col) if pa.types.is_list(f.type) else col
        if pa.types.is_floating(kind) and len(flat) > flat.null_count:
            if pc.any(pc.is_inf(flat)).as_py():
                raise RefusedFile(f"{where}: column {f.name}: infinite values, expected finite numbers (or null)")
            if not pa.types.is_list(f.type) and pc.any(pc.is_nan(col)).as_py():
                col = pc.if_else(pc.is_nan(col), pa.scalar(None, f.type), col)
                table = table.set_column(i, f, col)
                flat = col
        if (pa.types.is_floating(kind) or pa.types.is_integer(kind)) and len(flat) > flat.null_count:
            _check_sign(f.name, flat, BY_NAME[f.name].unit, where)
        elif pa.types.is_string(kind) and len(flat) > flat.null_count:
            longest = pc.max(pc.utf8_length(flat)).as_py() or 0
            if longest > MAX_CELL_CHARS:
                raise RefusedFile(f"{where}: column {f.name}: a value of {longest:,} characters, expected at most "
                                  f"{MAX_CELL_CHARS:,}")
    return table


def _check_sign(name: str, values: pa.Array | pa.ChunkedArray, unit: str, where: str) -> None:
    low = pc.min(values).as_py()
    if (unit in POSITIVE_UNITS or name in POSITIVE_COLUMNS) and low is not None and low <= 0:
        raise RefusedFile(f"{where}: column {name}: a value of {low!r}, expected a positive number ({unit}) or null")
    if unit in NON_NEGATIVE_UNITS and low is not None and low < 0:
        raise RefusedFile(f"{where}: column {name}: a value of {low!r}, expected a number >= 0 ({unit}) or null")


def _check_words(table: pa.Table, where: str) -> None:
    """Word columns hold layerbench's words: a status, a stability verdict, a device type matching
    the device, a run id that is one safe path component (``safe_name``)."""
    allowed = {"status": {s.value for s in Status}, "stability": {s.value for s in Stability}}
    for name, words in allowed.items():
        bad = set(pc.unique(table.column(name)).to_pylist()) - words - {None}
        if bad:
            raise RefusedFile(f"{where}: column {name}: {_short(sorted(bad)[0])}, expected one of "
                              + ", ".join(sorted(words)))
    pairs = table.select(["device", "device_type"]).group_by(["device", "device_type"]).aggregate([]).to_pylist()
    for p in pairs:
        if p["device"] is not None and p["device_type"] != str(p["device"]).split(":")[0]:
            raise RefusedFile(f"{where}: column device_type: {_short(p['device_type'])} for device "
                              f"{_short(p['device'])}, expected {str(p['device']).split(':')[0]!r}")
    for run_id in pc.unique(table.column(RUN_ID)).to_pylist():
        try:
            safe_name(run_id, "run_id", MAX_RUN_ID)
        except SpecError as e:
            raise RefusedFile(f"{where}: column run_id: {e}") from None


def _from_records(records: list[dict[str, Any]], version: int, meta: RunMeta | None, where: str) -> pa.Table:
    if version != SCHEMA_VERSION:
        try:
            records = upgrade_records(records, version, meta)
        except ValueError as e:
            raise RefusedFile(f"{where}: {e}") from None
    records = [_finite(r) if isinstance(r, dict) else r for r in records]
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
    expected = names_in_version(version)
    for name in names:
        if name not in expected:
            raise RefusedFile(f"{where}: column {name}: not in the result schema (version {version})")
    for name in expected:
        if name not in names:
            raise RefusedFile(f"{where}: column {name}: missing (schema version {version})")


def read_run_meta(path: Path) -> RunMeta | None:
    """A shard's ``run-<K>of<N>.json``; ``None`` when it is missing, unreadable or not a run's."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return RunMeta.from_json(meta) if isinstance(meta, dict) else None


def _journal_meta(path: Path) -> RunMeta | None:
    return read_run_meta(meta_beside(path))


def _read_journal_table(path: Path) -> pa.Table | None:
    rows = read_journal(path)
    if not rows:
        return None
    meta = _journal_meta(path)
    stored = meta.schema_version if meta is not None else None
    version = stored if stored is not None else SCHEMA_VERSION if "machine_id" in rows[0] else 1
    return _from_records(rows, version, meta, str(path))


@dataclass
class Loaded:
    """What ``load_runs`` read: the rows (current schema), each run's metadata, and the files refused
    (one line each: the file and what is wrong)."""

    frame: pd.DataFrame
    runs: dict[str, RunMeta] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    #: the interleaved confirmations stored in the runs' directories (``harness.store.confirmations``)
    confirmations: pd.DataFrame = field(default_factory=pd.DataFrame)


#: JSON files layerbench writes beside its rows (run metadata, the JSON report): never result files.
NOT_RESULTS = re.compile(rf"{META_FILE.pattern}|report\.json", re.IGNORECASE)


#: A folder of committed evidence runs (``results/reference/``, other machines' among them): a folder
#: above it never reads it; naming it (or a path inside it) does.
REFERENCE = "reference"


def _in_dir(p: Path) -> list[Path]:
    """The result files under a directory: Parquet parts and journals; where there are none (a
    pytest-benchmark storage folder, ``.benchmarks/``), its pytest-benchmark ``.json`` files.
    Files inside a ``REFERENCE`` folder below ``p`` are left out."""
    def mine(f: Path) -> bool:
        return REFERENCE not in f.relative_to(p).parts[:-1]
    found = [f for f in sorted(p.rglob(PART_GLOB)) + sorted(p.rglob(JOURNAL_GLOB)) if mine(f)]
    if found:
        return found
    return sorted(f for f in p.rglob("*") if f.suffix.lower() == ".json" and f.is_file()
                  and not NOT_RESULTS.fullmatch(f.name) and mine(f))


def _expand(paths: str | Path | Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """The result files that ``paths`` (files, directories, globs) name, and one line per path that
    names none (a typo must not silently shrink a baseline)."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    missing: list[str] = []
    for item in items:
        matches = sorted(glob.glob(str(item), recursive=True)) or [str(item)]
        before = len(out)
        for m in matches:
            p = Path(m)
            if p.is_dir():
                out += _in_dir(p)
            elif p.exists():
                out.append(p)
        if len(out) == before:
            missing.append(f"{item}: " + ("no result file under it (part-*.parquet, rows-*.jsonl or pytest-benchmark "
                                          ".json)" if Path(str(item)).is_dir() else
                                          "no such file or directory, nor a glob matching one"))
    return list(dict.fromkeys(out)), missing


def pytest_benchmark_table(path: str | Path) -> pa.Table:
    """A pytest-benchmark JSON file's rows (``harness.store.pytest_bench``) validated against the
    result schema (``RefusedFile`` naming the file, benchmark and field otherwise)."""
    try:
        records = pytest_benchmark_records(path)
    except ValueError as e:
        raise RefusedFile(str(e)) from None
    return _from_records(records, SCHEMA_VERSION, None, str(path))


def from_pytest_benchmark(path: str | Path) -> pd.DataFrame:
    """The rows of a pytest-benchmark JSON file as a DataFrame of the result table."""
    return pytest_benchmark_table(path).to_pandas()


def _read_any(p: Path) -> tuple[pa.Table | None, RunMeta | None]:
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(p), read_metadata(p)
    if suffix == ".jsonl":
        return _read_journal_table(p), _journal_meta(p)
    if suffix == ".json":
        return pytest_benchmark_table(p), None
    raise RefusedFile(f"{p}: not a result file (expected .parquet, .jsonl or pytest-benchmark .json)")


def load_runs(paths: str | Path | Iterable[str | Path]) -> Loaded:
    """Rows of runs, shards and devices, each file validated on its own: Parquet parts, unfinished
    journals (a run killed before its end), pytest-benchmark JSON. A file that cannot be read is
    refused (``Loaded.refused``) and the others load. Duplicate ``(run_id, row_id)``: the last wins.

    Args:
        paths: files, run directories, a results folder, or globs (``results/quick-cpu-*``).
    """
    files, refused = _expand(paths)
    tables, runs = [], {}
    for p in files:
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
            if meta is not None and meta.run_id == run_id:
                runs[run_id] = meta
    if not tables:
        return Loaded(pd.DataFrame(columns=list(COLUMN_NAMES)), runs, refused)
    frame = pa.concat_tables(tables).to_pandas()
    frame = frame.drop_duplicates(subset=[RUN_ID, ROW_ID], keep="last").reset_index(drop=True)
    return Loaded(frame, runs, refused, read_confirmations(dict.fromkeys(Path(p).parent for p in files
                                                                         if isinstance(p, Path))))


def load_results(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """``load_runs(paths).frame``; each refused file is logged as a warning."""
    loaded = load_runs(paths)
    for line in loaded.refused:
        log.warning("refused %s", line)
    return loaded.frame
