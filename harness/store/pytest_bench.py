"""pytest-benchmark JSON read as rows (writing it is ``harness.report.pytest_json``).

``pytest_benchmark_records`` (used by ``harness.store.load_runs`` for ``.json`` files): files
written by layerbench (``layerbench run --benchmark-json``) carry each row's record in
``extra_info`` (with ``layerbench_schema``) and convert losslessly; files of the pytest plugin carry
the row identity and counts in ``extra_info`` and pytest-benchmark's timing; a plain user's file
converts too: each benchmark becomes an ``ok`` row named by its test, its machine from
``machine_info``, its timing from ``stats`` (seconds per call), its counts and peaks null
(``peak_source = not stored``). Anything malformed (not JSON, a list where an object belongs,
non-finite or out-of-range numbers, a wrong type) is refused with one line naming the file, the
benchmark and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import short as _short
from harness.record import BY_NAME, BYTES_READ, BYTES_WRITTEN, COLUMN_NAMES, FLOPS, MACS, PARAMS, PASS, SCHEMA_VERSION
from harness.timing.stability import NOISY_REL_IQR, verdict

#: pytest-benchmark stats key -> record column (all seconds per call).
STATS = {"median": "time_median_s", "q1": "time_q1_s", "q3": "time_q3_s", "iqr": "time_iqr_s", "min": "time_min_s",
         "max": "time_max_s", "mean": "time_mean_s", "stddev": "time_std_s"}
#: Files above this size are refused (a results file of a few thousand benchmarks is a few MB).
MAX_BYTES = 256 << 20
#: Integers beyond this magnitude do not fit the table's int64 columns.
MAX_INT = 2**63 - 1
TIMER = "pytest-benchmark"
#: ``extra_info`` key marking a full layerbench row (its value: the schema version of the row).
MARK = "layerbench_schema"
#: ``extra_info`` key marking a row of layerbench's pytest plugin (identity and counts, pytest-benchmark's timing).
PLUGIN_MARK = "layerbench_plugin"
#: Without a mark, these ``extra_info`` keys all present also say the row is the plugin's (files written
#: before the mark). Any other file's ``extra_info`` is the user's own: only ``USER_COUNTS`` are read
#: from it (a number; a whole float counts as an integer), never the row's identity, machine or status.
IDENTITY = ("run_id", "row_id", "case_id", "machine_id")
#: Counts a plain user may give in ``extra_info`` for layerbench to derive rates and intensity.
USER_COUNTS = (FLOPS, MACS, PARAMS, BYTES_READ, BYTES_WRITTEN)


def _digest(value: Any, n: int = 12) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:n]


#: Stats that may be 0 (a spread, or the fastest call under a coarse clock); every other time is > 0.
MAY_BE_ZERO = ("min", "q1", "iqr", "stddev")


def _seconds(st: Mapping[str, Any], key: str, where: str) -> float:
    v = st.get(key)
    zero_ok = key in MAY_BE_ZERO
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v < 1e9 or \
            (v == 0 and not zero_ok):
        span = "[0, 1e9)" if zero_ok else "(0, 1e9)"
        raise ValueError(f"{where}: stats.{key}={_short(v)}: expected a finite number of seconds in {span}")
    return float(v)


#: Stats that must be ordered as written: min <= q1 <= median <= q3 <= max, and min <= mean <= max.
ORDER = (("min", "q1"), ("q1", "median"), ("median", "q3"), ("q3", "max"), ("min", "median"), ("median", "max"),
         ("min", "mean"), ("mean", "max"))


def _check_order(st: Mapping[str, Any], times: Mapping[str, float], where: str) -> None:
    """``ValueError`` when two stats contradict each other (a median above the max)."""
    got = {k: times[col] for k, col in STATS.items() if col in times}
    for lo, hi in ORDER:
        if lo in got and hi in got and got[lo] > got[hi] * (1 + 1e-9):
            raise ValueError(f"{where}: stats.{lo}={_short(st[lo])} > stats.{hi}={_short(st[hi])}: expected "
                             "min <= q1 <= median <= q3 <= max and min <= mean <= max")


def _count(st: Mapping[str, Any], key: str, where: str) -> int | None:
    v = st.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_INT:
        raise ValueError(f"{where}: stats.{key}={_short(v)}: expected a whole number >= 1")
    return v


def _object(doc: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    v = doc.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"{where}: {key}={_short(v)}: expected an object")
    return v


def _machine(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    mi = _object(doc, "machine_info", where)
    cpu = _object(mi, "cpu", f"{where}: machine_info")
    hw = [cpu.get(k) for k in ("vendor_id_raw", "brand_raw", "family", "model", "stepping", "count", "arch")]
    brand = str(cpu.get("brand_raw") or mi.get("processor") or "unknown CPU")[:200]
    return {"machine_id": "pb" + _digest(hw, 10), "machine_name": f"{brand} ({str(cpu.get('count', '?'))[:8]} CPUs)",
            "settings_id": "pb" + _digest([mi.get("python_implementation"), mi.get("python_version")], 10),
            "host": str(mi.get("node") or "unknown")[:200], "device_name": brand,
            "python_version": str(mi.get("python_version") or "unknown")[:40]}


def _check_value(name: str, v: Any, at: str) -> Any:
    """``extra_info[name]`` checked against its column's type; ``ValueError`` naming the field otherwise."""
    column = BY_NAME[name]
    if v is None:
        return None
    py = column.python
    if py is list:
        ok = isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                         for x in v)
    elif py is bool:
        ok = isinstance(v, bool)
    elif py is int:
        ok = isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_INT
    elif py is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    else:
        ok = isinstance(v, str) and len(v) <= 100_000
    if not ok:
        raise ValueError(f"{at}: extra_info.{name}={_short(v)}: expected {py.__name__} ({column.unit}) or null")
    return v


