"""Equal-FLOPs findings: layers doing the same arithmetic at different speeds, and why.

Judged rows (``harness.analysis.verdicts``: ok, and stable or with no recorded verdict) are grouped
per run, machine, device, dtype, thread count and timing mode by FLOPs equal within a relative
tolerance, within one layer kind or one family (``KINDS``: equal FLOPs across kinds and families are
a coincidence, told apart and after every finding); a group's spread is its slowest median time
over its fastest. The explanation compares the slowest and fastest rows on what the table records
and names only what the slow row has and the fast one has not: memory traffic, output written,
unequal input/output widths (ShuffleNet V2's G1), channel groups, layout, output size
(parallelism), the implementation that ran, oneDNN reorders, and the row labels.

Set-aside rows (not stable) carry no finding by their medians. They may carry one **across
processes** (``cross_process_findings``): when each of two equal-FLOPs rows of a run was measured in
at least ``MIN_PROCESSES`` worker processes and every process of the slow one took at least
``min_spread`` x as long as every process of the fast one (``min(slow) / max(fast)``, no
assumption that the k-th process of one row is the k-th of the other), however much either time
moved between processes. Rows measured beside busy processes (``contended``) or whose process times
followed the host's canary (``host-slowed``) carry none: a host slowdown can move every process alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import record as R
from harness.analysis.verdicts import is_set_aside, judged, labels, measured
from harness.units import seconds, si

#: A set-aside row measured beside other busy processes carries no finding (not even across
#: processes): a host slowdown moves every process of it alike.
CONTENDED = R.Stability.CONTENDED.value
#: Verdicts that say the host, not the layer, set the times: no finding from them, even across processes.
HOST_MADE = (CONTENDED, R.Stability.HOST_SLOWED.value)

#: ``Finding.basis`` of a finding told by the medians of judged rows.
MEDIANS = "medians"
#: ``Finding.basis`` of a finding that holds whichever processes of its two rows are compared.
ACROSS = "across processes"
#: FLOPs within this relative distance of a group's smallest count belong to the group.
EQUAL_FLOPS_TOL = 0.02
#: Columns shown beside each member of a group (those present in the table).
EXPLAIN_COLUMNS = [R.FAMILY, R.LAYER, R.CONFIG, R.INPUT_SHAPES, R.MEMORY_FORMAT, R.FLOPS, R.TIME_MEDIAN,
                   "achieved_flops_s", R.INTENSITY, R.BYTES_READ, R.BYTES_WRITTEN, R.KERNELS, R.KERNEL_LAUNCHES,
                   "label", "util_ceiling", "util_peak", R.REL_IQR]
#: The timing-mode column (``hot``, ``cold``, ``graph``): times of different modes never compare.
MODE = "mode"
#: Never grouped across these: a finding compares layers measured side by side, in the same pass (a
#: backward with a backward; its gradients may differ: grad-input against grad-weight at equal FLOPs).
PARTITION = (R.RUN_ID, R.MACHINE_ID, R.DEVICE, R.DEVICE_NAME, R.DTYPE, R.THREADS, MODE, R.PASS)
#: A thread finding compares thread counts of one layer within these (one run, one timing mode, one pass).
THREAD_KEYS = (R.RUN_ID, R.MACHINE_ID, R.DEVICE, R.CONFIG_ID, R.DTYPE, MODE, R.PASS, R.GRADS)
#: The pass a sentence leaves unsaid.
FORWARD = R.PASSES[0]


#: ``Finding.kind``: what the two layers of a finding have in common besides their FLOPs. A pair of
#: one layer kind (conv2d vs conv2d) or of one declared family (a suite's equal-FLOPs family, which
#: may hold several kinds) is a finding; two kinds from different families that happen to have equal
#: FLOPs (attention vs a linear layer) are a coincidence, listed apart and never ahead of findings.
SAME_LAYER, SAME_FAMILY, COINCIDENCE = "same layer", "same family", "coincidence"
KINDS = (SAME_LAYER, SAME_FAMILY, COINCIDENCE)


def equal_flops_groups(frame: pd.DataFrame, tol: float = EQUAL_FLOPS_TOL, min_size: int = 2,
                       kind: str = SAME_LAYER) -> pd.DataFrame:
    """The table's judged rows (``verdicts.judged``) with a ``group`` column (groups of at least
    ``min_size`` rows of equal FLOPs within ``tol``, and of one layer kind, one family, or any:
    ``kind``), and per row ``group_spread`` (the group's slowest / fastest median time) and
    ``speed_rank`` (1 = fastest)."""
    return kind_groups(judged(frame), [c for c in PARTITION if c in frame], tol, min_size, kind)


def kind_groups(rows: pd.DataFrame, part: list[str], tol: float, min_size: int, kind: str) -> pd.DataFrame:
    """``_groups`` within one layer kind (``SAME_LAYER``), within one family and spanning several
    kinds (``SAME_FAMILY``), or spanning several kinds and families (``COINCIDENCE``)."""
    if kind == SAME_LAYER:
        return _groups(rows, part + [R.LAYER], tol, min_size)
    grouped = _groups(rows, part + ([R.FAMILY] if kind == SAME_FAMILY else []), tol, min_size)
    if grouped.empty:
        return grouped
    spans = grouped.groupby("group")[[R.LAYER, R.FAMILY]].nunique()
    keep = spans[R.LAYER] > 1 if kind == SAME_FAMILY else (spans[R.LAYER] > 1) & (spans[R.FAMILY] > 1)
    return grouped[grouped["group"].isin(spans.index[keep])]


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
    #: ``MEDIANS`` (judged rows: slowest over fastest median) or ``ACROSS`` (``cross_process_findings``:
    #: a bound over every process of both rows). ``group`` is -1 for the latter.
    basis: str = "medians"
    #: ``SAME_LAYER``, ``SAME_FAMILY`` or ``COINCIDENCE`` (``KINDS``).
    kind: str = SAME_LAYER


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


def pass_text(row: pd.Series) -> str:
    """``backward [input,weight]``: a row's pass and its gradients; ``""`` for the forward (or no pass stored)."""
    p = row.get(R.PASS)
    if not isinstance(p, str) or p == FORWARD:
        return ""
    grads = row.get(R.GRADS)
    return f"{p} [{grads}]" if isinstance(grads, str) and grads else p


def describe_row(row: pd.Series, with_pass: bool = True) -> str:
    """``conv2d in=512 out=512 k=3 p=1 g=64 on 1x512x28x28 (channels_last)``: non-default parameters (a
    pool's default stride is its kernel, as in torch: ``maxpool2d k=3 s=1`` names its stride);
    then the pass and its gradients when it is not the forward (``... backward [input,weight]``), unless
    ``with_pass`` is false (a table with a pass column)."""
    parts = []
    order = list(SHORT)
    cfg = config(row)
    defaults = _DEFAULTS | ({"stride": cfg.get("kernel_size")} if "pool" in str(row.get(R.LAYER)) else {})
    for k, v in sorted(cfg.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else 99, kv[0])):
        if v is None or (k in defaults and _short_value(v) in (_short_value(defaults[k]), defaults[k])):
            continue
        parts.append(f"{SHORT.get(k, k)}={_short_value(v)}")
    fmt = f" ({row[R.MEMORY_FORMAT]})" if row.get(R.MEMORY_FORMAT) == "channels_last" else ""
    shapes = row.get(R.INPUT_SHAPES)
    on = f" on {shapes}" if isinstance(shapes, str) and shapes else ""     # a pytest-benchmark test has none
    timed = f" {pass_text(row)}" if with_pass and pass_text(row) else ""
    return f"{row[R.LAYER]} {' '.join(parts)}{on}{fmt}{timed}".replace("  ", " ").strip()


