"""Change points in one case's history (one median per night or commit), and the baseline a new
run is judged against.

Method: PELT (``ruptures``, exact optimal partitioning with a penalty) with the l1 cost (distance
to each segment's median, so one outlying night gains nothing from a segment of its own) on the log
of the nightly medians scaled by a robust noise estimate: the median absolute successive difference (MAD of
first differences / sqrt 2, times 1.4826), which a step moves by one term only. The penalty sets
the false-positive budget (``FP_BUDGET``: the chance that one case's steady history shows a change
point, measured by ``benchmarks/regress_fp.py``). Segments hold at least ``MIN_SEGMENT`` nights, so
one noisy night cannot make a segment of its own, and adjacent segments whose medians differ by
less than ``MIN_SHIFT`` are merged (a change smaller than that is not worth a person's time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Nights a segment holds at least: a single noisy night never forms one.
MIN_SEGMENT = 2
#: Smallest relative shift between adjacent segment medians reported as a change.
MIN_SHIFT = 0.05
#: ruptures cost: l1 (distance to the segment median): one outlying night gains nothing from a segment of its own.
MODEL = "l1"
#: Penalty per change point, in units of the scaled log-time's absolute deviation (see ``benchmarks/regress_fp.py``
#: for the false-positive rate it gives on steady histories).
PENALTY = 10.0
#: Floor of the noise estimate (relative): below it, timer resolution dominates.
NOISE_FLOOR = 0.005


def noise(values: Sequence[float]) -> float:
    """Robust relative noise of a series of medians: 1.4826 x median |successive log difference| / sqrt 2,
    floored at ``NOISE_FLOOR``; a step between two nights moves one difference only."""
    x = np.log(np.asarray(values, dtype=float))
    if len(x) < 3:
        return NOISE_FLOOR
    return max(NOISE_FLOOR, 1.4826 * float(np.median(np.abs(np.diff(x)))) / math.sqrt(2))


def change_points(values: Sequence[float], penalty: float = PENALTY, min_size: int = MIN_SEGMENT,
                  min_shift: float = MIN_SHIFT) -> list[int]:
    """Indices (into ``values``) where a new segment starts; ``[]`` for a steady series."""

    import ruptures as rpt  # deferred: it imports scipy (~1.5 s); only history and regress need change points
    v = np.asarray(values, dtype=float)
    if len(v) < 2 * min_size or not np.all(v > 0):
        return []
    z = (np.log(v) / noise(v)).reshape(-1, 1)
    bkps = rpt.Pelt(model=MODEL, min_size=min_size, jump=1).fit(z).predict(pen=penalty)[:-1]
    kept: list[int] = []
    for b in bkps:
        start = kept[-1] if kept else 0
        end = next((x for x in bkps if x > b), len(v))
        before, after = float(np.median(v[start:b])), float(np.median(v[b:end]))
        if abs(after / before - 1) >= min_shift:
            kept.append(b)
    return kept


@dataclass(frozen=True, slots=True)
class Baseline:
    """What a new night is judged against: the segment since the last change point."""

    reference_s: float       # median of the segment's nightly medians (s)
    noise: float             # robust relative noise of the whole history (log scale)
    nights: int              # nights in the segment
    since: int               # index of its first night in the history
    change_points: tuple[int, ...]


def baseline(values: Sequence[float]) -> Baseline:
    """The baseline of a history of nightly medians (oldest first)."""
    cps = change_points(values)
    start = cps[-1] if cps else 0
    seg = np.asarray(values[start:], dtype=float)
    return Baseline(reference_s=float(np.median(seg)), noise=noise(values), nights=len(seg), since=start,
                    change_points=tuple(cps))
