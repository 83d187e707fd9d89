"""Equal-FLOPs findings: layers doing the same arithmetic at different speeds, and why.

Judged rows (``harness.analysis.verdicts``: ok, and stable or with no recorded verdict) are grouped
per run, machine, device, dtype, thread count and timing mode by FLOPs equal within
a relative tolerance; a group's spread is its slowest median time over its fastest. The explanation compares
the slowest and fastest rows on what the table records: memory traffic and intensity, layout,
channel groups, output size (parallelism), the implementation that ran, and the row labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import record as R
from harness.analysis.verdicts import judged
from harness.units import seconds, si

#: FLOPs within this relative distance of a group's smallest count belong to the group.
EQUAL_FLOPS_TOL = 0.02
#: Columns shown beside each member of a group (those present in the table).
EXPLAIN_COLUMNS = [R.FAMILY, R.LAYER, R.CONFIG, R.INPUT_SHAPES, R.MEMORY_FORMAT, R.FLOPS, R.TIME_MEDIAN,
                   "achieved_flops_s", R.INTENSITY, R.BYTES_READ, R.BYTES_WRITTEN, R.KERNELS, R.KERNEL_LAUNCHES,
                   "label", "util_ceiling", "util_peak", R.REL_IQR]
#: The timing-mode column (``hot``, ``cold``, ``graph``): times of different modes never compare.
MODE = "mode"
#: Never grouped across these: a finding compares layers measured side by side.
PARTITION = (R.RUN_ID, R.MACHINE_ID, R.DEVICE, R.DEVICE_NAME, R.DTYPE, R.THREADS, MODE)
#: A thread finding compares thread counts of one layer within these (one run, one timing mode).
THREAD_KEYS = (R.RUN_ID, R.MACHINE_ID, R.DEVICE, R.CONFIG_ID, R.DTYPE, MODE)


def equal_flops_groups(frame: pd.DataFrame, tol: float = EQUAL_FLOPS_TOL, min_size: int = 2) -> pd.DataFrame:
    """The table's judged rows (``verdicts.judged``) with a ``group`` column (groups of at least
    ``min_size``), and per row ``group_spread`` (the group's slowest / fastest median time) and
    ``speed_rank`` (1 = fastest)."""
    ok = judged(frame)
    ok = ok[(ok["flops"] > 0) & (ok["time_median_s"] > 0)].copy()
    if ok.empty:
        return ok.assign(group=pd.Series(dtype=int), group_spread=pd.Series(dtype=float),
                         speed_rank=pd.Series(dtype=int))
    part = [c for c in PARTITION if c in ok]  # never across runs or machines
    ok = ok.sort_values(part + ["flops"], kind="stable")
    keys = ok.groupby(part, sort=False, dropna=False).ngroup().to_numpy()
    flops = ok["flops"].to_numpy(dtype=float)
    gid = np.empty(len(ok), dtype=np.int64)
    g, start, prev_key = -1, 0.0, None
    for i in range(len(ok)):
        if keys[i] != prev_key or flops[i] > start * (1 + tol):
            g += 1
            start, prev_key = flops[i], keys[i]
        gid[i] = g
    ok["group"] = gid
    size = ok.groupby("group")["group"].transform("size")
    ok = ok[size >= min_size].copy()
    t = ok.groupby("group")["time_median_s"]
    ok["group_spread"] = t.transform("max") / t.transform("min")
    ok["speed_rank"] = t.rank(method="first").astype(int)
    return ok


@dataclass(frozen=True, slots=True)
class Finding:
    """One equal-FLOPs group, told in a sentence, with the rows behind it."""

    group: int
    spread: float
    text: str
    rows: pd.DataFrame


#: Short names for canonical parameters in sentences (``in_channels`` -> ``in``).
SHORT = {"in_channels": "in", "out_channels": "out", "kernel_size": "k", "stride": "s", "padding": "p",
         "dilation": "d", "groups": "g", "output_padding": "op", "in_features": "in", "out_features": "out",
         "channels": "c", "head_dim": "d", "embed_dim": "embed"}
#: Defaults left out of sentences.
_DEFAULTS = {"stride": [1], "dilation": [1], "groups": 1, "bias": True, "output_padding": [0], "padding": [0],
             "affine": True, "train": False, "batch": 1, "causal": False}


def config(row: pd.Series) -> dict:
    """The row's canonical layer parameters (``{}`` when unreadable)."""
    try:
        c = json.loads(row[R.CONFIG]) if isinstance(row.get(R.CONFIG), str) else {}
    except ValueError:
        c = {}
    return c if isinstance(c, dict) else {}


def _short_value(v: object) -> object:
    if isinstance(v, list) and v and all(x == v[0] for x in v):
        return v[0]
    return "x".join(map(str, v)) if isinstance(v, list) else v


def describe_row(row: pd.Series) -> str:
    """``conv2d in=512 out=512 k=3 p=1 g=64 on 1x512x28x28 (channels_last)``: non-default parameters."""
    parts = []
    order = list(SHORT)
    for k, v in sorted(config(row).items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 99, kv[0])):
        if v is None or (k in _DEFAULTS and _short_value(v) in (_short_value(_DEFAULTS[k]), _DEFAULTS[k])):
            continue
        parts.append(f"{SHORT.get(k, k)}={_short_value(v)}")
    fmt = f" ({row[R.MEMORY_FORMAT]})" if row.get(R.MEMORY_FORMAT) == "channels_last" else ""
    shapes = row.get(R.INPUT_SHAPES)
    on = f" on {shapes}" if isinstance(shapes, str) and shapes else ""     # a pytest-benchmark test has none
    return f"{row[R.LAYER]} {' '.join(parts)}{on}{fmt}".replace("  ", " ").strip()