def run_id_of(doc: Mapping[str, Any], file_digest: str) -> str:
    """A plain file's run id: its ``datetime`` (digits and letters) and a digest of the file's bytes,
    so two files never merge into one run unless they are the same file."""
    stamp = re.sub(r"[^0-9A-Za-z]+", "", str(doc.get("datetime") or ""))[:20] or "undated"
    return f"pytest-benchmark-{stamp}-{file_digest[:8]}"


def _plain_row(b: Mapping[str, Any], name: str, doc: Mapping[str, Any], machine: dict[str, Any],
               run_id: str) -> dict[str, Any]:
    """The row of a benchmark without layerbench's record: identity from its name, machine from the file."""
    params = b.get("params") if isinstance(b.get("params"), dict) else {}
    stamp = str(doc.get("datetime") or "")[:40]
    commit = doc.get("commit_info") or {}
    case_id = _digest([name], 16)
    return {"run_id": run_id,
            "case_id": case_id, "config_id": case_id, "suite": "pytest-benchmark",
            "family": str(b.get("group") or "pytest-benchmark")[:200], "layer": str(b.get("name") or name)[:200],
            "config": json.dumps(params, sort_keys=True, default=str), "axes": json.dumps(params, sort_keys=True,
                                                                                         default=str),
            "memory_format": "-", "dtype": "-", "device": "cpu", "device_type": "cpu", "status": "ok",
            "peak_source": "not stored", "ceiling_source": "not stored", "timestamp": stamp, "harness_version": "-",
            "torch_version": "-", "git_commit": str(commit["id"])[:80] if commit.get("id") else None, **machine}


def _user_counts(extra: Mapping[str, Any]) -> dict[str, int]:
    """``USER_COUNTS`` of a plain file's ``extra_info`` that are whole numbers (other values are the
    user's own and are left alone; a negative count is refused by the store's checks)."""
    out = {}
    for k in USER_COUNTS:
        v = extra.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v):
            continue
        if abs(v) <= MAX_INT:
            out[k] = int(v)
    return out


def _ours(extra: Mapping[str, Any]) -> tuple[bool, bool]:
    """(full, layerbench's): a full layerbench row (``MARK`` of schema 2 to this one, and a timer;
    columns added since are null, the pass ``forward``), or any row layerbench wrote (full, the
    plugin's mark, or the plugin's identity keys)."""
    mark = extra.get(MARK)
    full = type(mark) is int and 2 <= mark <= SCHEMA_VERSION and extra.get("timer") is not None
    return full, full or extra.get(PLUGIN_MARK) is not None or MARK in extra or all(k in extra for k in IDENTITY)


def _record(b: Any, i: int, doc: Mapping[str, Any], machine: dict[str, Any], where: str,
            run_id: str) -> dict[str, Any]:
    if not isinstance(b, dict):
        raise ValueError(f"{where}: benchmarks[{i}]={_short(b)}: expected an object with name and stats")
    name = b.get("fullname") or b.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: benchmarks[{i}].name={_short(b.get('name'))}: expected the benchmark's name")
    at = f"{where}: benchmarks[{i}] ({name[:80]})"
    st = b.get("stats")
    if not isinstance(st, dict):
        raise ValueError(f"{at}: stats={_short(st)}: expected an object of statistics")
    extra = _object(b, "extra_info", at)
    _check_text({k: b.get(k) for k in ("name", "fullname", "group", "params", "param", "extra_info")}, at)
    full, layerbench = _ours(extra)
    ours = {k: _check_value(k, v, at) for k, v in extra.items() if k in BY_NAME} if layerbench else \
        _user_counts(extra)
    row = dict(ours) if full else _plain_row(b, name, doc, machine, run_id) | ours
    times = {col: _seconds(st, k, at) for k, col in STATS.items() if k in st or k == "median"}
    rounds, iters = _count(st, "rounds", at), _count(st, "iterations", at)
    data = st.get("data")
    if data is not None and not (isinstance(data, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0 for x in data)):
        raise ValueError(f"{at}: stats.data={_short(data)}: expected a list of finite numbers of seconds")
    _check_order(st, times, at)
    row.update(times)
    if data is not None:
        row["samples_s"] = [float(x) for x in data]
    if not full:
        med, mean = times["time_median_s"], row.get("time_mean_s")
        row.update(timer=TIMER, mode="hot", reps=rounds, number=iters, outliers=_outliers(st.get("outliers")),
                   rel_iqr=row["time_iqr_s"] / med if med and "time_iqr_s" in row else None,
                   rel_std=row["time_std_s"] / mean if mean and "time_std_s" in row else None)
        if row.get("noisy") is None:
            row["noisy"] = bool(row["rel_iqr"] is not None and row["rel_iqr"] > 0.10)
        if row.get("stability") is None:
            row["stability"], row["stability_reason"] = _stability(row.get("samples_s"), row["rel_iqr"], rounds)
        row["row_id"] = f"{row['machine_id']}:{row['device']}:{row['case_id']}"
    if row.get(PASS) is None:
        row[PASS] = "forward"                   # the plugin and rows before version 5 time the forward pass
    return {k: row.get(k) for k in COLUMN_NAMES}


