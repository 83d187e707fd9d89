"""Equal-FLOPs findings: layers doing the same arithmetic at different speeds, and why.

Judged rows (``harness.analysis.verdicts``: ok, and stable or with no recorded verdict) are grouped
per run, machine, device, dtype, thread count and timing mode by FLOPs equal within
a relative tolerance; a group's spread is its slowest median time over its fastest. The explanation compares
the slowest and fastest rows on what the table records: memory traffic and intensity, layout,
channel groups, output size (parallelism), the implementation that ran, and the row labels.

Set-aside rows (not stable) carry no finding by their medians. They may carry one **paired by
process**: measured in N >= 2 worker processes, rows of one run whose time moved between processes
(a process slowed by the host slows every case it measures) are compared process by process, and a
pair is a finding when the slow row took at least ``min_spread`` x the fast one's time *in every
process*; its spread is the smallest of those ratios (``paired_findings``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import record as R
from harness.analysis.verdicts import is_set_aside, judged, labels, measured
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
    return _groups(judged(frame), [c for c in PARTITION if c in frame], tol, min_size)


def _groups(rows: pd.DataFrame, part: list[str], tol: float, min_size: int) -> pd.DataFrame:
    """``rows`` (with FLOPs and a time) with ``group``, ``group_spread`` and ``speed_rank``: groups of
    equal FLOPs within ``tol`` inside each ``part`` partition, of at least ``min_size`` rows."""
    ok = rows[(rows["flops"] > 0) & (rows["time_median_s"] > 0)].copy()
    if ok.empty:
        return ok.assign(group=pd.Series(dtype=int), group_spread=pd.Series(dtype=float),
                         speed_rank=pd.Series(dtype=int))
    ok = ok.sort_values(part + ["flops"], kind="stable")        # never across runs or machines
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
    #: ``medians`` (judged rows, slowest over fastest median) or ``each process`` (``paired_findings``).
    basis: str = "medians"


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
    """The ``top`` findings: those of judged rows by their medians (``median_findings``), then
    those of set-aside rows paired by process (``paired_findings``), each by spread."""
    found = median_findings(frame, top, tol, min_spread, grouped)
    return found + paired_findings(frame, top - len(found), tol, min_spread) if len(found) < top else found


def median_findings(frame: pd.DataFrame, top: int = 10, tol: float = EQUAL_FLOPS_TOL, min_spread: float = 1.1,
                    grouped: pd.DataFrame | None = None) -> list[Finding]:
    """The ``top`` equal-FLOPs groups of judged rows by spread (at least ``min_spread``), each as a
    sentence. ``grouped``: ``equal_flops_groups(frame, tol)`` when the caller already has it."""
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


#: Fewest processes a paired finding compares (one process is no evidence across processes).
MIN_PAIRED_PROCESSES = 2


def paired_findings(frame: pd.DataFrame, top: int = 10, tol: float = EQUAL_FLOPS_TOL,
                    min_spread: float = 1.1) -> list[Finding]:
    """Findings of set-aside rows, paired by process: within each equal-FLOPs group of a run's
    measured rows that every one of its N >= 2 processes measured, the pair (at least one row set
    aside) whose smallest per-process ratio ``slow_k / fast_k`` is largest; a finding when that
    ratio is at least ``min_spread``. Its ``spread`` is that smallest ratio."""
    rows = _paired_rows(frame)
    if rows.empty or top <= 0:
        return []
    grouped = _groups(rows, [c for c in [*PARTITION, R.PROCESSES] if c in rows], tol, 2)
    best = [p for _, g in grouped.groupby("group", sort=False) if (p := _best_pair(g, min_spread))]
    out: list[Finding] = []
    seen: set[tuple[str, str]] = set()
    for lo, hi, slow, fast, pair in sorted(best, key=lambda p: -p[0]):
        if (slow["row_id"], fast["row_id"]) in seen or len(out) >= top:
            continue
        seen.add((slow["row_id"], fast["row_id"]))
        out.append(_paired_finding(lo, hi, slow, fast, pair))
    return out


def _paired_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Measured rows that every process of their run measured (``processes`` = the run's most, at
    least ``MIN_PAIRED_PROCESSES``), with ``set_aside`` and ``label_stability`` columns."""
    if R.PROCESS_MEDIANS not in frame or R.PROCESSES not in frame:
        return frame.iloc[:0]
    ok = frame[measured(frame)].copy()
    n = pd.to_numeric(ok[R.PROCESSES], errors="coerce")
    most = n.groupby(ok[R.RUN_ID]).transform("max") if R.RUN_ID in ok else n.max()
    lengths = ok[R.PROCESS_MEDIANS].map(lambda v: len(v) if v is not None and not isinstance(v, float) else 0)
    ok = ok[(n >= MIN_PAIRED_PROCESSES) & n.eq(most) & lengths.eq(n)]
    return ok.assign(set_aside=is_set_aside(ok), label_stability=labels(ok))


def _best_pair(g: pd.DataFrame, min_spread: float) -> tuple | None:
    """``(lo, hi, slow, fast, the two rows fast first)`` of the group's pair with the largest smallest per-process
    ratio, when it is at least ``min_spread`` and one of the two rows is set aside; else None."""
    p = np.array([np.asarray(v, dtype=float) for v in g[R.PROCESS_MEDIANS]])      # rows x processes
    ratio = p[:, None, :] / p[None, :, :]                                         # [slow, fast, k]
    lo = ratio.min(axis=2)
    aside = g["set_aside"].to_numpy()
    lo[~(aside[:, None] | aside[None, :])] = 0.0     # two judged rows: median_findings' business
    np.fill_diagonal(lo, 0.0)
    i, j = np.unravel_index(int(np.argmax(lo)), lo.shape)
    if not lo[i, j] >= min_spread:
        return None
    return float(lo[i, j]), float(ratio[i, j].max()), g.iloc[i], g.iloc[j], g.iloc[[j, i]]


def _paired_finding(lo: float, hi: float, slow: pd.Series, fast: pd.Series, pair: pd.DataFrame) -> Finding:
    """One paired finding as a sentence: the ratio range over processes, why the rows were set aside."""
    k = len(slow[R.PROCESS_MEDIANS])
    aside = "/".join(sorted({str(r["label_stability"]) for r in (slow, fast) if r["set_aside"]}))
    span = f"{lo:.1f}x" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f}x"
    text = (f"{device_label(slow)} {slow[R.DTYPE]}, {si(float(fast[R.FLOPS]))}FLOPs: {describe_row(slow)} takes "
            f"{span} as long as {describe_row(fast)} in each of {k} processes ({_time(slow['time_median_s'])} vs "
            f"{_time(fast['time_median_s'])}; the times are {aside}, not stable, but the ratio held in every "
            "process): " + "; ".join(reasons(slow, fast)) + ".")
    cols = [c for c in [*EXPLAIN_COLUMNS, R.PROCESS_MEDIANS] if c in pair]
    return Finding(group=int(slow["group"]), spread=lo, text=text, rows=pair[cols], basis="each process")


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
