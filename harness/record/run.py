"""The run record: what one stored run shard is, declared once and read by attribute.

A run shard's metadata (``RunMeta``) is written as ``run-<K>of<N>.json`` beside its rows and into
its Parquet file's schema metadata. The names of a run's files, the run id's time stamp and the
ISO time every stored time uses are spelled here and nowhere else; so is the rule for a name that
becomes a directory (``safe_name``).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.errors import SpecError
from harness.record.row import Peaks

#: Every stored time (run start and end, row timestamps, ceilings): ISO 8601, local time with offset.
ISO_TIME = "%Y-%m-%dT%H:%M:%S%z"
#: The time stamp in a run id (``quick-cpu-20261124T071037Z``): UTC, sortable.
RUN_STAMP = "%Y%m%dT%H%M%SZ"
#: A night (the dataset's ``date=`` partition, the history's x labels): the UTC day.
DAY = "%Y-%m-%d"
#: The files of a run directory, as globs: Parquet parts, rows journals, metadata.
PART_GLOB, JOURNAL_GLOB, META_GLOB = "part-*.parquet", "rows-*.jsonl", "run-*.json"
#: A name that becomes one directory under the results folder: letters, digits, ``.``, ``_``, ``-``,
#: starting with a letter or digit (so never ``.``, ``..``, hidden, absolute, a separator or a glob).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Longest run id: a suite name (64) + device type + UTC time + a ``-N`` suffix fit well within it.
MAX_RUN_ID = 128


def now_iso(when: float | None = None) -> str:
    """``when`` (epoch seconds; default now) as ``ISO_TIME``."""
    return time.strftime(ISO_TIME, time.localtime(when))


def run_stamp(when: float | None = None) -> str:
    """``when`` (epoch seconds; default now) as a run id's ``RUN_STAMP``."""
    return time.strftime(RUN_STAMP, time.gmtime(when))


def utc_day(started: object) -> str:
    """The UTC day (``DAY``) of a run's start, stored as epoch seconds or an ISO string; today's
    when it is missing or unreadable."""
    if isinstance(started, (int, float)) and not isinstance(started, bool):
        return time.strftime(DAY, time.gmtime(float(started)))
    try:
        when = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
    except ValueError:
        return time.strftime(DAY, time.gmtime())
    return (when.astimezone(timezone.utc) if when.tzinfo else when).strftime(DAY)


def default_run_id(suite: str, device_type: str, when: float | None = None) -> str:
    """``<suite>-<device type>-<UTC time>``: the id (and directory) of a new run."""
    return f"{suite}-{device_type}-{run_stamp(when)}"


def safe_name(value: Any, field: str = "run_id", limit: int = MAX_RUN_ID) -> str:
    """``value`` when it can name one directory inside the results folder, else ``SpecError`` naming
    ``field``, the value and what is expected."""
    if not isinstance(value, str) or len(value) > limit or not SAFE_NAME.fullmatch(value):
        raise SpecError(field, value, f"1-{limit} letters, digits, '.', '_' or '-', starting with a letter or "
                                      "digit (it names a directory inside the results folder)")
    return value


def shard_label(shard: tuple[int, int]) -> str:
    """``2of4``: how a shard names its files."""
    return f"{shard[0]}of{shard[1]}"


@dataclass(frozen=True, slots=True)
class RunFiles:
    """The files of one run shard in its directory: rows journal, Parquet part, metadata, rejected lines."""

    dir: Path
    label: str

    @classmethod
    def of(cls, run_dir: str | Path, shard: tuple[int, int]) -> RunFiles:
        return cls(Path(run_dir), shard_label(shard))

    @property
    def journal(self) -> Path:
        return self.dir / f"rows-{self.label}.jsonl"

    @property
    def parquet(self) -> Path:
        return self.dir / f"part-{self.label}.parquet"

    @property
    def meta(self) -> Path:
        return self.dir / f"run-{self.label}.json"

    @property
    def rejected(self) -> Path:
        return self.dir / f"rejected-{self.label}.jsonl"

    @property
    def lock(self) -> Path:
        return self.dir / f".lock-{self.label}"


#: A run's metadata file, and the rows journal whose metadata sits beside it (``rows-2of4`` -> ``run-2of4.json``).
META_FILE = re.compile(r"run-\d+of\d+\.json", re.IGNORECASE)


def meta_beside(journal: str | Path) -> Path:
    """The metadata file of the shard whose rows journal is ``journal``."""
    p = Path(journal)
    return p.parent / f"run-{p.stem.removeprefix('rows-')}.json"