def device_label(row: pd.Series) -> str:
    """The device as the row names it (``device_label``: a GPU's name, or for the host CPU the
    machine's label, which says more than a brand); its ``device_name`` where it names none."""
    label = row.get(R.DEVICE_LABEL)
    return str(label) if isinstance(label, str) and label else str(row.get(R.DEVICE_NAME))


def _time(s: float) -> str:
    return seconds(s)


def _param(row: pd.Series, key: str) -> object:
    return config(row).get(key)


#: Traffic or output of one row this many times the other's is a reason; within ``SAME_TRAFFIC`` both
#: ways, the two move "the same traffic". 1.2 makes ShuffleNet V2's G1 effect visible: unequal input and
#: output widths at equal FLOPs move 1.4x the bytes (52 -> 312 channels against 128 -> 128 on 56x56).
TRAFFIC_RATIO = 1.2
SAME_TRAFFIC = 1.1
#: Output elements this many times fewer on the slow side: less parallelism to spread over the cores.
PARALLELISM_RATIO = 2.0


def _moved(row: pd.Series) -> float:
    return float(row["bytes_read"] + row["bytes_written"])


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf") if a > 0 else 1.0


def reasons(slow: pd.Series, fast: pd.Series) -> list[str]:
    """Why ``slow`` takes longer than ``fast`` for the same FLOPs, from the recorded columns: each
    reason names a property the slow row has and the fast one has not (a property of the fast row,
    such as being grouped, is never given as the slow row's reason)."""
    out = []
    if slow.get("label") == "launch-bound":
        out.append("it is launch-bound: dispatch overhead, not arithmetic, sets its time")
    out += _grads_reason(slow, fast) + _traffic(slow, fast) + _widths(slow, fast) + _groups_reason(slow, fast)
    layouts = {slow.get("memory_format"), fast.get("memory_format")}
    if len(layouts) == 2 and layouts <= {"nchw", "channels_last"}:          # "contiguous": no image layout
        out.append(f"its layout is {slow.get('memory_format')} against {fast.get('memory_format')}")
    out_s, out_f = slow[R.BYTES_WRITTEN], fast[R.BYTES_WRITTEN]     # same dtype within a group
    if out_s > 0 and out_f >= PARALLELISM_RATIO * out_s:
        out.append(f"it has {out_f / out_s:.1f}x fewer output elements to spread over the cores (less parallelism)")
    out += _implementation(slow, fast)
    if not out:
        same = max(_ratio(_moved(slow), _moved(fast)), _ratio(_moved(fast), _moved(slow))) <= SAME_TRAFFIC
        out.append("same traffic, layout and implementation: the kernel is simply less efficient on this shape"
                   if same else f"it moves {_ratio(_moved(slow), _moved(fast)):.2f}x the bytes, layout and "
                   "implementation alike: the kernel is less efficient on this shape")
    return out


