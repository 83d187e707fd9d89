"""The analytic prediction: a row's hierarchical roofline time from its counts and the ceilings it
stores (ERT, Lo et al. 2014; the cache-aware roofline of Ilic, Pratas and Sousa 2014).

Three lower bounds on a call's time, each from stored columns:

- compute: ``flops / ceiling_flops_s`` (the measured GEMM ceiling of the row's peak dtype; the
  theoretical ``peak_flops_s`` where none was measured);
- memory: the working set ``bytes_read + bytes_written`` served by the levels in ``ceiling_levels``
  (``memory_roof``): the innermost level whose capacity holds it names it, and the levels inside that
  one serve their share first, each up to its capacity, at their bandwidth (main memory,
  ``ceiling_bytes_s`` else ``peak_bytes_s``, when no levels are stored);
- launch: launches per call (``kernel_launches`` as profiled, else the ATen ops the count
  dispatched, at least 1) x ``launch_overhead_s``, the dispatch floor measured at calibration (the
  backend's constant in rows measured before that).

Both depend on how the row was timed (its ``mode``), as the analysis' roof level does: only
back-to-back launches (``hot``, or no mode stored) pay host dispatch per call, so only they have a
launch bound (a graph replay launches once for all its calls); a cold row's cache is flushed before
every call, so its working set is judged against main memory whatever its size.

``predicted_roofline_s`` is the largest of the three and ``predicted_bound`` names it (``compute``,
``L1``, ``L2``, ``L3``, ``DRAM``/``HBM`` or ``launch``). The same rule as the analysis' roof level,
computed here from the columns alone so that rows never measured (``harness.predict.cases``) get
the same number a run of them would.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator

import numpy as np
import pandas as pd

from harness import record as R

#: The level name of main memory where a row does not name it (a pytest-benchmark file).
MAIN_MEMORY = "main memory"
#: Bound names besides the memory levels.
COMPUTE, LAUNCH = "compute", "launch"
#: The row's timing mode column; the modes that pay host dispatch per call (rows without a mode, as
#: pytest-benchmark files, do too) and those whose data can stay in a cache between calls.
MODE = "mode"
DISPATCH_MODES, CACHED_MODES = ("hot",), ("hot", "graph")


def in_modes(frame: pd.DataFrame, modes: tuple[str, ...]) -> pd.Series:
    """Rows timed in one of ``modes``, or with no mode stored."""
    mode = frame[MODE] if MODE in frame else pd.Series(None, index=frame.index, dtype=object)
    return mode.isna() | mode.isin(modes)


@functools.lru_cache(maxsize=256)
def levels_of(text: str) -> tuple[tuple[str, float | None, float], ...]:
    """``ceiling_levels`` JSON as (level, capacity bytes or None for main memory, bytes/s), innermost
    first; levels without a bandwidth are left out; ``()`` when the text is not that list."""
    try:
        out = []
        for d in json.loads(text):
            bw = d.get("bytes_s")
            cap = d.get("capacity_bytes")
            if bw is None or not np.isfinite(float(bw)) or float(bw) <= 0:
                continue
            out.append((str(d["level"]), None if cap is None else float(cap), float(bw)))
        return tuple(out)
    except (ValueError, TypeError, KeyError, AttributeError):
        return ()


def memory_roof(moved: pd.Series, levels: tuple[tuple[str, float | None, float], ...]
                ) -> tuple[pd.Series, pd.Series, pd.Series, pd.Series]:
    """Per working set in ``moved`` (bytes): the level that holds it (the innermost whose capacity is at
    least the set; main memory, capacity ``None``, holds any), the seconds the levels take to serve it,
    that level's own bandwidth (bytes/s) and whether it is a cache. The levels inside the holding one
    serve first, each up to its capacity less what the ones inside it hold (inclusive caches), the
    holding level the rest:
    ``t = sum_i (C_i - C_(i-1)) / B_i + (W - C_(k-1)) / B_k``. A set that just overflows a cache is
    thus not judged as if none of it stayed there: its roof lies between the two levels' bandwidths
    (a 25 MiB set beside a 24 MiB L3 reads most of it at the L3's speed). ``levels``: ``levels_of``,
    innermost first; NaN/None where ``moved`` is NaN or no level holds the set."""
    name = pd.Series(None, index=moved.index, dtype=object)
    secs = pd.Series(np.nan, index=moved.index)
    own = pd.Series(np.nan, index=moved.index)
    cache = pd.Series(False, index=moved.index, dtype=bool)
    inner_s, inner_cap = 0.0, 0.0            # seconds to serve the levels inside, and what they hold
    for lv, cap, bw in levels:
        holds = moved.notna() & name.isna() & (True if cap is None else moved <= cap)
        name[holds], own[holds], cache[holds] = lv, bw, cap is not None
        secs[holds] = inner_s + (moved[holds] - inner_cap).clip(lower=0) / bw
        if cap is None:
            break
        if cap > inner_cap:
            inner_s, inner_cap = inner_s + (cap - inner_cap) / bw, cap
    return name, secs, own, cache


def by_levels(texts: pd.Series, moved: pd.Series) -> Iterator[tuple[np.ndarray, tuple[np.ndarray, ...]]]:
    """For each distinct ``ceiling_levels`` text in ``texts`` (None: no levels): the positions of the
    rows whose set one of its levels holds, and ``memory_roof``'s (level, seconds, own bandwidth,
    cache) for them as arrays (by position: a frame's index may repeat)."""
    for text in texts.dropna().unique():
        sel = texts.eq(text).to_numpy()
        got = memory_roof(moved[sel].reset_index(drop=True), levels_of(str(text)))
        has = got[0].notna().to_numpy()
        yield np.flatnonzero(sel)[has], tuple(v.to_numpy()[has] for v in got)


def num(frame: pd.DataFrame, col: str) -> pd.Series:
    """``frame[col]`` as floats (NaN where absent or not a number)."""
    return pd.to_numeric(frame[col], errors="coerce").astype(float) if col in frame \
        else pd.Series(np.nan, index=frame.index)


def launches(frame: pd.DataFrame) -> pd.Series:
    """Launches (GPU kernels; CPU: dispatched ATen ops) per call: profiled, else counted, at least 1."""
    return num(frame, R.KERNEL_LAUNCHES).fillna(num(frame, R.ATEN_OPS)).fillna(1).clip(lower=1)


def roofline(frame: pd.DataFrame) -> pd.DataFrame:
    """Per row of ``frame`` (stored or hypothetical rows): ``roof_compute_s``, ``roof_memory_s``,
    ``roof_launch_s``, ``roof_memory_level``, ``predicted_roofline_s`` (the largest bound; NaN where
    no bound is known) and ``predicted_bound``."""
    flops = num(frame, R.FLOPS)
    moved = num(frame, R.BYTES_READ) + num(frame, R.BYTES_WRITTEN)
    roof_f = num(frame, R.CEILING_FLOPS)
    roof_f = roof_f.where(roof_f > 0, num(frame, R.PEAK_FLOPS)).where(lambda s: s > 0)
    main_b = num(frame, R.CEILING_BYTES)
    main_b = main_b.where(main_b > 0, num(frame, R.PEAK_BYTES)).where(lambda s: s > 0)
    stored = frame[R.MAIN_MEMORY] if R.MAIN_MEMORY in frame else pd.Series(None, index=frame.index, dtype=object)
    level = stored.astype(object).where(stored.notna(), MAIN_MEMORY).where(main_b.notna(), None)
    t_m = moved / main_b
    texts = frame[R.CEILING_LEVELS].where(in_modes(frame, CACHED_MODES)) if R.CEILING_LEVELS in frame \
        else pd.Series(None, index=frame.index, dtype=object)
    for at, (lv_name, lv_s, _, _) in by_levels(texts, moved):
        level.iloc[at], t_m.iloc[at] = lv_name, lv_s
    t_c = flops / roof_f
    t_l = (launches(frame) * num(frame, R.LAUNCH_OVERHEAD).where(lambda s: s > 0)).where(
        in_modes(frame, DISPATCH_MODES))
    # ties go to launch, then compute (the analysis' roof_level reads the same)
    parts = pd.concat([t_l.rename(LAUNCH), t_c.rename(COMPUTE), t_m.rename("memory")], axis=1)
    best = parts.max(axis=1, skipna=True)
    known = parts.notna().any(axis=1) & best.gt(0)
    which = parts.fillna(-1.0).idxmax(axis=1)
    bound = np.where(which == "memory", level, which)
    return pd.DataFrame({
        "roof_compute_s": t_c, "roof_memory_s": t_m, "roof_launch_s": t_l, "roof_memory_level": level,
        "predicted_roofline_s": best.where(known),
        "predicted_bound": pd.Series(bound, index=frame.index, dtype=object).where(known, None),
    }, index=frame.index)
