"""``run_suite``: every case of a suite on one device, each row stored the moment it is measured.

The order is the suite's (deterministic); ``shard=(K, N)`` takes every N-th case from the K-th;
``resume`` continues the latest run of the suite, device, shard and machine, measuring only the
rows not stored. Cases stream from the suite: nothing is materialised up front. The device is
resolved once, here, and the run's context travels whole to every worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.backends import Device, resolve_device
from harness.devices.identity import describe_machine_identity
from harness.errors import DeviceLost, SpecError
from harness.layers.dtypes import canonical_dtype
from harness.record import MODES, OMP_WAIT_POLICIES, Repeats, Status, now_iso
from harness.runner.confirm import Selector, confirm_main, journals, pairs_of, store
from harness.runner.context import CALIBRATE, RunContext, make_context
from harness.runner.launch import LAUNCHERS, Launcher, launcher, omp_env, omp_policy
from harness.runner.progress import Progress
from harness.runner.repeats import single
from harness.runner.resume import check_resumable, open_run_dir, stored_peaks, stored_threads
from harness.runner.rows import build_row
from harness.runner.tally import Tally
from harness.runner.worker import device_lost
from harness.runner.workers import confirm_in_workers, measure_in_workers
from harness.store import RunWriter
from harness.suite import Case, Suite
from harness.suite.load import BOUNDS
from harness.timing import Measurement, measure
from harness.timing.hostload import CpuSample, host_busy, sample
from harness.timing.inputs import POOL
from harness.timing.measure import gc_settled

log = logging.getLogger(__name__)

#: Status of a case that repeats an earlier case of the same run (same case_id): not stored twice.
DUPLICATE = "duplicate"
#: Worker processes per case when neither the caller nor the suite says (docs/measuring.md, "Stability").
DEFAULT_PROCESSES = 1
MAX_PROCESSES = BOUNDS["processes"][1]       # the suite key's bound


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run did: where it wrote, how many rows of each status, whether it was interrupted."""

    run_id: str
    run_dir: Path
    parquet: Path
    statuses: dict[str, int]
    already_done: int
    interrupted: bool
    seconds: float
    machine_id: str = ""
    #: Interleaved timings stored for candidate findings (pairs x processes; ``harness.runner.confirm``).
    confirmed: int = 0


def work_items(suite: Suite, dtypes: Sequence[str] | None, shard: tuple[int, int],
               device_type: str | None = None) -> Iterator[Case]:
    """The cases of this shard, in the suite's deterministic order (every N-th, from the K-th)."""
    k, n = shard
    for i, case in enumerate(suite.cases(dtypes, device_type)):
        if i % n == k - 1:
            yield case


