"""Derived metrics over the result table: achieved rates, utilization against the stored peaks,
the roofline bound and position, and a label a user can act on. Pure functions of the stored
columns: nothing here probes the machine or reads a file.

Units: FLOP/s, bytes/s, seconds. Roofline (Williams, Waterman, Patterson 2009; the seeds'
roofline article): attainable = min(peak FLOP/s, intensity x bandwidth); roofline time =
max(FLOPs / peak FLOP/s, bytes / bandwidth); fraction of roofline = roofline time / measured time.
Each roof is the measured ceiling where the row stores one, its theoretical peak otherwise
(``roof_source`` says which).

Hierarchical roofline (ERT, Lo et al. 2014; Ilic, Pratas, Sousa 2014 cache-aware roofline): the
row's working set, ``bytes_read + bytes_written``, is set against the capacities stored in
``ceiling_levels``; the innermost measured level that holds it names the memory roof
(``roof_mem_level``), and the levels inside that one serve their share first, each up to its
capacity (``roof_level_bytes_s``, the bandwidth the set is served at: ``memory_roof``); a row
whose set fits no cache, or a row without stored levels, gets main memory (``ceiling_bytes_s``, else
``peak_bytes_s``). ``roof_level`` names the largest of the three lower bounds on its time: compute
(``flops / compute roof``), that memory level (``working set / roof_level_bytes_s``) and the
launch floor.

Both depend on how the row was timed (its ``mode``): only back-to-back launches (``hot``) pay host
dispatch per call, so only they have a launch floor (a graph replay launches once for all its calls;
a cold call is queued behind its flush); a cold row's cache is flushed before every call, so its
working set is judged against main memory whatever its size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import record as R
from harness.analysis.verdicts import LABEL, labels
from harness.predict.columns import predicted_columns
from harness.predict.roofline import CACHED_MODES, DISPATCH_MODES, MAIN_MEMORY, MODE, by_levels, in_modes

#: A row whose time is within this factor of its launch floor is ``launch-bound``.
LAUNCH_BOUND_FACTOR = 2.0
#: A row reaching this fraction of its roofline time is labelled by its bound (compute/memory);
#: below it, ``under-utilised`` (parallelism, layout or kernel choice).
NEAR_ROOF = 0.5
LABELS = ("launch-bound", "memory-bound", "compute-bound", "under-utilised")


def is_cache_level(level: object, row: pd.Series) -> bool:
    """Whether ``level`` (a row's ``roof_mem_level`` or ``roof_level``) is one of its device's caches:
    its memory level, when that level has a capacity (``roof_mem_cache``)."""
    return isinstance(level, str) and level == row.get("roof_mem_level") and row.get("roof_mem_cache") is True


@dataclass(frozen=True, slots=True)
class Derived:
    name: str
    unit: str
    doc: str


#: The columns ``derive`` adds (docs/columns.md, "Derived columns").
DERIVED = (
    Derived("stability_label", "-", "the row's stability, or `no verdict` where none is stored "
            "(harness.analysis.verdicts: the label every verdict and table shows)"),
    Derived("achieved_flops_s", "FLOP/s", "flops / time_median_s"),
    Derived("achieved_bytes_s", "B/s", "(bytes_read + bytes_written) / time_median_s"),
    Derived("util_peak", "fraction", "achieved_flops_s / peak_flops_s (the datasheet or formula peak)"),
    Derived("util_ceiling", "fraction", "achieved_flops_s / ceiling_flops_s (the measured GEMM ceiling)"),
    Derived("bw_util_peak", "fraction", "achieved_bytes_s / peak_bytes_s"),
    Derived("bw_util_ceiling", "fraction", "achieved_bytes_s / ceiling_bytes_s (the measured copy bandwidth)"),
    Derived("above_peak", "-", "achieved_flops_s above peak_flops_s: a defect of the peak (its clock or FLOP per "
            "cycle), said in the summary, never a utilization to believe"),
    Derived("above_ceiling", "-", "achieved_flops_s above ceiling_flops_s: the layer ran a kernel faster than every "
            "one the calibration measured for its dtype (calibrate again; docs/devices.md, Measured ceilings)"),
    Derived("roof_source", "-", "`measured` (both roofs measured), `datasheet` or `formula` (both theoretical), "
            "`mixed`, or null (no roof stored)"),
    Derived("attainable_flops_s", "FLOP/s", "min(compute roof, intensity x memory roof)"),
    Derived("roofline_bound", "-", "`compute` or `memory`: which side of the ridge the row's intensity falls"),
    Derived("roofline_time_s", "s", "max(flops / compute roof, bytes / memory roof)"),
    Derived("roofline_fraction", "fraction", "roofline_time_s / time_median_s (above 1: the row beats the "
            "memory roof, its data sat in cache)"),
    Derived("launch_floor_s", "s", "kernel_launches (CPU: ATen ops) x launch_overhead_s, for rows timed hot; "
            "null for graph replays (one launch per replay) and cold calls (queued behind the flush)"),
    Derived("label", "-", "`launch-bound` (time <= 2 x launch floor), `memory-bound` or `compute-bound` (>= 50 % "
            "of the roofline: the compute roof or the roof of the memory level the working set fits, "
            "roof_level_bytes_s; the flat roofline where no level is known), else `under-utilised`"),
    Derived("roof_mem_level", "-", "`L1`, `L2`, `L3`, `DRAM` (CPU) or `L2`, `HBM` (GPU): the innermost measured "
            "level of ceiling_levels whose capacity holds the working set (bytes_read + bytes_written); main "
            "memory when none does, no levels are stored or the row was timed cold (cache flushed each call)"),
    Derived("roof_mem_cache", "-", "whether roof_mem_level is one of the device's caches (a level with a "
            "capacity), not its main memory"),
    Derived("roof_level_bytes_s", "B/s", "the bandwidth the working set is served at: the levels inside "
            "roof_mem_level serve their share first, each up to its capacity, roof_mem_level the rest (working set / "
            "the seconds they take; roof_mem_level's own bandwidth where the set is empty or fits the innermost "
            "level; main memory without levels: ceiling_bytes_s, else peak_bytes_s)"),
    Derived("bw_util_level", "fraction", "achieved_bytes_s / roof_level_bytes_s: the share of its memory roof the "
            "row's bytes reached (above 1: it reads more than it writes, which the main-memory copy's convention, "
            "write-allocate traffic not counted, undercounts)"),
    Derived("roof_bound", "-", "`compute` or `memory`: the side of the ridge the label judges the row on (the "
            "hierarchical roofline's: compute time against the bytes' time at the level they fit; roofline_bound "
            "where no level is known)"),
    Derived("util_roof", "fraction", "the utilization of the roof on the row's side of the ridge (roof_bound): "
            "util_ceiling (else util_peak) for compute, bw_util_level (else bw_util_peak) for memory; what compare "
            "shows as util"),
    Derived("roof_level", "-", "`compute`, `L1`, `L2`, `L3`, `DRAM`/`HBM` or `launch`: which bound is largest, "
            "flops / compute roof, working set / roof_level_bytes_s, or launch_floor_s"),
    Derived("roof_level_time_s", "s", "the largest of those three bounds: the hierarchical roofline time"),
    Derived("roof_level_fraction", "fraction", "roof_level_time_s / time_median_s (above 1: faster than the "
            "level's roof)"),
    Derived("bwd_fwd_time_ratio", "ratio", "backward and forward+backward rows: time_median_s over the median time "
            "of the forward rows of the same layer (config_id) in the same run, machine, device, dtype, threads and "
            "timing mode; null without such a forward row"),
    Derived("bwd_fwd_flops_ratio", "ratio", "the same rows: flops over that forward's flops (2.0 for a conv's "
            "grad-input + grad-weight without bias; 1.0 for one of them)"),
)


def _num(f: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(f[col], errors="coerce") if col in f else pd.Series(np.nan, index=f.index)


def derive(frame: pd.DataFrame) -> pd.DataFrame:
    """The result table with the ``DERIVED`` columns added (rows not ``ok`` get NaN/None)."""
    f = frame.drop(columns=[LABEL], errors="ignore")
    f[LABEL] = labels(f)
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
    f["above_peak"] = (f["util_peak"] > 1).where(f["util_peak"].notna())
    f["above_ceiling"] = (f["util_ceiling"] > 1).where(f["util_ceiling"].notna())
    roof_f, roof_b = ceil_f.where(ceil_f.notna(), peak_f), ceil_b.where(ceil_b.notna(), peak_b)
    f["roof_source"] = _roof_source(f, ceil_f, ceil_b, roof_f, roof_b)
    intensity = flops / moved.replace(0, np.nan)
    f["attainable_flops_s"] = np.minimum(roof_f, intensity * roof_b)
    f["roofline_bound"] = np.where(roof_f.isna() | roof_b.isna(), None,
                                   np.where(intensity * roof_b >= roof_f, "compute", "memory"))
    f["roofline_time_s"] = np.maximum(flops / roof_f, moved / roof_b)
    f["roofline_fraction"] = f["roofline_time_s"] / t
    launches = _num(f, R.KERNEL_LAUNCHES).fillna(_num(f, R.ATEN_OPS)).fillna(1).clip(lower=1)
    f["launch_floor_s"] = (launches * _num(f, R.LAUNCH_OVERHEAD)).where(in_modes(f, DISPATCH_MODES))
    fraction, side = _roof_levels(f, flops / roof_f, moved, roof_b, t, ok)
    # the label is judged by the hierarchical roofline where the row has one (a working set that fits
    # a cache against that cache's roof, not main memory's, which it outruns); else by the flat one
    f["roof_bound"] = side.where(side.notna(), f["roofline_bound"]).where(ok, None)
    f["label"] = _labels(t, f["launch_floor_s"], fraction.where(fraction.notna(), f["roofline_fraction"]),
                         f["roof_bound"], ok)
    f["util_roof"] = roof_util(f)
    f["bwd_fwd_time_ratio"], f["bwd_fwd_flops_ratio"] = pass_ratios(f, t, flops)
    return predicted_columns(f)          # predicted_roofline_s, predicted_s, residual (harness.predict.columns)


def roof_util(f: pd.DataFrame) -> pd.Series:
    """``util_roof`` (``DERIVED``): FLOP/s against the compute roof, or bytes/s against the memory roof
    of the level the working set fits, by the side of the ridge the row's intensity falls on."""
    compute = f["util_ceiling"].where(f["util_ceiling"].notna(), f["util_peak"])
    memory = f["bw_util_level"].where(f["bw_util_level"].notna(), f["bw_util_peak"])
    return memory.where(f["roof_bound"].eq("memory"), compute)


#: A backward row's forward is the forward row of the same layer measured side by side: never across these.
RATIO_KEYS = (R.RUN_ID, R.MACHINE_ID, R.DEVICE, R.CONFIG_ID, R.DTYPE, R.THREADS, MODE)
FORWARD = R.PASSES[0]


def pass_ratios(f: pd.DataFrame, t: pd.Series, flops: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Per measured row of a pass with a backward: its time and FLOPs over those of the forward rows
    of its layer (``RATIO_KEYS``; the median where several families hold the layer); NaN elsewhere."""
    nan = pd.Series(np.nan, index=f.index)
    if R.PASS not in f or R.CONFIG_ID not in f:
        return nan, nan
    keys = [k for k in RATIO_KEYS if k in f]
    passes = f[R.PASS].fillna(FORWARD)
    ident = f[keys].astype(object).where(f[keys].notna(), "")          # null keys (no mode stored) match
    fwd = ident[(passes == FORWARD) & t.notna()].assign(_t=t, _f=flops)
    if fwd.empty:
        return nan, nan
    ref = fwd.groupby(keys, sort=False)[["_t", "_f"]].median()
    joined = ident.join(ref, on=keys)
    other = (passes != FORWARD) & t.notna()
    return (t / joined["_t"]).where(other), (flops / joined["_f"]).where(other)


def _roof_levels(f: pd.DataFrame, t_compute: pd.Series, moved: pd.Series, main_b: pd.Series, t: pd.Series,
                 ok: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Add the hierarchical-roofline columns (``roof_mem_level`` ... ``roof_level_fraction``) in place;
    return (fraction, side) of the hierarchical roofline without the launch floor (the label's own
    test): the longer of the compute time and the bytes' time at their level over the measured time,
    and ``compute`` or ``memory``, where both times are known (NaN/None elsewhere)."""
    stored = f[R.MAIN_MEMORY] if R.MAIN_MEMORY in f else pd.Series(None, index=f.index, dtype=object)
    name = stored.astype(object).where(stored.notna(), MAIN_MEMORY).where(main_b.notna(), None)
    bw = main_b.copy()
    cache = pd.Series(False, index=f.index, dtype=bool)
    texts = f[R.CEILING_LEVELS].where(in_modes(f, CACHED_MODES)) if R.CEILING_LEVELS in f \
        else pd.Series(None, index=f.index, dtype=object)
    for at, (lv_name, secs, own, lv_cache) in by_levels(texts, moved):
        name.iloc[at], cache.iloc[at] = lv_name, lv_cache
        bw.iloc[at] = np.where(secs > 0, moved.to_numpy()[at] / np.where(secs > 0, secs, 1.0), own)
    t_mem = moved / bw
    floor = f["launch_floor_s"]
    longest = np.fmax(t_compute, t_mem)
    side = pd.Series(np.where(t_compute.fillna(-1) >= t_mem.fillna(-1), "compute", "memory"), index=f.index,
                     dtype=object)
    bound = np.fmax(longest, floor)
    level = np.where(floor >= longest.fillna(0), "launch", np.where(side == "compute", "compute", name))
    known = ok & (t_compute.notna() | t_mem.notna())
    f["roof_mem_level"] = name.where(ok, None)
    f["roof_mem_cache"] = cache.astype(object).where(ok & name.notna(), None)
    f["roof_level_bytes_s"] = bw.where(ok)
    f["bw_util_level"] = (moved / t / bw).where(ok)
    f["roof_level"] = pd.Series(level, index=f.index, dtype=object).where(known, None)
    f["roof_level_time_s"] = bound.where(known)
    f["roof_level_fraction"] = f["roof_level_time_s"] / t
    both = ok & t_compute.notna() & t_mem.notna()
    return (longest / t).where(both), side.where(both)


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
