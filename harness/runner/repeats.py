"""One row from the processes that measured a case: the cross-process columns and the stability verdict.

``merge`` takes the rows of one case from each process (``harness.runner.workers``); ``single``
finishes a row measured in one process. Both fill ``processes``, ``process_medians_s``,
``process_median_s``, ``process_spread``, ``host_busy`` and ``stability`` (``harness.timing.stability``),
the canary's columns (blocks rejected over every process, each process's canary, the slowdown), and
for a row at two speeds its ``modes`` (``harness.timing.modes``): ``host-slowed`` where the process
medians follow their canaries, else the verdict's, told as "two speeds: ...".
Rows stay typed throughout: a worker's journal line becomes a ``Row`` once, in the parent, and the
merged ``Row`` goes to the store's writer.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from harness.record import Health, Row, Stability, Status, Timing, now_iso
from harness.timing import modes as M
from harness.timing.stability import median_low, verdict
from harness.units import micros, percent


def measured(row: Row) -> bool:
    """Whether ``row`` is a measured one (``ok``, with a median time)."""
    return row.status == Status.OK and row.timing is not None and row.timing.time_median_s is not None


def measuring_s(row: Row) -> float:
    """Seconds one process spent warming up and sampling this row (0 for a row not measured)."""
    t = row.timing
    return 0.0 if t is None else float(t.warmup_s or 0) + float(t.estimate_s or 0) + float(t.sampling_s or 0)


def merge(rows: Sequence[Row]) -> Row:
    """The row of one case measured by ``len(rows)`` processes (rows in process order).

    The statistics kept are those of the process whose median is the lower median (a time one
    process really measured); ``process_medians_s`` keeps every process's median. A case that
    failed in every process keeps the first failure; one that failed in some is judged ``noisy``
    with the failures named."""
    ok = [r for r in rows if measured(r)]
    if not ok:
        return rows[0]
    every = ok
    ok, aside = host_slow(ok)
    medians = [float(r.timing.time_median_s) for r in ok]   # type: ignore[union-attr]
    mid = median_low(medians)
    rep = ok[medians.index(mid)]
    busy_values = [r.health.host_busy for r in ok if r.health.host_busy is not None]
    busy = max(busy_values) if busy_values else None
    samples = [r.timing.samples_s or [] for r in ok]   # type: ignore[union-attr]
    stab, why = verdict(samples, busy)
    stab, why, modes = _told(stab, why, samples, medians, [_canary(r) for r in ok], mid, aside)
    failures = [r for r in rows if not measured(r)]
    if failures:
        stab = stab if stab is Stability.CONTENDED else Stability.NOISY
        why = f"{len(failures)} of {len(rows)} processes failed ({failures[0].health.error}); {why}"
    timing = dataclasses.replace(rep.timing, processes=len(ok), process_medians_s=medians, process_median_s=mid,
                                 process_spread=(max(medians) - min(medians)) / mid if mid > 0 else 0.0,
                                 **_canary_columns([r.timing for r in ok]))   # type: ignore[misc]
    health = dataclasses.replace(rep.health, host_busy=busy, stability=stab.value, stability_reason=why[:2000],
                                 modes=modes, **_host_columns([r.health for r in every], [r.timing for r in every]))
    provenance = dataclasses.replace(rep.provenance, timestamp=now_iso())
    ran = rep.ran or next((r.ran for r in every if r.ran is not None), None)   # profiled in the first process
    return dataclasses.replace(rep, timing=timing, health=health, provenance=provenance, ran=ran)


#: A process whose median canary ran more than this fraction above the fastest process's is set aside
#: (the row's other processes judge it), as a sample block is beside a slow canary.
PROCESS_BAND = 0.10
#: ... but never below this many processes.
MIN_KEPT = 2


def _canary(row: Row) -> float | None:
    """The median canary of the one process that measured ``row`` (``None`` without one)."""
    return (row.timing.process_canaries_s or [None])[0]   # type: ignore[union-attr]


def host_slow(rows: Sequence[Row]) -> tuple[list[Row], str]:
    """(the rows kept, what was set aside): the processes whose median canary (seconds per step, the
    host's speed beside their blocks) ran over ``PROCESS_BAND`` above the fastest process's, while at
    least ``MIN_KEPT`` remain (then the fastest canaries are kept). A host slow throughout one
    process is not told within it (its blocks' canary median moves with it: ``harness.timing.canary``),
    but beside the row's other processes it is. NVBench discards a GPU trial run at a throttled clock
    the same way (``nvbench/detail/gpu_frequency.cxx``). Without a canary per process, all are kept."""
    canaries = [_canary(r) for r in rows]
    if len(rows) <= MIN_KEPT or any(c is None or c <= 0 for c in canaries):
        return list(rows), ""
    fastest = min(c for c in canaries if c is not None)
    order = sorted(range(len(rows)), key=lambda i: canaries[i])       # type: ignore[arg-type,return-value]
    keep = {i for i in order if canaries[i] <= (1 + PROCESS_BAND) * fastest} | set(order[:MIN_KEPT])  # type: ignore[operator]
    if len(keep) == len(rows):
        return list(rows), ""
    slow = [i for i in range(len(rows)) if i not in keep]
    shown = ", ".join(f"{canaries[i] / fastest:.2f}x" for i in slow)                  # type: ignore[operator]
    return ([rows[i] for i in sorted(keep)],
            f"{len(slow)} of {len(rows)} processes set aside: the host canary beside them ran {shown} the "
            f"fastest process's (over {percent(PROCESS_BAND, 0)}); their medians "
            + "/".join(micros(float(rows[i].timing.time_median_s)) for i in slow) + " us")  # type: ignore[union-attr]


def short_of(rows: Sequence[Row], asked: int) -> bool:
    """Whether a case measured in every one of ``rows`` keeps fewer than ``asked`` processes beside
    the host canary (``host_slow`` set some aside): one more process may find the host at the speed
    the others did (``harness.runner.workers`` then measures it once more). A case that failed in a
    process is not: another process would not mend it."""
    ok = [r for r in rows if measured(r)]
    return bool(ok) and len(ok) == len(rows) and len(host_slow(ok)[0]) < asked


def _told(stab: Stability, why: str, samples: Sequence[Sequence[float]], medians: Sequence[float],
          canaries: Sequence[float | None], mid: float, aside: str = "") -> tuple[Stability, str, str | None]:
    """(verdict, reason, modes JSON): ``host-slowed`` where the process medians follow their canaries;
    the reason tells a bimodal or host-slowed row's two speeds first, then ``aside`` (the processes
    ``host_slow`` set aside, if any), then the verdict's figures."""
    if stab in (Stability.BIMODAL, Stability.NOISY):
        follows = M.follows_host(medians, canaries)
        if follows is not None:
            stab, why = Stability.HOST_SLOWED, f"{follows}; {why}"
    told = _speeds(stab, why, samples, medians, mid)
    text = "; ".join(x for x in (told[0] if told else "", aside, why) if x)
    return stab, text, M.to_json(told[1]) if told else None


def _speeds(stab: Stability, why: str, samples: Sequence[Sequence[float]], medians: Sequence[float],
            mid: float) -> tuple[str, tuple[M.Mode, M.Mode]] | None:
    """A bimodal or host-slowed row's two speeds, told (``modes.describe``) and as modes: of the
    process medians, or of the first process whose samples split."""
    if stab not in (Stability.BIMODAL, Stability.HOST_SLOWED):
        return None
    if why.startswith("process medians") or stab is Stability.HOST_SLOWED:
        two = M.process_modes(samples)
        return (M.describe(two, len(samples), mid), two) if two else None
    found = next(((i, m) for i, xs in enumerate(samples) if M.splits(xs) and (m := M.sample_modes(xs, mid))), None)
    if found is None:
        return None
    at, two = found
    return M.describe(two, len(samples), mid, samples=True, own=medians[at] == mid), two


def _canary_columns(timings: Sequence[Timing]) -> dict[str, object]:
    """Blocks rejected over every process and each process's canary (null without a canary)."""
    rejected = [t.samples_rejected for t in timings if t.samples_rejected is not None]
    per = [c for t in timings for c in (t.process_canaries_s or [])]
    return {"samples_rejected": sum(rejected) if rejected else None,
            "process_canaries_s": per if len(per) == len(timings) else None}


def _host_columns(healths: Sequence[Health], timings: Sequence[Timing]) -> dict[str, object]:
    """The row's canary slowdown (its slowest process's median canary over its fastest process's: how
    much slower the host ran in one process than in another) and the CPU clock over every process
    (median of their clocks; spread over them and within each)."""
    per = [c for t in timings for c in (t.process_canaries_s or [])]
    slowdown = max(per) / min(per) - 1 if per and min(per) > 0 else None
    clocks = [h.clock_mhz for h in healths if h.clock_mhz]
    spreads = [h.clock_spread for h in healths if h.clock_spread is not None]
    mhz = median_low(clocks) if clocks else None
    across = (max(clocks) - min(clocks)) / mhz if mhz else None
    return {"canary_slowdown": slowdown, "clock_mhz": mhz,
            "clock_spread": max([*spreads, across]) if across is not None else None}


def single(row: Row, host_busy: float | None) -> Row:
    """A row measured in this process, with its host load, one-process columns and verdict."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    case = dataclasses.replace(row.case, omp_wait_policy=policy.lower() if policy else None)
    if row.status != Status.OK or row.timing is None:
        return dataclasses.replace(row, case=case)
    t = row.timing
    stab, why = verdict([t.samples_s], host_busy)
    stab, why, modes = _told(stab, why, [t.samples_s], [t.time_median_s], [None], t.time_median_s)
    timing = dataclasses.replace(t, processes=1, process_medians_s=[t.time_median_s],
                                 process_median_s=t.time_median_s, process_spread=0.0)
    health = dataclasses.replace(row.health, host_busy=host_busy, stability=stab.value, stability_reason=why,
                                 modes=modes)
    return dataclasses.replace(row, case=case, timing=timing, health=health)