def _grads_reason(slow: pd.Series, fast: pd.Series) -> list[str]:
    """Two backward rows computing different gradients (grad-weight against grad-input at equal FLOPs)."""
    g_s, g_f = slow.get(R.GRADS), fast.get(R.GRADS)
    if not (isinstance(g_s, str) and isinstance(g_f, str)) or g_s == g_f:
        return []
    return [f"it computes the {g_s.replace(',', ' and ')} gradient{'s' if ',' in g_s else ''} against "
            f"{g_f.replace(',', ' and ')}"]


def _traffic(slow: pd.Series, fast: pd.Series) -> list[str]:
    """The slow row's extra traffic and output, when ``TRAFFIC_RATIO`` or more."""
    out = []
    moved = _ratio(_moved(slow), _moved(fast))
    if moved >= TRAFFIC_RATIO:
        out.append(f"it moves {moved:.1f}x the bytes ({si(_moved(slow))}B vs {si(_moved(fast))}B; intensity "
                   f"{slow[R.INTENSITY]:.1f} vs {fast[R.INTENSITY]:.1f} FLOP/B)")
    written = _ratio(float(slow[R.BYTES_WRITTEN]), float(fast[R.BYTES_WRITTEN]))
    if written >= TRAFFIC_RATIO:
        out.append(f"it writes {written:.1f}x the output")
    return out


