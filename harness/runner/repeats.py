"""One row from the processes that measured a case: the cross-process columns and the stability verdict.

``merge`` takes the rows of one case from each process (``harness.runner.workers``); ``single``
finishes a row measured in one process. Both fill ``processes``, ``process_medians_s``,
``process_median_s``, ``process_spread``, ``host_busy`` and ``stability`` (``harness.timing.stability``).
Rows stay typed throughout: a worker's journal line becomes a ``Row`` once, in the parent, and the
merged ``Row`` goes to the store's writer.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from harness.record import Row, Status, now_iso
from harness.timing.stability import median_low, verdict


def _ok(row: Row) -> bool:
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
    ok = [r for r in rows if _ok(r)]
    if not ok:
        return rows[0]
    medians = [float(r.timing.time_median_s) for r in ok]   # type: ignore[union-attr]
    mid = median_low(medians)
    rep = ok[medians.index(mid)]
    busy_values = [r.health.host_busy for r in ok if r.health.host_busy is not None]
    busy = max(busy_values) if busy_values else None
    stab, why = verdict([r.timing.samples_s or [] for r in ok], busy)   # type: ignore[union-attr]
    failures = [r for r in rows if not _ok(r)]
    if failures:
        stab = stab if stab.value == "contended" else type(stab).NOISY
        why = f"{len(failures)} of {len(rows)} processes failed ({failures[0].health.error}); {why}"
    timing = dataclasses.replace(rep.timing, processes=len(ok), process_medians_s=medians, process_median_s=mid,
                                 process_spread=(max(medians) - min(medians)) / mid if mid > 0 else 0.0)
    health = dataclasses.replace(rep.health, host_busy=busy, stability=stab.value, stability_reason=why[:2000])
    provenance = dataclasses.replace(rep.provenance, timestamp=now_iso())
    return dataclasses.replace(rep, timing=timing, health=health, provenance=provenance)


def single(row: Row, host_busy: float | None) -> Row:
    """A row measured in this process, with its host load, one-process columns and verdict."""
    policy = os.environ.get("OMP_WAIT_POLICY")
    case = dataclasses.replace(row.case, omp_wait_policy=policy.lower() if policy else None)
    if row.status != Status.OK or row.timing is None:
        return dataclasses.replace(row, case=case)
    t = row.timing
    stab, why = verdict([t.samples_s], host_busy)
    timing = dataclasses.replace(t, processes=1, process_medians_s=[t.time_median_s],
                                 process_median_s=t.time_median_s, process_spread=0.0)
    health = dataclasses.replace(row.health, host_busy=host_busy, stability=stab.value, stability_reason=why)
    return dataclasses.replace(row, case=case, timing=timing, health=health)