@dataclass(frozen=True, slots=True)
class Repeats:
    """How a run repeats its measurements: ``processes`` fresh workers per case (1 with no
    ``omp_wait``: measured in the run's own process) and the OpenMP wait policy set in the workers."""

    processes: int = 1
    omp_wait: str | None = None

    @property
    def in_workers(self) -> bool:
        return self.processes > 1 or self.omp_wait is not None

    def to_json(self) -> dict[str, Any]:
        return {"processes": self.processes, "omp_wait": self.omp_wait, "in_workers": self.in_workers}


@dataclass(frozen=True, slots=True)
class RunMeta:
    """One run shard's metadata. ``machine`` is the full description of the machine
    (``harness.devices.identity.MachineInfo.to_json``), ``ceilings`` the stored ceilings the run used
    (``harness.ceilings.calibrate.Ceilings.to_json``), ``peaks`` the peaks per peak dtype every row
    stores. Keys an older layerbench wrote and this one does not know are kept in ``extra`` and
    written back unchanged."""

    run_id: str
    suite: str | None = None
    suite_file: str | None = None
    device: str | None = None
    device_type: str | None = None
    device_name: str | None = None
    shard: tuple[int, int] = (1, 1)
    dtypes: tuple[str, ...] | None = None
    argv: tuple[str, ...] = ()
    timing_mode: str | None = None
    threads: int | None = None
    git_commit: str | None = None
    started: str | None = None
    machine_id: str | None = None
    machine_name: str | None = None
    settings_id: str | None = None
    host: str | None = None
    machine: Mapping[str, Any] | None = None
    peaks: Mapping[str, Peaks] = field(default_factory=dict)
    ceilings: Mapping[str, Any] | None = None
    load_avg: tuple[float, ...] | None = None
    harness_version: str | None = None
    torch_version: str | None = None
    python_version: str | None = None
    repeats: Repeats | None = None
    schema_version: int | None = None
    finished: str | None = None
    interrupted: bool | None = None
    busy_percent: float | None = None
    rows_this_session: int | None = None
    #: Seconds the run's processes spent warming up and sampling (every process, every row), and
    #: the run's wall time: where a run's time goes (``benchmarks/sweep_cost.py``).
    measuring_s: float | None = None
    wall_s: float | None = None
    #: What ``--threads auto`` saw on the CPUs at the start and chose (null: threads were given).
    threads_choice: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> RunMeta:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored (``extra`` merged back in, under the keys it came with)."""
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if f.name == "peaks":
                v = {d: dataclasses.asdict(p) for d, p in v.items()}
            elif isinstance(v, Repeats):
                v = v.to_json()
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunMeta | None:
        """The metadata in a stored JSON object; ``None`` when it is not a run's (no string ``run_id``).
        Values of the wrong type read as unknown (``None``), never as a crash."""
        if not isinstance(d, Mapping) or not isinstance(d.get("run_id"), str):
            return None
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: _read(k, d[k]) for k in known if k in d}
        return cls(**values, extra={k: v for k, v in d.items() if k not in known})


def _read(key: str, v: Any) -> Any:
    """One stored value as its field types it (``_READERS``), or ``None`` when it does not fit."""
    reader = _READERS.get(key, _text)
    try:
        return reader(v)
    except (TypeError, ValueError, AttributeError):
        return None if key not in ("peaks",) else {}


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _strings(v: Any) -> tuple[str, ...] | None:
    return tuple(str(x) for x in v) if isinstance(v, Sequence) and not isinstance(v, str) else None


def _shard(v: Any) -> tuple[int, int]:
    k, n = (int(x) for x in v)
    return k, n


def _peaks(v: Any) -> dict[str, Peaks]:
    return {str(d): Peaks(**p) for d, p in dict(v).items()}


def _repeats(v: Any) -> Repeats | None:
    if not isinstance(v, Mapping):
        return None
    return Repeats(processes=int(v.get("processes") or 1), omp_wait=v.get("omp_wait"))


def _mapping(v: Any) -> Mapping[str, Any] | None:
    return dict(v) if isinstance(v, Mapping) else None


def _floats(v: Any) -> tuple[float, ...] | None:
    return tuple(float(x) for x in v) if isinstance(v, Sequence) and not isinstance(v, str) else None


_READERS = {
    "shard": _shard, "dtypes": _strings, "argv": lambda v: _strings(v) or (), "threads": _int,
    "machine": _mapping, "peaks": _peaks, "ceilings": _mapping, "load_avg": _floats, "repeats": _repeats,
    "schema_version": _int, "interrupted": lambda v: v if isinstance(v, bool) else None,
    "busy_percent": _num, "rows_this_session": _int, "measuring_s": _num, "wall_s": _num,
}
