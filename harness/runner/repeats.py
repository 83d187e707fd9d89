"""One row from the processes that measured a case: the cross-process columns and the stability verdict.

``merge`` takes the records of one case from each process (``harness.runner.workers``); ``single``
finishes a row measured in the run's own process. Both fill ``processes``, ``process_medians_s``,
``process_median_s``, ``process_spread``, ``host_busy`` and ``stability`` (``harness.timing.stability``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

from harness.record import Row, Status
from harness.timing.stability import median_low, verdict


def _ok(rec: dict[str, Any]) -> bool:
    return rec.get("status") == str(Status.OK) and rec.get("time_median_s") is not None


def merge(records: Sequence[dict[str, Any]]) -> Row:
    """The row of one case measured by ``len(records)`` processes (records in process order).

    The statistics kept are those of the process whose median is the lower median (a time one
    process really measured); ``process_medians_s`` keeps every process's median. A case that
    failed in every process keeps the first failure; one that failed in some is judged ``noisy``
    with the failures named."""
    ok = [r for r in records if _ok(r)]
    if not ok:
        return Row.from_record(records[0])
    medians = [float(r["time_median_s"]) for r in ok]
    mid = median_low(medians)
    rep = dict(ok[medians.index(mid)])
    busy_values = [r["host_busy"] for r in ok if r.get("host_busy") is not None]
    busy = max(busy_values) if busy_values else None
    stab, why = verdict([r["samples_s"] or [] for r in ok], busy)
    failures = [r for r in records if not _ok(r)]
    if failures:
        stab = stab if stab.value == "contended" else type(stab).NOISY
        why = f"{len(failures)} of {len(records)} processes failed ({failures[0].get('error')}); {why}"
    rep.update(processes=len(ok), process_medians_s=medians, process_median_s=mid,
               process_spread=(max(medians) - min(medians)) / mid if mid > 0 else 0.0, host_busy=busy,
               stability=stab.value, stability_reason=why[:2000],
               timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return Row.from_record(rep)


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
