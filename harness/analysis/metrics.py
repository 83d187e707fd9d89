"""Derived metrics over the result table: achieved rates, utilization against the stored peaks,
the roofline bound and position, and a label a user can act on. Pure functions of the stored
columns: nothing here probes the machine or reads a file.

Units: FLOP/s, bytes/s, seconds. Roofline (Williams, Waterman, Patterson 2009; the seeds'
roofline article): attainable = min(peak FLOP/s, intensity x bandwidth); roofline time =
max(FLOPs / peak FLOP/s, bytes / bandwidth); fraction of roofline = roofline time / measured time.
Each roof is the measured ceiling where the row stores one, its theoretical peak otherwise
(``roof_source`` says which).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import record as R

#: A row whose time is within this factor of its launch floor is ``launch-bound``.
LAUNCH_BOUND_FACTOR = 2.0
#: A row reaching this fraction of its roofline time is labelled by its bound (compute/memory);
#: below it, ``under-utilised`` (parallelism, layout or kernel choice).
NEAR_ROOF = 0.5
LABELS = ("launch-bound", "memory-bound", "compute-bound", "under-utilised")


@dataclass(frozen=True, slots=True)
class Derived:
    name: str
    unit: str
    doc: str


#: The columns ``derive`` adds (README, "Derived columns").
DERIVED = (
    Derived("achieved_flops_s", "FLOP/s", "flops / time_median_s"),
    Derived("achieved_bytes_s", "B/s", "(bytes_read + bytes_written) / time_median_s"),
    Derived("util_peak", "fraction", "achieved_flops_s / peak_flops_s (the datasheet or formula peak)"),
    Derived("util_ceiling", "fraction", "achieved_flops_s / ceiling_flops_s (the measured GEMM ceiling)"),
    Derived("bw_util_peak", "fraction", "achieved_bytes_s / peak_bytes_s"),
    Derived("bw_util_ceiling", "fraction", "achieved_bytes_s / ceiling_bytes_s (the measured copy bandwidth)"),
    Derived("roof_source", "-", "`measured` (both roofs measured), `datasheet` or `formula` (both theoretical), "
            "`mixed`, or null (no roof stored)"),
    Derived("attainable_flops_s", "FLOP/s", "min(compute roof, intensity x memory roof)"),
    Derived("roofline_bound", "-", "`compute` or `memory`: which side of the ridge the row's intensity falls"),
    Derived("roofline_time_s", "s", "max(flops / compute roof, bytes / memory roof)"),
    Derived("roofline_fraction", "fraction", "roofline_time_s / time_median_s (above 1: the row beats the "
            "memory roof, its data sat in cache)"),
    Derived("launch_floor_s", "s", "kernel_launches (CPU: ATen ops) x launch_overhead_s"),
    Derived("label", "-", "`launch-bound` (time <= 2 x launch floor), `memory-bound` or `compute-bound` (>= 50 % "
            "of the roofline), else `under-utilised`"),
)


def _num(f: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(f[col], errors="coerce") if col in f else pd.Series(np.nan, index=f.index)


def derive(frame: pd.DataFrame) -> pd.DataFrame:
    """The result table with the ``DERIVED`` columns added (rows not ``ok`` get NaN/None)."""
    f = frame.copy()
    ok = f[R.STATUS].eq("ok") & (_num(f, R.TIME_MEDIAN) > 0)
    t = _num(f, R.TIME_MEDIAN).where(ok)
    flops = _num(f, R.FLOPS)
    moved = _num(f, R.BYTES_READ) + _num(f, R.BYTES_WRITTEN)
    f["achieved_flops_s"] = flops / t
    f["achieved_bytes_s"] = moved / t
    peak_f, peak_b = _num(f, R.PEAK_FLOPS), _num(f, R.PEAK_BYTES)
    ceil_f, ceil_b = _num(f, R.CEILING_FLOPS), _num(f, R.CEILING_BYTES)
    f["util_peak"] = f["achieved_flops_s"] / peak_f
    f["util_ceiling"] = f["achieved_flops_s"] / ceil_f
    f["bw_util_peak"] = f["achieved_bytes_s"] / peak_b
    f["bw_util_ceiling"] = f["achieved_bytes_s"] / ceil_b
    roof_f, roof_b = ceil_f.where(ceil_f.notna(), peak_f), ceil_b.where(ceil_b.notna(), peak_b)
    f["roof_source"] = _roof_source(f, ceil_f, ceil_b, roof_f, roof_b)
    intensity = flops / moved.replace(0, np.nan)
    f["attainable_flops_s"] = np.minimum(roof_f, intensity * roof_b)
    f["roofline_bound"] = np.where(roof_f.isna() | roof_b.isna(), None,
                                   np.where(intensity * roof_b >= roof_f, "compute", "memory"))
    f["roofline_time_s"] = np.maximum(flops / roof_f, moved / roof_b)
    f["roofline_fraction"] = f["roofline_time_s"] / t
    launches = _num(f, R.KERNEL_LAUNCHES).fillna(_num(f, R.ATEN_OPS)).fillna(1).clip(lower=1)
    f["launch_floor_s"] = launches * _num(f, R.LAUNCH_OVERHEAD)
    f["label"] = _labels(t, f["launch_floor_s"], f["roofline_fraction"], f["roofline_bound"], ok)
    return f


def _roof_source(f: pd.DataFrame, ceil_f: pd.Series, ceil_b: pd.Series, roof_f: pd.Series,
                 roof_b: pd.Series) -> np.ndarray:
    theory = f[R.PEAK_SOURCE].astype(object) if R.PEAK_SOURCE in f else pd.Series(None, index=f.index)
    both = roof_f.notna() & roof_b.notna()
    return np.where(~both, None, np.where(ceil_f.notna() & ceil_b.notna(), "measured",
                                          np.where(ceil_f.isna() & ceil_b.isna(), theory, "mixed")))


def _labels(t: pd.Series, floor: pd.Series, fraction: pd.Series, bound: pd.Series, ok: pd.Series) -> np.ndarray:
    launch = t <= LAUNCH_BOUND_FACTOR * floor
    label = np.where(launch, "launch-bound",
                     np.where(fraction >= NEAR_ROOF, np.where(bound == "memory", "memory-bound", "compute-bound"),
                              "under-utilised"))
    return np.where(ok & (fraction.notna() | launch), label, None)
