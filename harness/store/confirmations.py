"""The interleaved confirmations of a run's candidate findings, stored beside its rows.

One record per (pair of cases, process): the two rows (slow and fast by their medians, as the
candidate was drawn), the process that timed them, which led, the per-call seconds of every block of
each (``harness.timing.interleave``), and the host load around it. A worker journals its records to
``confirm-<shard>-p<k>.jsonl`` (the store's journal format); once every process has run, the parent
writes them all to ``confirm-<shard>.parquet`` (fsync'd temporary, renamed) and removes the journals.
The analysis reads the Parquet file only (``read_confirmations``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.store.atomic import atomic_write_table
from harness.store.journal import read_values

#: Files of confirmations in a run directory: the stored table, and worker journals.
CONFIRM_GLOB, CONFIRM_JOURNAL_GLOB = "confirm-*.parquet", "confirm-*.jsonl"


@dataclass(frozen=True, slots=True)
class Confirmation:
    """One process's interleaved timing of a candidate pair (seconds per call; ratio = slow / fast)."""

    run_id: str
    slow_row_id: str
    fast_row_id: str
    process: int
    slow_first: bool
    slow_s: list[float]
    fast_s: list[float]
    host_busy: float | None
    #: Seconds this process spent warming both layers up and timing their blocks (null in records
    #: stored before it was kept): part of where a run's time goes.
    measuring_s: float | None = None

    @property
    def ratios(self) -> list[float]:
        return [s / f for s, f in zip(self.slow_s, self.fast_s) if f > 0]


SCHEMA = pa.schema([("run_id", pa.string()), ("slow_row_id", pa.string()), ("fast_row_id", pa.string()),
                    ("process", pa.int64()), ("slow_first", pa.bool_()), ("slow_s", pa.list_(pa.float64())),
                    ("fast_s", pa.list_(pa.float64())), ("host_busy", pa.float64()), ("measuring_s", pa.float64())])
#: Fields a journal line must hold (``measuring_s`` came later: a line without it is still read).
REQUIRED = tuple(n for n in SCHEMA.names if n != "measuring_s")


def journal_path(run_dir: Path, shard: str, process: int) -> Path:
    return run_dir / f"confirm-{shard}-p{process}.jsonl"


def table_path(run_dir: Path, shard: str) -> Path:
    return run_dir / f"confirm-{shard}.parquet"


def _valid(item: Any) -> bool:
    return isinstance(item, Mapping) and all(k in item for k in REQUIRED)


def read_journals(paths: Iterable[Path]) -> list[Confirmation]:
    """The records of worker journals (a torn or foreign line is skipped)."""
    return [Confirmation(**{k: item.get(k) for k in SCHEMA.names})
            for p in paths if p.exists() for item in read_values(p) if _valid(item)]


def write_confirmations(run_dir: Path, shard: str, records: Sequence[Confirmation],
                        journals: Sequence[Path] = ()) -> Path:
    """Store ``records`` (atomically, merged with any stored before), then remove ``journals``."""
    path = table_path(run_dir, shard)
    old = pq.read_table(path).to_pylist() if path.exists() else []
    new = [asdict(r) for r in records]
    keys = {(r["slow_row_id"], r["fast_row_id"], r["process"]) for r in new}
    rows = [r for r in old if (r["slow_row_id"], r["fast_row_id"], r["process"]) not in keys] + new
    atomic_write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    for j in journals:
        j.unlink(missing_ok=True)
    return path


def read_confirmations(run_dirs: Iterable[Path]) -> pd.DataFrame:
    """Every stored confirmation of ``run_dirs``, one row per (pair, process); a file that cannot be
    read is skipped (the findings then stand unconfirmed, as without it)."""
    tables = []
    for d in run_dirs:
        for f in sorted(Path(d).glob(CONFIRM_GLOB)):
            try:
                tables.append(pq.read_table(f, schema=SCHEMA))
            except (OSError, pa.ArrowException, ValueError):
                continue
    if not tables:
        return pd.DataFrame(columns=SCHEMA.names)
    return pa.concat_tables(tables).to_pandas()
