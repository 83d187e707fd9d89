"""What a row's counts say about its residual (measured / predicted): why a layer ran slower or
faster than its prediction, from stored columns only (channel groups, launches, layout
conversions, parallelism, working set against the cache capacities, dtype)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from harness import record as R
from harness.predict.features import features
from harness.units import binary_bytes, percent, seconds, si


def _f(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def reasons(row: pd.Series, feat: pd.Series | None = None) -> list[str]:
    """Reasons, most telling first, why ``row`` (a derived row with ``residual``) missed its prediction;
    ``feat``: its ``features`` row, when the caller computed them for many rows at once."""
    res = _f(row.get("residual"))
    if not math.isfinite(res):
        return []
    if feat is None:
        feat = features(pd.DataFrame([row.to_dict()])).iloc[0]
    out: list[str] = []
    slow = res > 1
    t = _f(row.get(R.TIME_MEDIAN))
    launch = _f(row.get(R.LAUNCH_OVERHEAD)) * _f(feat.get("launches"))
    floor = f"{int(_f(feat['launches']))} launches x {seconds(_f(row.get(R.LAUNCH_OVERHEAD)))}" \
        if math.isfinite(launch) else ""
    if math.isfinite(launch) and launch > 0 and t < launch:
        out.append(f"{seconds(t)} is under its launch floor ({floor} = {seconds(launch)}): the profiled launches "
                   "include nested calls that cost less than a dispatch")
    elif math.isfinite(launch) and launch > 0 and t <= 4 * launch:
        out.append(f"{seconds(t)} is within {t / launch:.3g}x of its launch floor ({floor}): dispatch, not "
                   "arithmetic")
    g, cpg = _f(feat.get("groups")), _f(feat.get("ch_per_group"))
    if slow and math.isfinite(g) and g > 1:
        out.append(f"{int(g)} channel groups, {int(cpg) if math.isfinite(cpg) else '?'} input channels per output: "
                   "little reuse per byte loaded, a grouped/depthwise kernel")
    out += [f"{text} ({how} {most:.3g}x)" for text, most, how in sized(row, feat)] if slow else []
    threads = _f(row.get(R.THREADS))
    outs = 2 ** _f(feat.get("log_out_elems")) - 1
    if slow and math.isfinite(outs) and math.isfinite(threads) and outs < 4096 * max(threads, 1):
        out.append(f"only {outs:,.0f} output elements to share among {int(threads)} thread(s): little parallelism")
    if row.get(R.PEAK_NATIVE) is False:
        out.append(f"no native {row.get(R.DTYPE)} unit: its peak is the fp32 rate")
    moved = _f(row.get(R.BYTES_READ)) + _f(row.get(R.BYTES_WRITTEN))
    roof = _f(row.get("predicted_roofline_s"))
    beats_roof = math.isfinite(roof) and t < roof         # faster than predicted is not faster than the roof
    if not slow and beats_roof and row.get("predicted_bound") not in ("compute", "launch", None):
        out.append(f"faster than its {row.get('predicted_bound')} roof: its data stay in a faster level across "
                   f"calls ({binary_bytes(moved)} per call)")
    if not slow and beats_roof and row.get("predicted_bound") == "compute":
        out.append("faster than the measured GEMM ceiling: the ceiling understates this kernel, or the clock rose")
    if not slow and not beats_roof and row.get("predicted_basis") == "model" and roof > 0:
        out.append(f"the model expected less of this kernel than it gave: it still took {t / roof:.2f}x its "
                   "roofline's time")
    intensity = _f(row.get(R.INTENSITY))
    if slow and not out and math.isfinite(intensity):
        out.append(f"intensity {intensity:.1f} FLOP/B, bound by {row.get('predicted_bound')}: a kernel far from "
                   "its roof")
    return out


def sized(row: pd.Series, feat: pd.Series) -> list[tuple[str, float, str]]:
    """The reasons that carry a size, each with the factor of a slow row's residual it accounts for
    and how that factor bounds it: a pool's overlapping windows (``overlap``, at most), a causal
    attention counted as its unmasked half of the scores while a kernel computing whole tiles across
    the diagonal does up to all of them (2x, at most), and oneDNN's reorders (``reorder_factor``:
    about, at the memory roof)."""
    out: list[tuple[str, float, str]] = []
    bound = row.get("predicted_bound")
    reread = overlap(row, feat)
    if reread is not None and bound not in ("compute", "launch"):      # more reads: more memory time only
        out.append((f"its windows overlap: each input element is read about {reread:.3g}x (kernel / stride), "
                    "where the count assumes once", reread, "at most"))
    if str(row.get(R.LAYER)) in ("sdpa", "mha") and _f(feat.get("causal")) == 1 and bound == "compute":
        out.append(("causal: the count takes the unmasked half of the scores, and a kernel that computes whole "
                    "tiles across the diagonal does up to twice that", 2.0, "at most"))
    reorders, factor = _f(row.get(R.ONEDNN_REORDERS)), reorder_factor(row, feat)
    if math.isfinite(reorders) and reorders > 0 and factor is not None:
        out.append((f"oneDNN runs {int(reorders)} reorder(s) per call (layout conversions) around it, each "
                    "tensor read and written once more", factor, "about, at its memory roof,"))
    return out


def reorder_factor(row: pd.Series, feat: pd.Series) -> float | None:
    """What reordering every tensor once costs against the row's roofline time: (roofline + 2 x its
    memory time) / roofline, the tensors read and written once more at the bandwidth of the level
    they fit (a conversion moves its bytes; none of it is arithmetic). None without the two times."""
    roof = _f(row.get("predicted_roofline_s"))
    memory = _f(feat.get("memory_share")) * roof          # the share is of the roofline's time
    if not (roof > 0 and math.isfinite(memory) and memory >= 0):
        return None
    return (roof + 2 * memory) / roof


def overlap(row: pd.Series, feat: pd.Series) -> float | None:
    """How many times a pooling window reads each input element (kernel elements / stride product:
    2.25 for 3x3 windows at stride 2), where the counts read it once; None for other layers or
    windows that do not overlap. The extra reads hit the cache the first read filled, so they cost
    at most this factor of the memory time."""
    kernel, stride = _f(feat.get("kernel")), _f(feat.get("stride"))
    if "pool" not in str(row.get(R.LAYER)) or not math.isfinite(kernel) or not kernel > max(stride, 1):
        return None
    return kernel / max(stride, 1)


#: A slow row whose residual is this many times what its sized reasons account for gets the rest named
#: (a causal attention 4.36x slower than its roof, 2x of it the mask at most: the other 2.2x is told).
UNEXPLAINED = 1.5


def kernel_rate(row: pd.Series, feat: pd.Series) -> str:
    """The kernel that ran and the share of its roof it reached: ``the kernel itself
    (aten::max_pool2d_with_indices: 1.0 % of its L3 roof, 1.52 GB/s moved)``."""
    t, roof = _f(row.get(R.TIME_MEDIAN)), _f(row.get("predicted_roofline_s"))
    bound = row.get("predicted_bound")
    moved = _f(row.get(R.BYTES_READ)) + _f(row.get(R.BYTES_WRITTEN))
    rate = f"{si(moved / t, 'B/s')} moved" if bound != "compute" else f"{si(_f(row.get(R.FLOPS)) / t, 'FLOP/s')}"
    impl = feat.get("implementation")
    impl = f"{impl}: " if isinstance(impl, str) and impl else ""
    return f"the kernel itself ({impl}{percent(roof / t)} of its {bound} roof, {rate})"


def _sized(row: pd.Series, feat: pd.Series, why: list[str]) -> list[str]:
    """``why`` with the kernel's part named where the reasons leave most of a slow row's miss: after
    the reasons with a size (``sized``) when the residual is over ``UNEXPLAINED`` times what they
    account for; in place of the bare intensity line (or of nothing) when nothing else was found."""
    res = _f(row.get("residual"))
    if not (math.isfinite(res) and res > 1 and _f(row.get(R.TIME_MEDIAN)) > 0
            and _f(row.get("predicted_roofline_s")) > 0):
        return why
    if row.get("predicted_basis") == "model" or row.get("predicted_bound") == "launch":
        return why                  # a model's miss is not the kernel's distance from its roof; nor a launch's
    most = math.prod(f for _, f, _ in sized(row, feat))
    if most > 1 and res / most > UNEXPLAINED:
        rest = res / most
        return [*why, f"the rest, {rest:.{1 if rest < 10 else 0}f}x, is " + kernel_rate(row, feat)]
    if all(w.startswith("intensity ") for w in why):
        return [f"nothing in its counts explains it: {kernel_rate(row, feat)}"]
    return why


def explain(row: pd.Series, top: int = 2, feat: pd.Series | None = None) -> str:
    """One sentence: how far off the prediction was, the ``top`` reasons its counts give (``feat``:
    as for ``reasons``) and, where they account for far less than the miss, what the kernel itself
    reached (``_sized``)."""
    res = _f(row.get("residual"))
    if not math.isfinite(res):
        return "no prediction"
    if feat is None:
        feat = features(pd.DataFrame([row.to_dict()])).iloc[0]
    how = f"{res:.2f}x slower than predicted" if res >= 1 else f"{1 / res:.2f}x faster than predicted"
    why = _sized(row, feat, reasons(row, feat)[:top])
    return f"{how}: " + ("; ".join(why) if why else "nothing in its counts stands out")