def device_label(row: pd.Series) -> str:
    """The GPU's name, or for a CPU the machine's label (a CPU brand string alone is ambiguous)."""
    if str(row.get(R.DEVICE, "cpu")).startswith("cpu") and isinstance(row.get(R.MACHINE_NAME), str):
        return str(row[R.MACHINE_NAME])
    return str(row.get(R.DEVICE_NAME))


def _time(s: float) -> str:
    return seconds(s)


def _param(row: pd.Series, key: str) -> object:
    return config(row).get(key)


def reasons(slow: pd.Series, fast: pd.Series) -> list[str]:
    """Why ``slow`` takes longer than ``fast`` for the same FLOPs, from the recorded columns."""
    out = []
    if slow.get("label") == "launch-bound":
        out.append("it is launch-bound: dispatch overhead, not arithmetic, sets its time")
    moved_s = slow["bytes_read"] + slow["bytes_written"]
    moved_f = fast["bytes_read"] + fast["bytes_written"]
    if moved_s > 1.5 * moved_f:
        out.append(f"it moves {moved_s / moved_f:.1f}x the bytes (intensity {slow[R.INTENSITY]:.1f} vs "
                   f"{fast[R.INTENSITY]:.1f} FLOP/B)")
    g_s, g_f = _param(slow, "groups") or 1, _param(fast, "groups") or 1
    if g_s != g_f:
        c_s, c_f = _param(slow, "in_channels"), _param(fast, "in_channels")
        per = (f"each output sums over {c_s // g_s} input channels instead of {c_f // g_f}: "
               if isinstance(c_s, int) and isinstance(c_f, int) else "")
        out.append(f"it has {g_s} channel groups against {g_f}; {per}less reuse per byte loaded, and a "
                   "grouped/depthwise kernel")
    if slow.get("memory_format") != fast.get("memory_format"):
        out.append(f"its layout is {slow.get('memory_format')} against {fast.get('memory_format')}")
    out_s, out_f = slow[R.BYTES_WRITTEN], fast[R.BYTES_WRITTEN]     # same dtype within a group
    if out_s > 0 and out_f > 2 * out_s:
        out.append(f"it has {out_f / out_s:.1f}x fewer output elements to spread over the cores (less parallelism)")
    k_s, k_f = str(slow.get("kernels") or ""), str(fast.get("kernels") or "")
    if k_s and k_f and k_s.split(";")[0] != k_f.split(";")[0]:
        out.append(f"a different implementation ran ({k_s.split(';')[0]} vs {k_f.split(';')[0]})")
    r_s, r_f = (pd.to_numeric(pd.Series([r.get(R.ONEDNN_REORDERS)]), errors="coerce")[0] for r in (slow, fast))
    if r_s > 0 and not r_s == r_f:      # NaN (not traced) compares False; equal counts explain nothing
        versus = f" (the fast one: {int(r_f)})" if pd.notna(r_f) else ""
        out.append(f"oneDNN runs {int(r_s)} reorders (layout conversions to and from its blocked format) per "
                   f"call around it{versus}")
    if not out:
        out.append("same traffic, layout and implementation: the kernel is simply less efficient on this shape")
    return out


