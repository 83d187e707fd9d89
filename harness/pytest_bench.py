"""pytest-benchmark interop, reading side: its JSON (``--benchmark-json``) as result rows.

Files written by layerbench (``layerbench run --benchmark-json``, the pytest plugin) carry each
row's record in ``extra_info`` and convert losslessly; a plain user's file converts too: each
benchmark becomes a row whose identity comes from its name, group and params, its machine from
``machine_info``, and its timing from ``stats`` (seconds per call). Counts and peaks are then
unknown (``peak_source = not stored``). A file that is not pytest-benchmark JSON, or whose stats
are not finite numbers, is refused with one line naming the benchmark and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from harness.record import BY_NAME, COLUMN_NAMES, SCHEMA_VERSION

#: pytest-benchmark stats key -> record column (all seconds per call).
STATS = {"median": "time_median_s", "q1": "time_q1_s", "q3": "time_q3_s", "iqr": "time_iqr_s", "min": "time_min_s",
         "max": "time_max_s", "mean": "time_mean_s", "stddev": "time_std_s"}
#: Files above this size are refused (a results file of a few thousand benchmarks is a few MB).
MAX_BYTES = 256 << 20
TIMER = "pytest-benchmark"


def _digest(value: Any, n: int = 12) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _seconds(st: dict[str, Any], key: str, where: str) -> float:
    v = st.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v < 1e9:
        raise ValueError(f"{where}: stats.{key}={v!r}: expected a finite number of seconds in [0, 1e9)")
    return float(v)


def _machine(doc: dict[str, Any]) -> dict[str, Any]:
    mi = doc.get("machine_info") if isinstance(doc.get("machine_info"), dict) else {}
    cpu = mi.get("cpu") if isinstance(mi.get("cpu"), dict) else {}
    hw = [cpu.get(k) for k in ("vendor_id_raw", "brand_raw", "family", "model", "stepping", "count", "arch")]
    brand = str(cpu.get("brand_raw") or mi.get("processor") or "unknown CPU")
    return {"machine_id": "pb" + _digest(hw, 10), "machine_name": f"{brand} ({cpu.get('count', '?')} CPUs)",
            "settings_id": "pb" + _digest([mi.get("python_implementation"), mi.get("python_version")], 10),
            "host": str(mi.get("node") or "unknown"), "device_name": brand,
            "python_version": str(mi.get("python_version") or "unknown")}


def _record(b: dict[str, Any], i: int, doc: dict[str, Any], machine: dict[str, Any], where: str) -> dict[str, Any]:
    name = str(b.get("fullname") or b.get("name") or f"benchmark {i}")
    at = f"{where}: benchmarks[{i}] ({name[:80]})"
    st = b.get("stats")
    if not isinstance(st, dict):
        raise ValueError(f"{at}: stats={st!r}: expected a table of statistics")
    extra = b.get("extra_info") if isinstance(b.get("extra_info"), dict) else {}
    ours = {k: v for k, v in extra.items() if k in BY_NAME}
    params = b.get("params") if isinstance(b.get("params"), dict) else {}
    stamp = str(doc.get("datetime") or "")
    case_id = _digest([name], 16)
    med = _seconds(st, "median", at)
    row: dict[str, Any] = {
        "run_id": "pytest-benchmark-" + re.sub(r"[^0-9A-Za-z]+", "", stamp)[:20], "case_id": case_id,
        "config_id": case_id, "suite": "pytest-benchmark", "family": str(b.get("group") or "pytest-benchmark"),
        "layer": str(b.get("name") or name).split("[")[0], "config": json.dumps(params, sort_keys=True, default=str),
        "axes": json.dumps(params, sort_keys=True, default=str), "memory_format": "-", "dtype": "-", "device": "cpu",
        "device_type": "cpu", "status": "ok", "peak_source": "not stored", "ceiling_source": "not stored",
        "timestamp": stamp, "harness_version": "-", "torch_version": "-", **machine}
    row["git_commit"] = (doc.get("commit_info") or {}).get("id") if isinstance(doc.get("commit_info"), dict) else None
    row.update(ours)
    row.update({col: _seconds(st, k, at) for k, col in STATS.items() if k in st})
    mean = row.get("time_mean_s")
    rounds, iters = st.get("rounds"), st.get("iterations", 1)
    data = st.get("data")
    row.update(timer=TIMER, mode="hot", reps=rounds if isinstance(rounds, int) and rounds > 0 else None,
               number=iters if isinstance(iters, int) and iters > 0 else None, outliers=_outliers(st.get("outliers")),
               rel_iqr=row.get("time_iqr_s", math.nan) / med if med else None,
               rel_std=row["time_std_s"] / mean if mean and "time_std_s" in row else None,
               samples_s=[float(x) for x in data if isinstance(x, (int, float)) and math.isfinite(x)]
               if isinstance(data, list) else None)
    row.setdefault("noisy", bool(row["rel_iqr"] is not None and row["rel_iqr"] > 0.10))
    row["row_id"] = f"{row['machine_id']}:{row['device']}:{row['case_id']}"
    return {k: row.get(k) for k in COLUMN_NAMES}


def pytest_benchmark_records(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a pytest-benchmark JSON file as current records; ``ValueError`` naming the file,
    the benchmark and the field for anything malformed."""
    p = Path(path)
    if p.stat().st_size > MAX_BYTES:
        raise ValueError(f"{p}: {p.stat().st_size:,} bytes: expected a pytest-benchmark file under {MAX_BYTES:,}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"), parse_constant=lambda c: float(c))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not JSON ({str(e)[:120]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise ValueError(f"{p}: not a pytest-benchmark JSON file (expected a 'benchmarks' list)")
    machine = _machine(doc)
    return [_record(b if isinstance(b, dict) else {}, i, doc, machine, str(p)) for i, b in enumerate(doc["benchmarks"])]


def pytest_benchmark_table(path: str | Path) -> pa.Table:
    """``pytest_benchmark_records`` validated against the result schema (``RefusedFile`` otherwise)."""
    from harness.store import RefusedFile, _from_records
    try:
        records = pytest_benchmark_records(path)
    except ValueError as e:
        raise RefusedFile(str(e)) from None
    return _from_records(records, SCHEMA_VERSION, {}, str(path))


def from_pytest_benchmark(path: str | Path) -> Any:
    """The rows of a pytest-benchmark JSON file as a DataFrame of the result table."""
    return pytest_benchmark_table(path).to_pandas()


def _outliers(text: Any) -> int | None:
    """pytest-benchmark writes outliers as 'A;B' (1 IQR; 1.5 IQR): the 1.5 IQR count, as Stats.outliers."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return int(text.split(";")[-1])
    except ValueError:
        return None