def _widths(slow: pd.Series, fast: pd.Series) -> list[str]:
    """ShuffleNet V2's guideline G1 on the slow side: its input and output widths differ where the
    fast row's are (nearer) equal; at equal FLOPs, equal widths move the fewest bytes."""
    c_in, c_out = _param(slow, "in_channels"), _param(slow, "out_channels")
    f_in, f_out = _param(fast, "in_channels"), _param(fast, "out_channels")
    if not all(isinstance(c, int) and c > 0 for c in (c_in, c_out, f_in, f_out)):
        return []
    if max(c_in, c_out) / min(c_in, c_out) <= max(f_in, f_out) / min(f_in, f_out):
        return []
    return [f"its input and output widths differ ({c_in} -> {c_out} channels against {f_in} -> {f_out}): at equal "
            "FLOPs, equal widths move the fewest bytes (ShuffleNet V2's guideline G1)"]


def _groups_reason(slow: pd.Series, fast: pd.Series) -> list[str]:
    """The slow row's extra channel groups (a grouped or depthwise kernel), never the fast row's."""
    g_s, g_f = _param(slow, "groups") or 1, _param(fast, "groups") or 1
    if not (isinstance(g_s, int) and isinstance(g_f, int)) or g_s <= g_f:
        return []
    c_s, c_f = _param(slow, "in_channels"), _param(fast, "in_channels")
    per = (f"each output sums over {c_s // g_s} input channels instead of {c_f // g_f}: "
           if isinstance(c_s, int) and isinstance(c_f, int) else "")
    return [f"it has {g_s} channel groups against {g_f}; {per}less reuse per byte loaded, and a grouped/depthwise "
            "kernel"]


def _implementation(slow: pd.Series, fast: pd.Series) -> list[str]:
    """Another kernel, or oneDNN reorders (layout conversions) the fast row runs fewer of."""
    out = []
    k_s, k_f = str(slow.get("kernels") or ""), str(fast.get("kernels") or "")
    if k_s and k_f and k_s.split(";")[0] != k_f.split(";")[0]:
        out.append(f"a different implementation ran ({k_s.split(';')[0]} vs {k_f.split(';')[0]})")
    r_s, r_f = (pd.to_numeric(pd.Series([r.get(R.ONEDNN_REORDERS)]), errors="coerce")[0] for r in (slow, fast))
    if r_s > 0 and not r_s <= r_f:      # NaN (not traced) compares False; as many or fewer explain nothing
        versus = f" (the fast one: {int(r_f)})" if pd.notna(r_f) else ""
        out.append(f"oneDNN runs {int(r_s)} reorders (layout conversions to and from its blocked format) per "
                   f"call around it{versus}")
    return out


def findings(frame: pd.DataFrame, top: int = 10, tol: float = EQUAL_FLOPS_TOL, min_spread: float = 1.1,
             grouped: pd.DataFrame | None = None) -> list[Finding]:
    """The ``top`` findings: pairs of one layer kind or one family by their medians
    (``median_findings``), then such pairs of set-aside rows across processes
    (``cross_process_findings``), each by spread; coincidences (``COINCIDENCE``: equal FLOPs across
    kinds and families) only after them, when fewer than ``top`` were found."""
    found = median_findings(frame, top, tol, min_spread, grouped)
    found += cross_process_findings(frame, top - len(found), tol, min_spread)
    return found + median_findings(frame, top - len(found), tol, min_spread, kinds=(COINCIDENCE,))


def median_findings(frame: pd.DataFrame, top: int = 10, tol: float = EQUAL_FLOPS_TOL, min_spread: float = 1.1,
                    grouped: pd.DataFrame | None = None,
                    kinds: tuple[str, ...] = (SAME_LAYER, SAME_FAMILY)) -> list[Finding]:
    """The ``top`` equal-FLOPs groups of judged rows of ``kinds`` by spread (at least
    ``min_spread``), each as a sentence. ``grouped``: ``equal_flops_groups(frame, tol)`` (the
    same-layer groups) when the caller already has it. The same pair of cases in several runs, or
    in several kinds of group, is one finding ("seen in N runs"), told at its largest spread."""
    if top <= 0:
        return []
    candidates: list[tuple[float, str, pd.DataFrame]] = []
    for kind in kinds:
        g = grouped if kind == SAME_LAYER and grouped is not None else equal_flops_groups(frame, tol, kind=kind)
        for _, rows in g.groupby("group", sort=False):
            spread = float(rows["group_spread"].iloc[0])
            if spread >= min_spread:
                candidates.append((spread, kind, rows))
    pairs: dict[tuple[str, str], list[tuple[float, str, pd.DataFrame]]] = {}
    for c in sorted(candidates, key=lambda c: (-c[0], KINDS.index(c[1]))):
        rows = c[2]
        fast, slow = rows.loc[rows["time_median_s"].idxmin()], rows.loc[rows["time_median_s"].idxmax()]
        pairs.setdefault((fast["row_id"], slow["row_id"]), []).append(c)
    return [_median_finding(seen) for seen in list(pairs.values())[:top]]


