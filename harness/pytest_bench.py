"""pytest-benchmark interop: its JSON (``--benchmark-json``) converted into layerbench's result table.

``benchmarks/test_suite_benchmark.py`` runs a suite's cases as pytest-benchmark tests and puts each
row's identity and analytic counts in ``extra_info``; this module maps its statistics onto the
``time_*`` columns (seconds per call), so both histories load with ``harness.load_results``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

#: pytest-benchmark stats key -> layerbench column (all seconds per call).
STATS = {"median": "time_median_s", "q1": "time_q1_s", "q3": "time_q3_s", "iqr": "time_iqr_s", "min": "time_min_s",
         "max": "time_max_s", "mean": "time_mean_s", "stddev": "time_std_s"}


def from_pytest_benchmark(path: str | Path) -> pd.DataFrame:
    """Rows of a pytest-benchmark JSON file in the result table's columns (timer ``pytest-benchmark``)."""
    doc = json.loads(Path(path).read_text())
    if "benchmarks" not in doc:
        raise ValueError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' key)")
    machine = doc.get("machine_info", {})
    commit = doc.get("commit_info", {})
    run_id = f"pytest-benchmark-{doc.get('datetime', '')}"
    rows = []
    for b in doc["benchmarks"]:
        st = b["stats"]
        row: dict[str, Any] = dict(b.get("extra_info", {}))
        row.update({STATS[k]: st[k] for k in STATS if k in st})
        med = st.get("median") or 0.0
        row.update({
            "run_id": row.get("run_id", run_id), "timer": "pytest-benchmark", "mode": "hot",
            "reps": st.get("rounds"), "number": st.get("iterations", 1), "outliers": _outliers(st.get("outliers")),
            "rel_iqr": st["iqr"] / med if med else None,
            "rel_std": st["stddev"] / st["mean"] if st.get("mean") else None,
            "status": "ok", "error": None, "test_name": b.get("fullname", b.get("name")),
            "host": machine.get("node"), "git_commit": commit.get("id"), "timestamp": doc.get("datetime"),
            "samples_s": st.get("data"),
        })
        row.setdefault("noisy", bool(row["rel_iqr"] is not None and row["rel_iqr"] > 0.10))
        rows.append(row)
    return pd.DataFrame(rows)


def _outliers(text: str | None) -> int | None:
    """pytest-benchmark writes outliers as 'A;B' (1 IQR; 1.5 IQR): the 1.5 IQR count, as Stats.outliers."""
    if not text:
        return None
    try:
        return int(str(text).split(";")[-1])
    except ValueError:
        return None