def run_suite(suite: Suite, *, device: str | Device = "cpu", dtypes: list[str] | None = None,
              out: str | Path = "results", resume: bool = False, shard: tuple[int, int] = (1, 1),
              threads: int | str | None = None, measure_fn: Callable[..., Measurement] = measure,
              progress: bool | None = None, run_id: str | None = None, mode: str | None = None,
              calibrate: str = "never", ceilings: str | Path | None = None, profile: bool = True,
              processes: int | None = None, omp_wait: str | None = None,
              worker_start: str = "fork-server", workers: Launcher | None = None,
              confirm: Selector | None = None) -> RunSummary:
    """Run every case of ``suite`` in this shard on ``device``; store each row as it comes.

    Args:
        suite: a loaded suite (``harness.suite.load_suite``).
        device: ``cpu`` or ``cuda[:N]`` (resolved once here), or a ``Device`` already resolved.
        dtypes: override the suite's dtypes (``["fp32", "bf16"]``).
        out: the results folder; the run writes ``<out>/<suite>-<device type>-<UTC time>/``.
        resume: continue the latest run of this suite, device and shard (same machine), measuring
            only missing rows.
        shard: (K, N): take every N-th case starting at the K-th.
        threads: CPU threads for timing (default: the suite's, else torch's); ``auto``: where the
            suite sets none, as many as CPUs free of other processes now (a resumed run: its own).
        measure_fn: the timer (tests inject a fake).
        progress: a tqdm bar (default: when stderr is a terminal), else one log line per row.
        mode: timing mode, ``hot``, ``cold`` (L2 flushed), ``graph`` or ``auto`` (graph for calls
            under 20 us where the backend has graphs, else hot; default: the suite's).
        calibrate: measured ceilings: ``never`` (use what is stored), ``missing`` (measure the
            dtypes not yet calibrated), ``always``.
        ceilings: the ceilings store (default ``harness.ceilings.calibrate.default_store()``).
        profile: record what ran (one profiled call per case).
        processes: measure each case in this many fresh worker processes, one after another, each
            taking the cases in a different order (default: the suite's ``processes``, else
            ``DEFAULT_PROCESSES``). ``measure_fn`` must then be importable (a module-level function).
        omp_wait: ``active`` or ``passive``: OMP_WAIT_POLICY in the workers (default: the suite's
            ``omp_wait``, else the environment as it is); setting it measures in a worker even for
            one process.
        worker_start: how workers start: ``fork-server`` (forked from one preloaded interpreter,
            milliseconds each) or ``spawn`` (a fresh interpreter each, seconds).
        workers: a launcher the caller already started (``harness.runner.launch.launcher``, with the
            environment ``omp_env(omp_wait)`` gives), used when the run measures in workers and
            closed at its end; a command starts one before importing torch, so that the fork
            server imports torch on another core meanwhile.
        confirm: names the candidate findings of the stored run (pairs of case ids: slow, fast) to
            time interleaved in each of the run's processes once every row is stored
            (``harness.runner.confirm``); ``None``: none.

    Returns:
        A ``RunSummary``. Ctrl-C stops after storing what is done (``interrupted=True``).
    """
    start = time.time()
    set_up = sample()
    device = resolve_device(device)
    dtypes = [canonical_dtype(d, "--dtype") for d in dtypes] if dtypes else None
    mode = mode or suite.mode
    _check_choice("--mode", mode, MODES)
    _check_choice("--calibrate", calibrate, CALIBRATE)
    _check_choice("--worker-start", worker_start, LAUNCHERS)
    repeats = resolve_repeats(suite, processes, omp_wait)
    if not repeats.in_workers and workers is not None:
        workers.close()
        workers = None
    elif repeats.in_workers and workers is None:
        workers = launcher(worker_start, omp_env(repeats.omp_wait))
    try:        # the fork server imports torch while the context is resolved
        out = Path(out)
        machine_id = describe_machine_identity().machine_id
        run_dir, resumed = open_run_dir(suite, device.type, out, resume, shard, run_id, start, machine_id)
        dts = list(dtypes or dict.fromkeys(d for s in suite.sweeps for d in s.dtypes))
        if resumed and threads == "auto":
            threads = stored_threads(run_dir, shard) or threads
        with _policy(repeats.omp_wait):       # the run's metadata and settings_id say what the workers get
            ctx = make_context(suite, device, dts, threads, mode, shard, run_dir.name, calibrate, ceilings,
                               settle=workers.settle if workers is not None else None)
        if resumed:
            check_resumable(run_dir, ctx)
            ctx = ctx.with_peaks(stored_peaks(run_dir, shard) or ctx.peaks)
        job = Job(dtypes, measure_fn, profile, repeats, start, set_up)
        summary = _run(ctx, run_dir, job, progress, workers)
        if confirm is None or summary.interrupted:
            return summary
        return _confirm(ctx, run_dir, job, workers, confirm, summary)
    finally:
        if workers is not None:
            workers.close()