def _median_finding(seen: list[tuple[float, str, pd.DataFrame]]) -> Finding:
    """One finding from the groups that hold its pair (largest spread first)."""
    spread, kind, rows = seen[0]
    rows = rows.sort_values("time_median_s")
    fast, slow = rows.iloc[0], rows.iloc[-1]
    runs = len({r for _, _, g in seen for r in g[R.RUN_ID]}) if R.RUN_ID in rows else 1
    lead = ", by coincidence (layers of different kinds)" if kind == COINCIDENCE else ""
    text = (f"{device_label(slow)} {slow[R.DTYPE]}, {si(float(fast[R.FLOPS]))}FLOPs{lead}: {describe_row(slow)} "
            f"takes {spread:.1f}x as long as {describe_row(fast)} ({_time(slow['time_median_s'])} vs "
            f"{_time(fast['time_median_s'])}): " + "; ".join(reasons(slow, fast)) + "."
            + (f" Seen in {runs} runs." if runs > 1 else ""))
    cols = [c for c in EXPLAIN_COLUMNS if c in rows]
    return Finding(group=int(rows["group"].iloc[0]), spread=float(spread), text=text, rows=rows[cols], kind=kind)


#: Fewest processes each row of a finding across processes was measured in.
MIN_PROCESSES = 3


def process_medians(v: object) -> np.ndarray | None:
    """A stored ``process_medians_s`` as floats (s); ``None`` unless it is a list whose every entry
    is a finite positive time (a list, an array, or null as Parquet and pandas give it)."""
    if v is None or isinstance(v, str) or not pd.api.types.is_list_like(v):
        return None
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):              # pd.NA, None or text among the values
        a = pd.to_numeric(pd.Series(list(v), dtype=object), errors="coerce").to_numpy(dtype=float)
    return a if a.ndim == 1 and a.size and np.isfinite(a).all() and (a > 0).all() else None


def cross_process_findings(frame: pd.DataFrame, top: int = 10, tol: float = EQUAL_FLOPS_TOL,
                           min_spread: float = 1.1) -> list[Finding]:
    """Findings of set-aside rows, judged across processes: within each equal-FLOPs group of a
    run's measured rows measured in at least ``MIN_PROCESSES`` processes each, the pair (at least
    one row set aside) with the largest bound ``min(slow's process medians) / max(fast's)``, a
    finding when that bound is at least ``min_spread``: every process of the slow row took that
    many times as long as every process of the fast one. Its ``spread`` is the bound; the same
    pair in several runs is one finding, told at its largest bound."""
    rows = _multi_process_rows(frame)
    if rows.empty or top <= 0:
        return []
    part = [c for c in PARTITION if c in rows]
    pairs: dict[tuple[str, str], list[Bound]] = {}
    for kind in (SAME_LAYER, SAME_FAMILY):
        for _, g in kind_groups(rows, part, tol, 2, kind).groupby("group", sort=False):
            if (b := _bound(g, min_spread)) is not None:
                pairs.setdefault((b.slow["row_id"], b.fast["row_id"]), []).append(b)
    told = [(max(bs, key=lambda b: b.lo), len(bs)) for bs in pairs.values()]
    return [_cross_finding(b, runs) for b, runs in sorted(told, key=lambda t: -t[0].lo)[:top]]