def findings(frame: pd.DataFrame, top: int = 10, tol: float = EQUAL_FLOPS_TOL, min_spread: float = 1.1,
             grouped: pd.DataFrame | None = None) -> list[Finding]:
    """The ``top`` equal-FLOPs groups by spread (at least ``min_spread``), each as a sentence.
    ``grouped``: ``equal_flops_groups(frame, tol)`` when the caller already has it."""
    if grouped is None:
        grouped = equal_flops_groups(frame, tol)
    if grouped.empty:
        return []
    spreads = grouped.groupby("group")["group_spread"].first().sort_values(ascending=False)
    spreads = spreads[spreads >= min_spread]
    # the same pair of cases in several runs is one finding ("seen in N runs"), told at its largest spread
    pairs: dict[tuple, list[int]] = {}
    for g in spreads.index:
        rows = grouped[grouped["group"] == g]
        fast, slow = rows.loc[rows["time_median_s"].idxmin()], rows.loc[rows["time_median_s"].idxmax()]
        pairs.setdefault((fast["row_id"], slow["row_id"]), []).append(g)
    out = []
    for groups_of_pair in pairs.values():
        if len(out) >= top:
            break
        g = groups_of_pair[0]
        spread = spreads[g]
        rows = grouped[grouped["group"] == g].sort_values("time_median_s")
        fast, slow = rows.iloc[0], rows.iloc[-1]
        text = (f"{device_label(slow)} {slow[R.DTYPE]}, {si(float(fast[R.FLOPS]))}FLOPs: {describe_row(slow)} takes "
                f"{spread:.1f}x as long as {describe_row(fast)} ({_time(slow['time_median_s'])} vs "
                f"{_time(fast['time_median_s'])}): " + "; ".join(reasons(slow, fast)) + "."
                + (f" Seen in {len(groups_of_pair)} runs." if len(groups_of_pair) > 1 else ""))
        cols = [c for c in EXPLAIN_COLUMNS if c in rows]
        out.append(Finding(group=int(g), spread=float(spread), text=text, rows=rows[cols]))
    return out


#: More threads must be this much slower than fewer for a thread finding.
THREAD_SLOWDOWN = 1.10


def thread_findings(frame: pd.DataFrame, slowdown: float = THREAD_SLOWDOWN) -> list[Finding]:
    """Layers that run slower with more threads than with fewer (a ``threads`` axis): per run,
    machine, device, layer (config_id), dtype and timing mode (``THREAD_KEYS``: never across runs
    or modes), the thread count with the fastest median against the largest thread count, when
    the largest is at least ``slowdown`` x slower. Judged rows only."""
    ok = judged(frame)
    keys = [k for k in THREAD_KEYS if k in ok]
    if ok.empty or R.THREADS not in ok:
        return []
    out = [f for _, rows in ok.groupby(keys, sort=True, dropna=False) if (f := _thread_finding(rows, slowdown))]
    return sorted(out, key=lambda f: -f.spread)


def _thread_finding(rows: pd.DataFrame, slowdown: float) -> Finding | None:
    """The thread finding of one layer's rows of one run and mode, or ``None``."""
    per = rows.groupby(R.THREADS)[R.TIME_MEDIAN].median()
    if len(per) < 2:
        return None
    most, best = per.index.max(), per.idxmin()
    ratio = per[most] / per[best]
    if most == best or ratio < slowdown:
        return None
    row = rows.iloc[0]
    text = (f"{device_label(row)} {row[R.DTYPE]}: {describe_row(row)} takes {ratio:.2f}x as long with "
            f"{int(most)} threads as with {int(best)} ({seconds(per[most])} vs {seconds(per[best])}): "
            "the work is too small to split, or the threads wait on each other (synchronisation, "
            "memory bandwidth, OpenMP wake-up).")
    cols = [c for c in [*EXPLAIN_COLUMNS, R.THREADS] if c in rows]
    return Finding(group=-1, spread=float(ratio), text=text, rows=rows[cols])
