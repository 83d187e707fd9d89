"""The result dataset: every committed run shard published as one Parquet file of a hive-partitioned
dataset at a local path or any fsspec URL (``file://``, ``s3://``, ``gs://``, ``memory://``).

Layout (``Shard.path``)::

    <root>/bench=<suite>/machine=<machine_id>/date=<YYYY-MM-DD>/<run_id>--<K>of<N>.parquet

The partition keys are named ``bench``, ``machine`` and ``date`` (not ``suite`` or ``machine_id``)
so that they never clash with the stored columns of the same values when pandas, pyarrow, DuckDB
or Spark read the folder with hive partitioning. ``date`` is the UTC day the run started.

A shard is committed atomically: on a local file system it is written to a hidden temporary name
beside its final one and renamed over it; on an object store it is one PUT of the whole file
(objects appear whole or not at all). A shard's name depends only on its run and shard, so
publishing again (a resumed run, a retried Ray task) replaces it, never adds a copy. Reading
validates each file as the store does (``harness.store.load_runs``): a bad file is refused with
one line naming it, the others load, and rows are deduplicated on ``(run_id, row_id)``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from harness.errors import SpecError
from harness.record import ROW_ID, RUN_ID
from harness.record.run import utc_day
from harness.store.atomic import atomic_write_bytes
from harness.store.runs import Loaded, load_runs, read_metadata

#: Partition keys, outermost first.
PARTITIONS = ("bench", "machine", "date")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def is_url(text: str | Path) -> bool:
    """``s3://bucket/x`` and ``file:///x`` are URLs; ``results`` and ``/tmp/x`` are plain paths."""
    return "://" in str(text)


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise SpecError("dataset URL", url, f"a path or an fsspec URL whose file system is installed ({e})") from None


@dataclass(frozen=True, slots=True)
class Shard:
    """Where one committed run shard lives in the dataset."""

    suite: str
    machine_id: str
    date: str            # YYYY-MM-DD, UTC, the run's start
    run_id: str
    shard: str           # K of N, e.g. 1of4

    @property
    def path(self) -> str:
        parts = (self.suite, self.machine_id, self.date)
        folders = "/".join(f"{k}={_SAFE.sub('_', v)}" for k, v in zip(PARTITIONS, parts))
        return f"{folders}/{_SAFE.sub('_', self.run_id)}--{self.shard}.parquet"

    @classmethod
    def of(cls, parquet: str | Path) -> Shard:
        """The shard a run's ``part-<K>of<N>.parquet`` belongs to, from its stored metadata."""
        meta = read_metadata(parquet)
        missing = ["run_id"] if meta is None else [k for k in ("suite", "machine_id") if not getattr(meta, k)]
        if meta is None or missing:
            raise SpecError("run metadata", f"{parquet}: {', '.join(missing)} missing",
                            "a part written by layerbench run (schema 2 or later)")
        day = utc_day(meta.started)
        label = Path(parquet).stem.removeprefix("part-")
        return cls(str(meta.suite), str(meta.machine_id), day, meta.run_id, label)


def publish(parquet: str | Path, root: str) -> str:
    """Commit one run shard's Parquet file to the dataset at ``root``; returns its URL or path.

    Local: ``harness.store.atomic_write_bytes`` (a fsync'd temporary beside it, renamed: atomic). Object
    stores: a single PUT of the whole file."""
    shard = Shard.of(parquet)
    data = Path(parquet).read_bytes()
    fs, base = _fs(root)
    target = f"{base.rstrip('/')}/{shard.path}"
    parent = target.rsplit("/", 1)[0]
    if isinstance(fs, LocalFileSystem):
        os.makedirs(parent, exist_ok=True)
        atomic_write_bytes(Path(target), data)
    else:
        fs.pipe_file(target, data)
    return target if isinstance(fs, LocalFileSystem) and not is_url(root) else _unstrip(root, base, target)


def _unstrip(root: str, base: str, target: str) -> str:
    """``target`` with the protocol of ``root`` put back (fsspec strips it)."""
    proto = root.split("://", 1)[0] if is_url(root) else ""
    return f"{proto}://{target.lstrip('/') if proto != 'file' else target}" if proto else target


def shard_files(root: str) -> list[str]:
    """Every committed shard under ``root`` (hidden temporary files excluded), sorted."""
    fs, base = _fs(root)
    if not fs.exists(base):
        return []
    found = fs.find(base)
    return sorted(p for p in found if p.endswith(".parquet") and not p.rsplit("/", 1)[-1].startswith("."))


def load_dataset(root: str, cache: str | Path | None = None) -> Loaded:
    """Rows of every shard under ``root``, validated per file like ``store.load_runs``.

    Remote files are fetched into ``cache`` (default: a temporary folder, removed after) and
    refused files are named by their URL."""
    fs, _ = _fs(root)
    files = shard_files(root)
    if isinstance(fs, LocalFileSystem):
        return load_runs(files) if files else load_runs([])
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        local = {}
        for i, remote in enumerate(files):
            dest = Path(tmp) / f"{i:06d}-{remote.rsplit('/', 1)[-1]}"
            fs.get_file(remote, str(dest))
            local[str(dest)] = _unstrip(root, "", remote)
        loaded = load_runs(list(local)) if local else load_runs([])
    refused = [_rename(line, local) for line in loaded.refused]
    return Loaded(loaded.frame, loaded.runs, refused)


def _rename(line: str, names: dict[str, str]) -> str:
    for local, remote in names.items():
        if line.startswith(local):
            return remote + line[len(local):]
    return line


def is_dataset_dir(path: str | Path) -> bool:
    """A local folder holding a dataset (``bench=<suite>`` partitions at its top)."""
    p = Path(path)
    return not is_url(path) and p.is_dir() and any(p.glob(f"{PARTITIONS[0]}=*"))


def load_any(paths: str | Path | Iterable[str | Path]) -> Loaded:
    """``store.load_runs`` for paths and globs, ``load_dataset`` for URLs and dataset folders; merged."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    urls = [str(p) for p in items if is_url(p) or is_dataset_dir(p)]
    plain = [p for p in items if str(p) not in urls]
    parts = [load_dataset(u) for u in urls] + ([load_runs(plain)] if plain else [])
    if len(parts) == 1:
        return parts[0]
    frames = [p.frame for p in parts if not p.frame.empty]
    frame = (pd.concat(frames, ignore_index=True).drop_duplicates([RUN_ID, ROW_ID], keep="last")
             .reset_index(drop=True) if frames else parts[0].frame)
    runs: dict[str, dict[str, Any]] = {}
    for p in parts:
        runs.update(p.runs)
    return Loaded(frame, runs, [line for p in parts for line in p.refused])


def staging_dir(url: str) -> Path:
    """The local folder where runs for dataset ``url`` are staged before publishing: under
    ``$LAYERBENCH_CACHE`` (default ``~/.cache/layerbench``), named by the URL, kept across a kill so
    ``--resume`` finds the journal."""
    base = Path(os.environ.get("LAYERBENCH_CACHE", Path.home() / ".cache" / "layerbench"))
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return base / "staging" / f"{_SAFE.sub('_', url)[-40:]}-{digest}"