def _stability(samples: list[float] | None, rel_iqr: float | None, rounds: int | None) -> tuple[str, str]:
    """The verdict of ``harness.timing.stability`` over the file's samples (``stats.data``); without
    samples, its noise rule over the stats alone (relative IQR, at least 3 rounds)."""
    if samples:
        v, why = verdict([samples], None)
        return str(v), f"pytest-benchmark samples: {why}"
    if rel_iqr is None or rounds is None:
        return "noisy", "pytest-benchmark stats without iqr or rounds: spread unknown"
    why = f"pytest-benchmark stats: rel_iqr {100 * rel_iqr:.1f} %, {rounds} rounds (no samples stored)"
    return ("noisy" if rel_iqr > NOISY_REL_IQR or rounds < 3 else "stable"), why


def _check_text(value: Any, at: str, path: str = "") -> None:
    """``ValueError`` naming the field when a string holds a lone surrogate (valid JSON, ``"\\udcff"``,
    but not text any file, page or terminal can hold)."""
    stack = [(path, value)]
    while stack:
        key, v = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                raise ValueError(f"{at}: {key.lstrip('.')}={_short(v)}: expected text without lone surrogates")
        elif isinstance(v, dict):
            stack += [(f"{key}.{k}", x) for k, x in v.items()] + [(f"{key}.<key>", k) for k in v]
        elif isinstance(v, list):
            stack += [(f"{key}[{j}]", x) for j, x in enumerate(v) if isinstance(x, (str, dict, list))]


_SURROGATE = re.compile("[\ud800-\udfff]")


def _load_json(p: Path) -> tuple[Any, str]:
    """The document and the SHA-1 of the file's bytes."""
    if p.stat().st_size > MAX_BYTES:
        raise ValueError(f"{p}: {p.stat().st_size:,} bytes: expected a pytest-benchmark file under {MAX_BYTES:,}")
    raw = p.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=float), hashlib.sha1(raw).hexdigest()
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not JSON ({str(e)[:120]})") from None
    except RecursionError:
        raise ValueError(f"{p}: not JSON this reader accepts (nested too deeply)") from None


def pytest_benchmark_records(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a pytest-benchmark JSON file as current records; ``ValueError`` naming the file,
    the benchmark and the field for anything malformed."""
    p = Path(path)
    doc, file_digest = _load_json(p)
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise ValueError(f"{p}: benchmarks: missing; expected a pytest-benchmark JSON object with a 'benchmarks' list")
    if not doc["benchmarks"]:
        raise ValueError(f"{p}: benchmarks: an empty list; expected at least one benchmark")
    _check_text({k: doc.get(k) for k in ("machine_info", "commit_info", "datetime")}, str(p))
    machine = _machine(doc, str(p))
    commit = _object(doc, "commit_info", str(p))
    if commit.get("id") is not None and not isinstance(commit["id"], str):
        raise ValueError(f"{p}: commit_info.id={_short(commit['id'])}: expected a commit hash (text)")
    run_id = run_id_of(doc, file_digest)
    records = [_record(b, i, doc, machine, str(p), run_id) for i, b in enumerate(doc["benchmarks"])]
    _check_unique(records, doc["benchmarks"], p)
    return records


def _check_unique(records: list[dict[str, Any]], benchmarks: list[Any], p: Path) -> None:
    """``ValueError`` naming both benchmarks when two rows of one file share a run and row id (one
    would silently replace the other)."""
    seen: dict[tuple[Any, Any], int] = {}
    for i, r in enumerate(records):
        key = (r.get("run_id"), r.get("row_id"))
        if key in seen:
            j = seen[key]
            raise ValueError(f"{p}: benchmarks[{i}] ({_name(benchmarks[i])}): the same row as benchmarks[{j}] "
                             f"({_name(benchmarks[j])}), row_id={_short(key[1])}; expected each benchmark once")
        seen[key] = i


def _name(b: Any) -> str:
    return str(b.get("fullname") or b.get("name"))[:80] if isinstance(b, dict) else "?"


def _outliers(text: Any) -> int | None:
    """pytest-benchmark writes outliers as 'A;B' (1 stddev; 1.5 IQR): the 1.5 IQR count, as Stats.outliers."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return int(text.split(";")[-1])
    except ValueError:
        return None