def _check_choice(flag: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise SpecError(flag, value, "one of " + ", ".join(choices))


@contextlib.contextmanager
def _policy(omp_wait: str | None) -> Iterator[None]:
    """OMP_WAIT_POLICY as the workers will have it, while the run's context is described."""
    if omp_wait is None:
        yield
        return
    old = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = omp_policy(omp_wait)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
        else:
            os.environ["OMP_WAIT_POLICY"] = old


def resolve_repeats(suite: Suite, processes: int | None, omp_wait: str | None) -> Repeats:
    """The caller's processes / OpenMP policy, else the suite's, else the defaults; validated."""
    n = processes if processes is not None else getattr(suite, "processes", None) or DEFAULT_PROCESSES
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PROCESSES:
        raise SpecError("--processes", n, f"an integer from 1 to {MAX_PROCESSES}")
    wait = omp_wait if omp_wait is not None else getattr(suite, "omp_wait", None)
    if wait is not None and wait not in OMP_WAIT_POLICIES:
        raise SpecError("--omp-wait", wait, "active or passive")
    return Repeats(processes=n, omp_wait=wait)


@dataclass(frozen=True, slots=True)
class Job:
    """What ``run_suite`` asked of the measuring part of a run."""

    dtypes: list[str] | None
    measure_fn: Callable[..., Measurement]
    profile: bool
    repeats: Repeats
    start: float
    set_up: CpuSample


def _load_avg() -> tuple[float, ...] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def _busy_percent(since: CpuSample) -> float | None:
    """How busy (percent of the machine's CPU capacity) other processes kept it since ``since``."""
    busy = host_busy(since, sample())
    return None if busy is None else round(100 * busy, 1)


def _run(ctx: RunContext, run_dir: Path, job: Job, progress: bool | None, workers: Launcher | None) -> RunSummary:
    meta = ctx.metadata(job.dtypes, job.start, sys.argv, job.repeats, _load_avg())
    writer = RunWriter(run_dir, ctx.shard, meta)
    tally = Tally()
    try:
        done = writer.done_ids()
    except Exception:
        writer.close()
        raise
    total = ctx.suite.count(job.dtypes)
    total = (total - ctx.shard[0]) // ctx.shard[1] + 1 if total >= ctx.shard[0] else 0
    bar = Progress(max(0, total - len(done)), f"{ctx.suite.name} on {ctx.device}", progress, suite=ctx.suite,
                   processes=job.repeats.processes if job.repeats.in_workers else 1)
    interrupted = False
    try:
        cases = _new_cases(ctx, job.dtypes, done, tally)
        with gc_settled():
            if workers is not None:
                measure_in_workers(ctx, run_dir, cases, workers, job.measure_fn, job.profile, job.repeats,
                                   writer, tally, bar, done)
            else:
                _serially(ctx, cases, job, writer, tally, bar)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        POOL.clear()
        bar.close()
        parquet = writer.finish(finished=now_iso(), interrupted=interrupted, busy_percent=_busy_percent(job.set_up),
                                rows_this_session=sum(v for k, v in tally.statuses.items() if k != DUPLICATE),
                                measuring_s=round(tally.measuring_s, 3), wall_s=round(time.time() - job.start, 3))
    return RunSummary(run_id=ctx.run_id, run_dir=run_dir, parquet=parquet, statuses=dict(tally.statuses),
                      already_done=len(done), interrupted=interrupted, seconds=time.time() - job.start,
                      machine_id=ctx.machine.machine_id)


def _confirm(ctx: RunContext, run_dir: Path, job: Job, workers: Launcher | None, select: Selector,
             summary: RunSummary) -> RunSummary:
    """Time the selected candidate pairs interleaved in the run's processes and store them; Ctrl-C
    stops it (the findings then stand unconfirmed) and marks the run interrupted."""
    try:
        pairs = pairs_of(select(run_dir), work_items(ctx.suite, job.dtypes, ctx.shard, ctx.device.type))
        if not pairs:
            return summary
        log.info("timing %d candidate finding(s) interleaved", len(pairs))
        if workers is not None:
            n = confirm_in_workers(ctx, run_dir, pairs, workers, job.measure_fn, job.repeats)
        else:
            paths = journals(ctx, run_dir, 1)
            confirm_main(ctx, pairs, 0, str(paths[0]))
            n = store(ctx, run_dir, paths)
    except KeyboardInterrupt:
        return dataclasses.replace(summary, interrupted=True)
    return dataclasses.replace(summary, confirmed=n, seconds=time.time() - job.start)


def _serially(ctx: RunContext, cases: Iterator[Case], job: Job, writer: RunWriter, tally: Tally,
              bar: Progress) -> None:
    """Measure ``cases`` in this process, storing each row (with its host load) as it comes. After an
    error row whose device no longer answers (a sticky CUDA error), stop with ``DeviceLost``: the
    rows are stored, and ``--resume`` continues in a fresh process (workers start a fresh one
    themselves: ``harness.runner.worker``)."""
    for case in cases:
        before = sample()
        row = build_row(case, ctx, job.measure_fn, job.profile)
        row = single(row, host_busy(before, sample()))
        writer.append(row)
        tally.stored(row)
        bar.update(row)
        if row.status == Status.ERROR and device_lost(ctx):
            raise DeviceLost(f"{ctx.device} no longer answers after the error of case {case.case_id} "
                             f"({row.health.error}): the rows measured are stored; `layerbench run "
                             f"{ctx.suite.name} --resume` continues in a fresh process")


def _new_cases(ctx: RunContext, dtypes: list[str] | None, done: set[str], tally: Tally) -> Iterator[Case]:
    """The cases of this shard not stored yet; a repeated case is counted as ``duplicate`` once."""
    seen: set[str] = set()
    for case in work_items(ctx.suite, dtypes, ctx.shard, ctx.device.type):
        rid = ctx.row_id(case.case_id)
        if rid in seen:
            tally.statuses[DUPLICATE] += 1
            log.warning("case %s (%s %s) repeats an earlier case of this run: measured and stored once",
                        case.case_id, case.family, case.layer)
            continue
        seen.add(rid)
        if rid not in done:
            yield case


__all__ = ["run_suite", "RunSummary", "work_items", "resolve_repeats", "DUPLICATE", "DEFAULT_PROCESSES"]
