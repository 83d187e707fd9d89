"""The result store: one directory per run under ``results/``, one Parquet file per shard.

While a run goes on, each row is appended to a journal (``rows-<shard>.jsonl``, one JSON object
per line, flushed and fsync'ed) the moment it is measured; at the end, on Ctrl-C and on resume,
the journal is folded into ``part-<shard>.parquet``, written to a temporary file and renamed
(atomic). A process killed at any moment leaves at worst a torn last journal line, which is
ignored: every finished row survives, none is duplicated (rows are keyed by ``row_id``).
The store knows nothing of torch: rows are plain dicts.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: Parquet schema metadata key holding the run's metadata (JSON).
META_KEY = b"layerbench"


def shard_label(shard: tuple[int, int]) -> str:
    return f"{shard[0]}of{shard[1]}"


class RunWriter:
    """Append rows of one run shard; fold them into Parquet atomically.

    Args:
        run_dir: the run's directory (created).
        shard: (K, N), 1-based.
        metadata: run metadata (machine, versions, commit, suite, start), stored as ``run-<shard>.json``
            and in the Parquet file's schema metadata.
    """

    def __init__(self, run_dir: str | Path, shard: tuple[int, int], metadata: Mapping[str, Any]) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        label = shard_label(shard)
        self.journal = self.dir / f"rows-{label}.jsonl"
        self.parquet = self.dir / f"part-{label}.parquet"
        self.meta_path = self.dir / f"run-{label}.json"
        self.metadata = dict(metadata)
        self._write_meta()
        _repair_journal(self.journal)
        self._fh = open(self.journal, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run

    def _write_meta(self) -> None:
        _atomic_write_text(self.meta_path, json.dumps(self.metadata, indent=2, default=str) + "\n")

    def done_ids(self) -> set[str]:
        """row_ids already stored (Parquet and journal)."""
        ids = set()
        if self.parquet.exists():
            ids |= set(pq.read_table(self.parquet, columns=["row_id"]).column("row_id").to_pylist())
        ids |= {r["row_id"] for r in read_journal(self.journal)}
        return ids

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row to the journal and make it durable before returning."""
        line = json.dumps(row, default=_json_default, allow_nan=True) + "\n"
        self._fh.write(line)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def finish(self, **metadata: Any) -> Path:
        """Fold the journal into the Parquet file (atomic), update the metadata, remove the journal."""
        self.metadata.update(metadata)
        self._write_meta()
        self._fh.close()
        frames = []
        if self.parquet.exists():
            frames.append(pd.read_parquet(self.parquet))
        rows = read_journal(self.journal)
        if rows:
            frames.append(pd.DataFrame(rows))
        table = _dedupe(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame()
        write_parquet(table, self.parquet, self.metadata)
        self.journal.unlink(missing_ok=True)
        return self.parquet


def _repair_journal(path: Path) -> None:
    """Cut a torn last line (a process killed mid-write) so that appended rows start on a fresh line."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        pass


def _json_default(v: Any) -> Any:
    if isinstance(v, (set, tuple)):
        return list(v)
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a journal; a torn line (a process killed mid-write) is skipped."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break                       # torn last line
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows


def _dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    if "row_id" not in frame:
        return frame
    keys = ["run_id", "row_id"] if "run_id" in frame else ["row_id"]
    return frame.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)


def write_parquet(frame: pd.DataFrame, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``frame`` to ``path`` atomically (temporary file, then rename), metadata in the schema."""
    path = Path(path)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata is not None:
        meta = dict(table.schema.metadata or {})
        meta[META_KEY] = json.dumps(metadata, default=str).encode()
        table = table.replace_schema_metadata(meta)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The run metadata stored in a Parquet file's schema."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else {}


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
    return out


def load_results(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One DataFrame over runs, shards and devices: Parquet parts, unfinished journals (a run
    killed before its end), and pytest-benchmark JSON files (converted to the same columns).

    Args:
        paths: files, run directories, a results folder, or globs (``results/quick-cpu-*``).
    """
    frames = []
    for p in _expand(paths):
        if p.suffix == ".parquet":
            frames.append(pd.read_parquet(p))
        elif p.suffix == ".jsonl":
            rows = read_journal(p)
            if rows:
                frames.append(pd.DataFrame(rows))
        elif p.suffix == ".json":
            from harness.pytest_bench import from_pytest_benchmark
            frames.append(from_pytest_benchmark(p))
    if not frames:
        return pd.DataFrame()
    return _dedupe(pd.concat(frames, ignore_index=True))