def _multi_process_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Measured rows with at least ``MIN_PROCESSES`` valid process medians, with ``fastest_s`` and
    ``slowest_s`` (their smallest and largest), ``processes_n``, ``set_aside`` and ``label_stability``."""
    if R.PROCESS_MEDIANS not in frame:
        return frame.iloc[:0]
    ok = frame[measured(frame) & ~labels(frame).isin(HOST_MADE)]   # a host slowdown can hit every process alike
    arrays = [process_medians(v) for v in ok[R.PROCESS_MEDIANS]]
    keep = np.array([a is not None and a.size >= MIN_PROCESSES for a in arrays], dtype=bool)
    ok, arrays = ok[keep], [a for a, k in zip(arrays, keep) if k]
    return ok.assign(fastest_s=[float(a.min()) for a in arrays], slowest_s=[float(a.max()) for a in arrays],
                     processes_n=[a.size for a in arrays], set_aside=is_set_aside(ok), label_stability=labels(ok))


@dataclass(frozen=True, slots=True)
class Bound:
    """A pair of equal-FLOPs rows: every process of ``slow`` took at least ``lo`` x as long as every
    process of ``fast``; ``pair`` holds the two rows, fast first."""

    lo: float
    slow: pd.Series
    fast: pd.Series
    pair: pd.DataFrame


def _bound(g: pd.DataFrame, min_spread: float) -> Bound | None:
    """The group's pair with the largest ``fastest_s[slow] / slowest_s[fast]`` with one of the two
    set aside (two judged rows are ``median_findings``' business); ``None`` below ``min_spread``.
    O(n): the best partner of a row is the group's extreme, or its runner-up when that is the row."""
    fastest, slowest = g["fastest_s"].to_numpy(), g["slowest_s"].to_numpy()
    aside = g["set_aside"].to_numpy(dtype=bool)
    if len(g) < 2 or not aside.any():
        return None
    lo_j, hi_i = np.argsort(slowest, kind="stable")[:2], np.argsort(-fastest, kind="stable")[:2]
    rows = np.arange(len(g))
    fast_for = np.where(rows == lo_j[0], lo_j[1], lo_j[0])       # each slow row's best fast partner
    slow_for = np.where(rows == hi_i[0], hi_i[1], hi_i[0])       # each fast row's best slow partner
    a = rows[aside]
    slow = np.concatenate([a, slow_for[a]])                      # aside as the slow row, then as the fast
    fast = np.concatenate([fast_for[a], a])
    ratio = fastest[slow] / slowest[fast]
    k = int(np.argmax(ratio))
    if not ratio[k] >= min_spread:
        return None
    i, j = int(slow[k]), int(fast[k])
    return Bound(float(ratio[k]), g.iloc[i], g.iloc[j], g.iloc[[j, i]])


def _cross_finding(b: Bound, runs: int) -> Finding:
    """One finding across processes as a sentence: the bound, each row's extreme process, why set aside."""
    slow, fast = b.slow, b.fast
    text = (f"{device_label(slow)} {slow[R.DTYPE]}, {si(float(fast[R.FLOPS]))}FLOPs: {describe_row(slow)} takes at "
            f"least {b.lo:.1f}x as long as {describe_row(fast)} whichever of their processes are compared (its "
            f"fastest of {slow['processes_n']} processes: {_time(slow['fastest_s'])}; the other's slowest of "
            f"{fast['processes_n']}: {_time(fast['slowest_s'])}; {slow['label_stability']} vs "
            f"{fast['label_stability']}): " + "; ".join(reasons(slow, fast)) + "."
            + (f" Seen in {runs} runs." if runs > 1 else ""))
    cols = [c for c in [*EXPLAIN_COLUMNS, R.PROCESS_MEDIANS] if c in b.pair]
    return Finding(group=-1, spread=b.lo, text=text, rows=b.pair[cols], basis=ACROSS)


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
    several = ok.groupby(keys, sort=False, dropna=False)[R.THREADS].transform("nunique") > 1
    ok = ok[several]                  # only layers measured at several thread counts (one pass over the rows)
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
