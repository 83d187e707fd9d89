"""The speeds of a row that runs at two: each mode's median, its share of samples and of processes,
and which mode holds the row's time; and whether the modes follow the host (the canary).

A row is split into two modes where ``harness.timing.stability`` calls it ``bimodal``: across
processes at the widest gap between their medians, or within one process at the widest gap between
its samples. The sentence a user reads: "two speeds: 0.75 ms (2 of 3 processes) and 1.08 ms (1 of 3);
the row's time is the first".

*Host-slowed*: the processes' medians split, and dividing each by how slow its canary ran (its
median canary over the fastest process's median canary, ``harness.timing.canary``) brings them within
``stability.SPLIT``: the host, not the layer, ran at two speeds.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from harness.timing.stability import MIN_CLUSTER_SHARE, SPLIT, median_low, split_samples
from harness.units import percent, seconds


@dataclass(frozen=True, slots=True)
class Mode:
    """One speed of a row: median seconds per call, samples and processes in it, and whether the
    row's time (the lower median of the process medians) falls in it."""

    median_s: float
    samples: int
    processes: int
    holds_row: bool


def _split_at_gap(values: Sequence[float], min_side: int) -> int | None:
    """Index after which sorted ``values`` split at their widest gap (each side >= ``min_side``)."""
    s = sorted(values)
    cuts = range(min_side - 1, len(s) - min_side)
    return max(cuts, key=lambda i: s[i + 1] - s[i], default=None)


def process_modes(samples: Sequence[Sequence[float]]) -> tuple[Mode, Mode] | None:
    """Two modes of the process medians split at their widest gap (``None`` for one process)."""
    procs = [list(xs) for xs in samples if len(xs)]
    if len(procs) < 2:
        return None
    medians = [statistics.median(xs) for xs in procs]
    cut = _split_at_gap(medians, 1)
    if cut is None:
        return None
    edge = sorted(medians)[cut]
    row = median_low(medians)
    out = []
    for low_side in (True, False):
        side = [i for i, m in enumerate(medians) if (m <= edge) == low_side]
        out.append(Mode(statistics.median([medians[i] for i in side]), sum(len(procs[i]) for i in side), len(side),
                        (row <= edge) == low_side))
    return out[0], out[1]


def splits(samples: Sequence[float]) -> bool:
    """Whether one process's samples split into two clusters (``stability``'s rule)."""
    return split_samples(samples) is not None


def sample_modes(samples: Sequence[float], row_median: float) -> tuple[Mode, Mode] | None:
    """Two modes of one process's samples split at their widest gap (each side at least
    ``MIN_CLUSTER_SHARE`` of them); a mode holds the row's time where it lies within the mode's
    samples (neither does when the row's time is another process's median)."""
    s = sorted(samples)
    cut = _split_at_gap(s, max(2, int(MIN_CLUSTER_SHARE * len(s) + 0.999)))
    if cut is None:
        return None
    low, high = s[: cut + 1], s[cut + 1:]
    return (Mode(statistics.median(low), len(low), 1, low[0] <= row_median <= low[-1]),
            Mode(statistics.median(high), len(high), 1, high[0] <= row_median <= high[-1]))


def describe(modes: Sequence[Mode], processes: int, row_s: float | None = None, *, samples: bool = False,
             own: bool = True) -> str:
    """"two speeds: 0.75 ms (2 of 3 processes) and 1.08 ms (1 of 3); the row's time is the first" (where
    the row's time, ``row_s``, prints otherwise than that mode's median: "the row's time, 0.76 ms, falls
    in the first");
    ``samples``: the split is within one process's samples (``sample_modes``): "two speeds in one of
    3 processes: 637 us (24 % of its samples) and 829 us (76 %); the row's time, 724 us, is another
    process's median" (``own``: whether the row's time is that process's median; then, held by
    neither mode, it lies between them)."""
    a, b = modes
    total = a.samples + b.samples
    within = f" in one of {processes} processes" if samples and processes > 1 else ""
    if not samples:
        parts = f"{seconds(a.median_s)} ({a.processes} of {processes} processes) and " \
                f"{seconds(b.median_s)} ({b.processes} of {processes})"
    else:
        parts = f"{seconds(a.median_s)} ({percent(a.samples / total, 0)} of {'its ' if within else ''}samples) " \
                f"and {seconds(b.median_s)} ({percent(b.samples / total, 0)})"
    shown = f", {seconds(row_s)}," if row_s is not None else ""
    if a.holds_row or b.holds_row:
        held = a if a.holds_row else b
        which = held_clause("first" if a.holds_row else "second", row_s, held.median_s)
    elif own:
        which = f"the row's time{shown} lies between them"
    else:
        which = f"the row's time{shown} is another process's median"
    return f"two speeds{within}: {parts}; {which}"


def held_clause(order: str, row_s: float | None, mode_s: float) -> str:
    """"the row's time is the first" (``order``), or "the row's time, 760 us, falls in the first"
    where the row's time prints otherwise than that mode's median."""
    if row_s is None or seconds(row_s) == seconds(mode_s):
        return f"the row's time is the {order}"
    return f"the row's time, {seconds(row_s)}, falls in the {order}"


def to_json(modes: Sequence[Mode] | None) -> str | None:
    """The ``modes`` column: a JSON list of each mode's fields, or null."""
    return json.dumps([asdict(m) for m in modes]) if modes else None


def follows_host(medians: Sequence[float], canaries: Sequence[float | None]) -> str | None:
    """The figures when the process medians, each divided by its canary's slowdown, agree within
    ``SPLIT`` while the raw medians do not; ``None`` otherwise (or without a canary per process)."""
    if len(medians) < 2 or any(c is None or c <= 0 for c in canaries):
        return None
    fastest = min(c for c in canaries if c is not None)
    scaled = [m / (c / fastest) for m, c in zip(medians, canaries) if c is not None]
    mid, smid = median_low(medians), median_low(scaled)
    raw = (max(medians) - min(medians)) / mid if mid > 0 else 0.0
    fair = (max(scaled) - min(scaled)) / smid if smid > 0 else 0.0
    if raw <= SPLIT or fair > SPLIT:
        return None
    shown = "/".join(seconds(m) for m in medians)
    slow = "/".join(f"{c / fastest:.2f}x" for c in canaries if c is not None)
    return (f"process medians {shown} follow their canaries ({slow} the fastest): within {fair:.1%} once the "
            f"host's speed is taken out, {percent(raw, 0)} apart without")
