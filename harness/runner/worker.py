"""Inside a worker process: measure the cases of one job and journal each row as it comes.

A job (``WorkerJob``) carries everything: the run context its parent resolved once (device,
machine identity, peaks), the cases in the order this worker takes them, the timer and where to
journal. The worker builds nothing the parent already knows. Its journal is a rows journal
(``harness.store.journal``: one record per line, fsync'd) with a ``{"start": case_id}`` line before
each case, so that a worker that dies mid-case leaves which case killed it.

``run_job(path)`` runs one job: in a fresh interpreter (``spawn``), or in a child forked by the fork
server (``harness.runner.forkserver``).

After an ``error`` row the worker asks its device to synchronise: a sticky CUDA error (an illegal
memory access, a device-side assert) poisons the process's context and every later case would fail
with it, so the worker exits (``DEVICE_LOST``) once the row is journaled and the parent starts a
fresh one for the cases left (``harness.runner.workers.run_pass``).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.record import Status
from harness.runner.confirm import confirm_main
from harness.runner.context import RunContext
from harness.runner.repeats import single
from harness.runner.rows import build_row
from harness.store.journal import append, cut_torn_line
from harness.suite import Case
from harness.timing import heap
from harness.timing.hostload import host_busy, sample
from harness.timing.measure import gc_settled

#: Exit code of a worker whose device no longer answers (a sticky error): not a crash, its row is stored.
DEVICE_LOST = 3


@dataclass(frozen=True, slots=True)
class WorkerJob:
    """Everything one worker needs: the run context, its cases in order, the timer, the journal."""

    ctx: RunContext
    cases: tuple[Case, ...]
    measure_fn: Callable[..., Any]
    profile: bool
    journal: str
    parent_pid: int = 0           # the worker stops when its parent is gone (0: no check)
    #: (slow, fast) cases to time interleaved instead of ``cases`` (``harness.runner.confirm``)
    pairs: tuple[tuple[Case, Case], ...] = ()
    process: int = 0              # which of the run's processes this is (the interleaving's seed)
    #: cases to profile though ``profile`` is off: those the first process did not measure
    profile_also: frozenset[str] = frozenset()

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(c.case_id for c in self.cases)


def worker_main(job: WorkerJob) -> None:
    """Measure ``job.cases`` in order and journal each row (host load sampled around it); or time
    ``job.pairs`` interleaved (``harness.runner.confirm``)."""
    cut_torn_line(job.journal)                # a worker killed mid-write left half a line
    if job.pairs:
        confirm_main(job.ctx, job.pairs, job.process, job.journal)
        return
    with gc_settled(), open(job.journal, "a", encoding="utf-8") as fh:
        for case in job.cases:
            if job.parent_pid and os.getppid() != job.parent_pid:
                return                        # the parent is gone: never measure beside its successor
            append(fh, {"start": case.case_id})
            before = sample()
            row = build_row(case, job.ctx, job.measure_fn, job.profile or case.case_id in job.profile_also)
            append(fh, single(row, host_busy(before, sample())).to_record())
            if row.health.status == Status.ERROR and device_lost(job.ctx):
                raise SystemExit(DEVICE_LOST)


def device_lost(ctx: RunContext) -> bool:
    """Whether the run's device fails to synchronise: after a sticky error every call of this process
    fails with it (an ordinary error, a shape mismatch say, leaves the device answering)."""
    try:
        ctx.backend.synchronize(ctx.device)
    except Exception:
        return True
    return False


def run_job(path: str) -> None:
    """Load the job pickled at ``path`` (removing the file), stop with the parent, and run it (the
    host heap held steady from the first allocation on: ``harness.timing.heap``)."""
    heap.steady()
    try:
        fh = open(path, "rb")
    except FileNotFoundError:           # the run, interrupted between asking for this worker and its start,
        raise SystemExit(1) from None   # took its job back: nothing to run, nothing to say
    with fh:
        job = pickle.load(fh)
    os.unlink(path)
    die_with_parent(job.parent_pid)
    worker_main(job)


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this process when its parent dies (``PR_SET_PDEATHSIG``), so that a parent
    killed with SIGKILL never leaves a worker measuring beside a resumed run; elsewhere the check
    before each case does it. Exits at once when the parent is already gone."""
    if not parent_pid or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)      # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:                                                # died before prctl
        os._exit(0)

