"""How much of the machine other processes took while a row was measured.

``host_busy`` = (CPU time all CPUs spent busy - CPU time of this process and its children) /
(wall time x CPUs), over the interval the row was measured, from ``/proc/stat`` through psutil
(``user + nice + system + irq + softirq + steal``: time a hypervisor gave to other guests counts
as taken). Resolution: the kernel's clock tick (10 ms per CPU); rows measured for less than
``MIN_INTERVAL_S`` get ``None`` rather than a figure the ticks cannot carry.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import psutil

#: Shortest interval whose host load is reported (seconds): 10 ticks of 10 ms on one CPU.
MIN_INTERVAL_S = 0.1
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")


@dataclass(frozen=True, slots=True)
class CpuSample:
    """One reading: wall clock (s), busy CPU time of the whole machine (s), this process's own CPU
    time including its children (s), and the CPUs counted."""

    wall_s: float
    busy_s: float
    own_s: float
    cpus: int


def sample(proc: psutil.Process | None = None) -> CpuSample:
    """Read the machine's and this process's CPU times now."""
    times = psutil.cpu_times()
    own = (proc or psutil.Process()).cpu_times()
    busy = sum(getattr(times, f, 0.0) for f in _BUSY_FIELDS)
    mine = own.user + own.system + getattr(own, "children_user", 0.0) + getattr(own, "children_system", 0.0)
    return CpuSample(wall_s=time.monotonic(), busy_s=busy, own_s=mine, cpus=psutil.cpu_count() or 1)


def host_busy(before: CpuSample, after: CpuSample) -> float | None:
    """Share (0..1) of the machine's CPU capacity that other processes used between two samples;
    ``None`` for an interval shorter than ``MIN_INTERVAL_S``."""
    wall = after.wall_s - before.wall_s
    if wall < MIN_INTERVAL_S:
        return None
    others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return round(min(1.0, max(0.0, others / (wall * after.cpus))), 4)


#: ``--threads auto``: seconds the CPUs are watched at the start of a run, and the share of a CPU
#: other processes may take for it to count as free.
WATCH_S, FREE_BELOW = 0.3, 0.5


@dataclass(frozen=True, slots=True)
class CpuLoad:
    """How busy each CPU this process may run on was while it watched them idle (0..1 per CPU)."""

    busy: Mapping[int, float]

    def free(self, below: float = FREE_BELOW) -> list[int]:
        """The CPUs other processes used less than ``below`` of."""
        return [c for c, b in sorted(self.busy.items()) if b < below]


def cpu_load(seconds: float = WATCH_S) -> CpuLoad:
    """Watch this process's CPUs for ``seconds`` (this process sleeps meanwhile: what is busy is
    other processes'), from psutil's per-CPU times."""
    try:
        mine = sorted(os.sched_getaffinity(0))
    except AttributeError:
        mine = list(range(psutil.cpu_count() or 1))
    shares = psutil.cpu_percent(interval=seconds, percpu=True)
    return CpuLoad({c: shares[c] / 100 for c in mine if c < len(shares)})


@dataclass(frozen=True, slots=True)
class ThreadChoice:
    """The threads ``--threads auto`` picked and why, in a sentence the run prints and stores."""

    threads: int
    text: str
    contended: bool


def auto_threads(most: int, load: CpuLoad) -> ThreadChoice:
    """As many threads as CPUs free of other processes, at most ``most`` (torch's default: the
    physical cores) and at least 1; each busy CPU named with its load."""
    free = load.free()
    busy = {c: b for c, b in load.busy.items() if c not in free}
    n = max(1, min(most, len(free)))
    named = ", ".join(f"CPU {c} {b:.0%}" for c, b in busy.items())
    if not busy:
        return ThreadChoice(n, f"--threads auto: {n} thread(s); all {len(load.busy)} CPUs free", False)
    where = "on the free ones" if free else "with one (none is free)"
    return ThreadChoice(n, f"--threads auto: {n} thread(s); other processes are using {len(busy)} of "
                        f"{len(load.busy)} CPUs ({named}): timing {where} (an OpenMP thread on a taken CPU "
                        "stalls every barrier for a scheduler quantum)", True)
