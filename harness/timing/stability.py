"""The stability verdict of a measured row: can its time carry a verdict (findings, compare, regress)?

Inputs: the samples of each process that measured the case (seconds per call) and the host load
around the measurement. The rules, first match wins:

1. ``contended``: ``host_busy`` > ``BUSY_LIMIT`` (other processes took that share of the CPUs).
2. ``bimodal``: the process medians spread by more than ``SPLIT`` and fall into clusters separated by
   a gap wider than ``GAP_FACTOR`` x the widest within-process IQR (the ShuffleNet G2 case: 0.6 ms in
   one process, 2.8 ms in another, each tight); or one process's samples (at least ``MIN_CLUSTER_N``)
   split by a gap wider than ``SAMPLE_GAP`` of the median with at least ``MIN_CLUSTER_SHARE`` on each side.
3. ``noisy``: processes spread by more than ``SPLIT`` without separated clusters, a within-process
   relative IQR above ``NOISY_REL_IQR``, or fewer than 3 samples.
4. ``stable`` otherwise.

Thresholds are module constants, stated in docs/measuring.md ("Stability"). ``SPLIT`` is the 3 % the
stability goal asks two runs to agree within: processes of one run that disagree by more cannot
promise it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from harness.record import Stability
from harness.timing.stats import NOISY_REL_IQR  # the within-process threshold `noisy` already uses
from harness.units import micros

BUSY_LIMIT = 0.20
SPLIT = 0.03
SAMPLE_GAP = 0.05
GAP_FACTOR = 2.0
MIN_CLUSTER_N = 8
MIN_CLUSTER_SHARE = 0.2


def _quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    if len(xs) < 2:
        x = float(xs[0])
        return x, x, x
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def median_low(values: Sequence[float]) -> float:
    """The lower middle value: a value one process really measured."""
    return sorted(values)[(len(values) - 1) // 2]


def split_samples(xs: Sequence[float]) -> str | None:
    """A gap splitting one process's samples into two clusters, described, or ``None``."""
    if len(xs) < MIN_CLUSTER_N:
        return None
    s = sorted(xs)
    med = statistics.median(s)
    low = max(2, int(MIN_CLUSTER_SHARE * len(s) + 0.999))
    best = max(range(low - 1, len(s) - low), key=lambda i: s[i + 1] - s[i], default=None)
    if best is None or med <= 0 or (s[best + 1] - s[best]) / med <= SAMPLE_GAP:
        return None
    return (f"samples split {best + 1}/{len(s) - best - 1} at {micros(s[best])}|{micros(s[best + 1])} us "
            f"(gap {100 * (s[best + 1] - s[best]) / med:.0f} % of the median)")


def verdict(samples: Sequence[Sequence[float]], host_busy: float | None) -> tuple[Stability, str]:
    """(verdict, the figures behind it) for one row measured by ``len(samples)`` processes."""
    busy = f"host_busy {host_busy:.2f}" if host_busy is not None else "host_busy unknown"
    if host_busy is not None and host_busy > BUSY_LIMIT:
        return Stability.CONTENDED, f"{busy} > {BUSY_LIMIT:.2f}"
    procs = [list(map(float, xs)) for xs in samples if len(xs)]
    if not procs:
        return Stability.NOISY, "no samples"
    quart = [_quartiles(xs) for xs in procs]
    medians = [q[1] for q in quart]
    mid = median_low(medians)
    rel_iqr = max((q[2] - q[0]) / q[1] if q[1] > 0 else 0.0 for q in quart)
    spread = (max(medians) - min(medians)) / mid if mid > 0 else 0.0
    figures = f"rel_iqr {100 * rel_iqr:.1f} %, {len(procs)} process(es) within {100 * spread:.1f} %, {busy}"
    if spread > SPLIT:
        ordered = sorted(zip(medians, quart))
        gaps = [(ordered[i + 1][0] - ordered[i][0], i) for i in range(len(ordered) - 1)]
        gap, _ = max(gaps)
        widest = max(q[2] - q[0] for q in quart)
        shown = "/".join(micros(m) for m in medians)
        if gap > GAP_FACTOR * widest:
            return Stability.BIMODAL, f"process medians {shown} us split by {100 * gap / mid:.0f} %; {figures}"
        spread_text: str | None = f"process medians {shown} us spread {100 * spread:.0f} %; {figures}"
    else:
        spread_text = None
    for xs in procs:                                   # rule 2 before rule 3, as the docstring orders them
        split = split_samples(xs)
        if split:
            return Stability.BIMODAL, f"{split}; {figures}"
    if spread_text is not None:
        return Stability.NOISY, spread_text
    if rel_iqr > NOISY_REL_IQR or min(len(xs) for xs in procs) < 3:
        return Stability.NOISY, figures
    return Stability.STABLE, figures
