"""Stored rows as pytest-benchmark JSON that pytest-benchmark's own ``compare`` loads
(``layerbench run --benchmark-json``): ``machine_info``, ``commit_info``, and per ok row ``stats``
(the stored times; outlier counts from pytest-benchmark's own ``Stats`` over the stored samples)
and ``extra_info`` (the row, marked ``layerbench_schema``). ``harness.store.pytest_bench`` reads it
back losslessly."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest_benchmark
from pytest_benchmark.stats import Stats

from harness.analysis.findings import describe_row
from harness.errors import SpecError
from harness.record import SCHEMA_VERSION
from harness.store import load_runs
from harness.store.pytest_bench import MARK, STATS


def _stats(r: Mapping[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` of a stored row: the stored times, and the outlier fields from
    pytest-benchmark's own ``Stats`` over the stored samples (seconds per call)."""
    samples = [float(x) for x in (r.get("samples_s") or [])] or [float(r["time_median_s"])]
    s = Stats()
    for x in samples:
        s.update(x)
    out = {k: getattr(s, k) for k in Stats.fields}
    out.update({k: float(r[col]) for k, col in STATS.items() if r.get(col) is not None})
    out.update(rounds=int(r.get("reps") or len(samples)), iterations=int(r.get("number") or 1), data=samples,
               ops=1.0 / out["mean"] if out["mean"] else 0.0)
    return out


def _machine_info(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"node": r["host"], "processor": r["device_name"], "python_implementation": "CPython",
            "python_version": r["python_version"], "machine": r["device_type"],
            "cpu": {"brand_raw": r["device_name"]},
            "layerbench": {"machine_id": r["machine_id"], "machine_name": r["machine_name"],
                           "settings_id": r["settings_id"], "device": r["device"], "torch": r["torch_version"]}}


def _commit_info(r: Mapping[str, Any]) -> dict[str, Any]:
    commit = r.get("git_commit")
    dirty = bool(commit and commit.endswith("-dirty"))
    return {"id": commit.removesuffix("-dirty") if commit else None, "dirty": dirty,
            "project": "layerbench", "branch": None, "time": None}


def pytest_benchmark_doc(records: list[Mapping[str, Any]]) -> dict[str, Any]:
    """pytest-benchmark's JSON document of stored rows (``ok`` rows only: the others have no time)."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("time_median_s") is not None]
    if not ok:
        raise SpecError("--benchmark-json", f"{len(records)} row(s), none ok", "at least one measured (ok) row")
    benchmarks = []
    for r in ok:
        case = f"{r['family']}: {describe_row(r)} {r['dtype']}"
        extra = {k: v for k, v in r.items() if k != "samples_s"} | {MARK: SCHEMA_VERSION}
        benchmarks.append({"group": r["family"], "name": f"layerbench[{case}]",
                           "fullname": f"layerbench::{r['suite']}::{r['row_id']}", "params": {"case": case},
                           "param": case, "extra_info": extra, "stats": _stats(r),
                           "options": {"disable_gc": bool(r.get("gc_paused")), "timer": str(r.get("timer")),
                                       "min_rounds": None, "max_time": None, "min_time": None, "warmup": True}})
    first = ok[0]
    return {"machine_info": _machine_info(first), "commit_info": _commit_info(first), "benchmarks": benchmarks,
            "datetime": str(first["timestamp"]), "version": pytest_benchmark.__version__}


def write_pytest_benchmark(rows: str | Path | Any, path: str | Path) -> Path:
    """Write stored rows (a run directory, files or globs as ``load_runs`` takes them, or a result
    DataFrame) to ``path`` as pytest-benchmark JSON; ``SpecError`` when there is no ok row."""

    frame = rows if isinstance(rows, pd.DataFrame) else load_runs(rows).frame
    records = [{k: _py(v) for k, v in r.items()} for r in frame.to_dict("records")]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(pytest_benchmark_doc(records), indent=1, allow_nan=False) + "\n")
    return out


def _py(v: Any) -> Any:
    """A DataFrame cell as plain JSON-able Python (NaN and NA -> None, numpy -> Python)."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v.item() if hasattr(v, "item") else v
