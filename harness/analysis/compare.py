"""Comparisons across runs: two runs case by case, nightly regressions against a baseline or the
recent history, and one suite across devices.

A verdict needs both a difference beyond ``threshold`` and noise bands that do not overlap: each
side's interquartile range or median 95 % confidence interval, whichever is wider, so noise never
reads as a change (in the spirit of NVBench's SAME/FAST/SLOW).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Default relative change below which two medians are the ``same``. Two runs of one build on this
#: project's 2-core VM differ by up to about 10 % on memory-bound rows (README, "Comparing runs").
COMPARE_THRESHOLD = 0.10
#: Default relative slowdown a nightly regression must exceed (beyond noise).
REGRESSION_THRESHOLD = 0.15
KEY = "row_id"


def _band(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each row's noise band: the wider of its interquartile range and its median's 95 % CI. The
    CI alone narrows as samples accumulate while run-to-run drift does not; the IQR (the spread of
    single samples) keeps two runs of the same build from reading as a change."""
    med = frame["time_median_s"]
    nan = pd.Series(np.nan, index=frame.index)
    q1, q3 = frame.get("time_q1_s", nan).fillna(med), frame.get("time_q3_s", nan).fillna(med)
    lo = np.fmin(frame.get("time_ci_low_s", nan), q1)
    hi = np.fmax(frame.get("time_ci_high_s", nan), q3)
    return lo, hi


def _side(frame: pd.DataFrame, tag: str) -> pd.DataFrame:
    ok = frame[frame["status"] == "ok"].drop_duplicates(KEY, keep="last").set_index(KEY)
    lo, hi = _band(ok)
    cols = {"time_median_s": f"time_{tag}_s", "device_name": f"device_{tag}", "run_id": f"run_{tag}"}
    out = ok[list(cols)].rename(columns=cols)
    out[f"low_{tag}_s"], out[f"high_{tag}_s"] = lo, hi
    if "util_ceiling" in ok:
        out[f"util_{tag}"] = ok["util_ceiling"].where(ok["util_ceiling"].notna(), ok.get("util_datasheet"))
    return out


def compare(a: pd.DataFrame, b: pd.DataFrame, threshold: float = COMPARE_THRESHOLD) -> pd.DataFrame:
    """Per case present in both (ok rows, joined on ``row_id``): times, ``ratio`` = b / a, the
    utilization of each when derived, and ``verdict``: ``slower``, ``faster`` or ``same``."""
    ida = ["family", "layer", "params", "input_shapes", "memory_format", "dtype"]
    meta = a[a["status"] == "ok"].drop_duplicates(KEY, keep="last").set_index(KEY)[[c for c in ida if c in a]]
    j = meta.join(_side(a, "a"), how="inner").join(_side(b, "b"), how="inner")
    j["ratio"] = j["time_b_s"] / j["time_a_s"]
    slower = (j["low_b_s"] > j["high_a_s"]) & (j["ratio"] > 1 + threshold)
    faster = (j["high_b_s"] < j["low_a_s"]) & (j["ratio"] < 1 - threshold)
    j["verdict"] = np.where(slower, "slower", np.where(faster, "faster", "same"))
    return j.reset_index()


def regressions(history: pd.DataFrame, new: pd.DataFrame, threshold: float = REGRESSION_THRESHOLD) -> pd.DataFrame:
    """Cases of ``new`` slower than their history beyond noise and ``threshold``.

    ``history`` holds one or more earlier runs of the same machine: the reference is the median of
    their medians, the noise band the highest upper bound (q3 or CI) any of them reached. A case
    regressed when its own band lies above that and its median exceeds the reference by more
    than ``threshold``. Returns those rows with ``reference_s``, ``band_high_s`` and ``slowdown``.
    """
    h = history[history["status"] == "ok"].copy()
    _, h["high"] = _band(h)
    ref = h.groupby(KEY).agg(reference_s=("time_median_s", "median"), band_high_s=("high", "max"),
                             history_runs=("run_id", "nunique"))
    n = new[new["status"] == "ok"].drop_duplicates(KEY, keep="last").set_index(KEY)
    n["low"], _ = _band(n)
    j = n.join(ref, how="inner")
    j["slowdown"] = j["time_median_s"] / j["reference_s"]
    bad = (j["low"] > j["band_high_s"]) & (j["slowdown"] > 1 + threshold)
    cols = [c for c in ["family", "layer", "params", "input_shapes", "memory_format", "dtype", "time_median_s",
                        "reference_s", "band_high_s", "slowdown", "history_runs"] if c in j]
    return j.loc[bad, cols].sort_values("slowdown", ascending=False).reset_index()


def cross_device(frame: pd.DataFrame, value: str = "util_ceiling") -> pd.DataFrame:
    """One row per case and dtype, one column per device: ``value`` (default: utilization of the
    measured ceiling, falling back to the datasheet's), so a user sees which device runs which layer
    closest to its peak."""
    f = frame[frame["status"] == "ok"].copy()
    if value == "util_ceiling" and "util_datasheet" in f:
        f[value] = f[value].where(f[value].notna(), f["util_datasheet"])
    idx = [c for c in ["family", "layer", "params", "input_shapes", "memory_format", "dtype"] if c in f]
    return f.pivot_table(index=idx, columns="device_name", values=value, aggfunc="median")
