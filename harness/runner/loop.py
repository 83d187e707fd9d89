"""``run_suite``: every case of a suite on one device, each row stored the moment it is measured.

The order is the suite's (deterministic); ``shard=(K, N)`` takes every N-th case from the K-th;
``resume`` continues the latest run of the suite, device, shard and machine, measuring only the
rows not stored. Cases stream from the suite: nothing is materialised up front.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.dtypes import parse_dtype
from harness.errors import SpecError
from harness.record import Peaks
from harness.runner.context import CALIBRATE, RunContext, make_context, row_id, run_metadata
from harness.runner.hostload import CpuSample, host_busy, sample
from harness.runner.progress import Progress
from harness.runner.repeats import merge, single
from harness.runner.rows import build_row, failed
from harness.runner.workers import (
    OMP_WAIT,
    WorkerJob,
    blocks,
    died,
    iter_complete,
    journal_path,
    omp_env,
    order_for,
    prune,
    run_pass,
)
from harness.store import RunWriter, StoreError, new_run_dir, read_metadata, read_run_meta, run_path, shard_label
from harness.suite import Case, Suite
from harness.suite.load import BOUNDS
from harness.timing import Measurement, measure
from harness.timing.inputs import POOL
from harness.timing.measure import MODES, gc_settled

log = logging.getLogger(__name__)

#: Status of a case that repeats an earlier case of the same run (same case_id): not stored twice.
DUPLICATE = "duplicate"
#: Worker processes per case when neither the caller nor the suite says (README, "Stability").
DEFAULT_PROCESSES = 1
MAX_PROCESSES = BOUNDS["processes"][1]       # the suite key's bound


@dataclass(frozen=True, slots=True)
class Repeats:
    """How a run repeats its measurements: ``processes`` fresh workers per case (1 with no
    ``omp_wait``: measured in this process) and the OpenMP wait policy set in the workers."""

    processes: int = 1
    omp_wait: str | None = None

    @property
    def in_workers(self) -> bool:
        return self.processes > 1 or self.omp_wait is not None


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


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 1 <= K <= N <= 10000."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SpecError("--shard", text, "K/N with integers, e.g. 2/4") from None
    if not 1 <= k <= n <= 10_000:
        raise SpecError("--shard", text, "1 <= K <= N <= 10000")
    return k, n


def work_items(suite: Suite, dtypes: Sequence[str] | None, shard: tuple[int, int],
               device: str | None = None) -> Iterator[Case]:
    """The cases of this shard, in the suite's deterministic order (every N-th, from the K-th)."""
    k, n = shard
    for i, case in enumerate(suite.cases(dtypes, device)):
        if i % n == k - 1:
            yield case


def _find_run(out: Path, suite: str, device_type: str, shard: tuple[int, int],
              machine_id: str | None = None) -> Path | None:
    """The latest run directory of this suite and device type with this shard's metadata, started
    by this machine (``machine_id``; another machine's run is passed over, never resumed)."""
    for d in sorted(out.glob(f"{suite}-{device_type}-*"), key=lambda p: p.name, reverse=True):
        stored = read_run_meta(d / f"run-{shard_label(shard)}.json") if d.is_dir() else {}
        if stored.get("suite") != suite:      # no metadata, or `a` would resume `a-cpu-x`
            continue
        if machine_id is not None and stored.get("machine_id") not in (None, machine_id):
            continue
        return d
    return None


def _machine_id() -> str:
    from harness.devices.identity import describe_machine_identity
    return describe_machine_identity().machine_id


def _check_resumable(run_dir: Path, ctx: RunContext) -> None:
    """A run is resumed only by the machine and device that started it: rows never mix machines."""
    parts = list(run_dir.glob("part-*.parquet"))
    metas = [read_metadata(p) for p in parts] + [read_run_meta(p) for p in run_dir.glob("run-*.json")]
    for meta in metas:
        mid, dev = meta.get("machine_id"), meta.get("device")
        if mid is not None and mid != ctx.machine.machine_id:
            raise StoreError(f"{run_dir}: started on machine {mid} ({meta.get('machine_name')}); this is "
                             f"{ctx.machine.machine_id} ({ctx.machine.name}): start a new run instead of --resume")
        if mid is None and meta.get("run_id"):
            raise StoreError(f"{run_dir}: an older run (schema v1, no machine identity): start a new run")
        if dev is not None and dev != ctx.device:
            raise StoreError(f"{run_dir}: measured on {dev}, not {ctx.device}: start a new run")


def _stored_peaks(run_dir: Path, shard: tuple[int, int]) -> dict[str, Peaks] | None:
    meta = read_run_meta(run_dir / f"run-{shard_label(shard)}.json")
    try:
        return {d: Peaks(**p) for d, p in (meta.get("peaks") or {}).items()} or None
    except (TypeError, AttributeError):
        return None


def _open_run_dir(suite: Suite, device_type: str, out: Path, resume: bool, shard: tuple[int, int],
                  run_id: str | None, start: float) -> tuple[Path, bool]:
    """(run directory, whether it continues an earlier run)."""
    given = run_path(out, run_id) if run_id is not None else None      # SpecError for an unsafe id
    if resume:
        found = (given if given is not None and given.is_dir() else
                 None if given is not None else _find_run(out, suite.name, device_type, shard, _machine_id()))
        if found is not None:
            return found, True
        log.warning("no earlier run of %s on %s to resume: starting a new one", suite.name, device_type)
    if given is not None and given.is_dir() and shard != (1, 1):
        return given, False                   # shards of one run share its directory
    default = f"{suite.name}-{device_type}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(start))}"
    return new_run_dir(out, run_id if run_id is not None else default), False


def run_suite(suite: Suite, *, device: str = "cpu", dtypes: list[str] | None = None, out: str | Path = "results",
              resume: bool = False, shard: tuple[int, int] = (1, 1), threads: int | None = None,
              measure_fn: Callable[..., Measurement] = measure, progress: bool | None = None,
              run_id: str | None = None, mode: str | None = None, calibrate: str = "never",
              ceilings: str | Path | None = None, profile: bool = True, processes: int | None = None,
              omp_wait: str | None = None) -> RunSummary:
    """Run every case of ``suite`` in this shard on ``device``; store each row as it comes.

    Args:
        suite: a loaded suite (``harness.suite.load_suite``).
        device: ``cpu`` or ``cuda[:N]``.
        dtypes: override the suite's dtypes (``["fp32", "bf16"]``).
        out: the results folder; the run writes ``<out>/<suite>-<device type>-<UTC time>/``.
        resume: continue the latest run of this suite, device and shard (same machine), measuring
            only missing rows.
        shard: (K, N): take every N-th case starting at the K-th.
        threads: CPU threads for timing (default: the suite's, else torch's).
        measure_fn: the timer (tests inject a fake).
        progress: a tqdm bar (default: when stderr is a terminal), else one log line per row.
        mode: timing mode, ``hot``, ``cold`` (L2 flushed), ``graph`` or ``auto`` (graph for calls
            under 20 us where the backend has graphs, else hot; default: the suite's).
        calibrate: measured ceilings: ``never`` (use what is stored), ``missing`` (measure the
            dtypes not yet calibrated), ``always``.
        ceilings: the ceilings store (default ``harness.calibrate.default_store()``).
        profile: record what ran (one profiled call per case).
        processes: measure each case in this many fresh worker processes, one after another, each
            taking the cases in a different order (default: the suite's ``processes``, else
            ``DEFAULT_PROCESSES``). ``measure_fn`` must then be importable (a module-level function).
        omp_wait: ``active`` or ``passive``: OMP_WAIT_POLICY in the workers (default: the suite's
            ``omp_wait``, else the environment as it is); setting it measures in a worker even for
            one process.

    Returns:
        A ``RunSummary``. Ctrl-C stops after storing what is done (``interrupted=True``).
    """
    from harness.backends import get_backend
    backend = get_backend(device)
    for d in dtypes or ():
        parse_dtype(d, "--dtype")
    mode = mode or suite.mode
    if mode not in MODES:
        raise SpecError("--mode", mode, "one of " + ", ".join(MODES))
    if calibrate not in CALIBRATE:
        raise SpecError("--calibrate", calibrate, "one of " + ", ".join(CALIBRATE))
    backend.resolve(device)
    set_up = sample()
    repeats = resolve_repeats(suite, processes, omp_wait)
    start = time.time()
    out = Path(out)
    run_dir, resumed = _open_run_dir(suite, backend.type, out, resume, shard, run_id, start)
    dts = list(dtypes or dict.fromkeys(d for s in suite.sweeps for d in s.dtypes))
    with _policy(repeats.omp_wait):       # the run's metadata and settings_id say what the workers get
        ctx = make_context(suite, device, dts, threads, mode, shard, run_dir.name, calibrate, ceilings)
    if resumed:
        _check_resumable(run_dir, ctx)
        stored = _stored_peaks(run_dir, shard)
        if stored:
            ctx = _with_peaks(ctx, stored)
    return _run(ctx, run_dir, dtypes, measure_fn, progress, profile, start, repeats, dts, set_up)


@contextlib.contextmanager
def _policy(omp_wait: str | None) -> Iterator[None]:
    """OMP_WAIT_POLICY as the workers will have it, while the run's context is described."""
    import os
    if omp_wait is None:
        yield
        return
    old = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = OMP_WAIT[omp_wait]
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
    if wait is not None and wait not in OMP_WAIT:
        raise SpecError("--omp-wait", wait, "active or passive")
    return Repeats(processes=n, omp_wait=wait)


def _with_peaks(ctx: RunContext, peaks: dict[str, Peaks]) -> RunContext:
    import dataclasses
    return dataclasses.replace(ctx, peaks=peaks)


def _load_avg() -> Any:
    import os
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def _busy_percent(since: CpuSample) -> float | None:
    """How busy (percent of the machine's CPU capacity) other processes kept it since ``since``."""
    busy = host_busy(since, sample())
    return None if busy is None else round(100 * busy, 1)


def _run(ctx: RunContext, run_dir: Path, dtypes: list[str] | None, measure_fn: Callable[..., Measurement],
         progress: bool | None, profile: bool, start: float, repeats: Repeats = Repeats(),
         all_dtypes: Sequence[str] = (), set_up: CpuSample | None = None) -> RunSummary:
    set_up = set_up or sample()
    meta = run_metadata(ctx, dtypes, start, sys.argv, _load_avg(), None)   # busy_percent: at the end
    meta["repeats"] = {"processes": repeats.processes, "omp_wait": repeats.omp_wait,
                       "in_workers": repeats.in_workers}
    writer = RunWriter(run_dir, ctx.shard, meta)
    statuses: Counter[str] = Counter()
    try:
        done = writer.done_ids()
    except Exception:
        writer.close()
        raise
    total = ctx.suite.count(dtypes)
    total = (total - ctx.shard[0]) // ctx.shard[1] + 1 if total >= ctx.shard[0] else 0
    steps = max(0, total - len(done)) * (repeats.processes if repeats.in_workers else 1)
    bar = Progress(steps, f"{ctx.suite.name} on {ctx.device}", progress, suite=ctx.suite)
    interrupted = False
    try:
        cases = _new_cases(ctx, dtypes, done, statuses)
        with gc_settled():
            if repeats.in_workers:
                job = WorkerJob(suite=ctx.suite, device=ctx.device, dtypes=tuple(all_dtypes),
                                case_dtypes=tuple(dtypes) if dtypes else None, threads=ctx.threads, mode=ctx.mode,
                                shard=ctx.shard, run_id=ctx.run_id, peaks=dict(ctx.peaks), measure_fn=measure_fn,
                                profile=profile, order=(), journal="")
                _in_workers(ctx, run_dir, cases, job, repeats, writer, statuses, bar, done)
            else:
                _serially(ctx, cases, measure_fn, profile, writer, statuses, bar)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        POOL.clear()
        bar.close()
        parquet = writer.finish(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), interrupted=interrupted,
                                busy_percent=_busy_percent(set_up),
                                rows_this_session=sum(v for k, v in statuses.items() if k != DUPLICATE))
    return RunSummary(run_id=ctx.run_id, run_dir=run_dir, parquet=parquet, statuses=dict(statuses),
                      already_done=len(done), interrupted=interrupted, seconds=time.time() - start,
                      machine_id=ctx.machine.machine_id)


def _serially(ctx: RunContext, cases: Iterator[Case], measure_fn: Callable[..., Measurement], profile: bool,
              writer: RunWriter, statuses: Counter[str], bar: Progress) -> None:
    """Measure ``cases`` in this process, storing each row (with its host load) as it comes."""
    llc = ctx.backend.last_level_cache(ctx.device)
    for case in cases:
        before = sample()
        row = build_row(case, ctx, measure_fn, llc, profile)
        row = single(row, host_busy(before, sample()))
        writer.append(row)
        statuses[str(row.status)] += 1
        bar.update(row)


def _new_cases(ctx: RunContext, dtypes: list[str] | None, done: set[str], statuses: Counter[str]) -> Iterator[Case]:
    """The cases of this shard not stored yet; a repeated case is counted as ``duplicate`` once."""
    seen: set[str] = set()
    for case in work_items(ctx.suite, dtypes, ctx.shard, ctx.backend.type):
        rid = row_id(ctx.machine.machine_id, ctx.device, case.case_id)
        if rid in seen:
            statuses[DUPLICATE] += 1
            log.warning("case %s (%s %s) repeats an earlier case of this run: measured and stored once",
                        case.case_id, case.family, case.layer)
            continue
        seen.add(rid)
        if rid not in done:
            yield case


def _in_workers(ctx: RunContext, run_dir: Path, cases: Iterable[Case], job: WorkerJob, repeats: Repeats,
                writer: RunWriter, statuses: Counter[str], bar: Progress, done: set[str]) -> None:
    """Measure ``cases`` block by block (``workers.blocks``: 64 cases, doubling up to 4,096), each
    block in ``repeats.processes`` passes of fresh workers and its rows stored before the next
    block starts: the first rows are stored within a block's time and memory holds one block,
    however long the suite. Once a block is stored, its journals keep only the records of cases
    neither in it nor stored (``done``: row ids), which a later block uses (a resume's first block
    need not hold every case the interrupted one had journaled)."""
    for block in blocks(cases):
        pending = {c.case_id: c for c in block}
        if _block_in_workers(ctx, run_dir, pending, job, repeats, writer, statuses, bar):
            for path in _journal_paths(ctx, run_dir, repeats):
                prune(path, lambda cid, block=pending: cid not in block and
                      row_id(ctx.machine.machine_id, ctx.device, cid) not in done)


def _journal_paths(ctx: RunContext, run_dir: Path, repeats: Repeats) -> list[Path]:
    """The worker journals of this shard and OpenMP policy, one per pass (named by the policy too: a
    resume under another policy never merges old records)."""
    tag = f"{shard_label(ctx.shard)}-{repeats.omp_wait or 'env'}"
    return [journal_path(run_dir, tag, k) for k in range(repeats.processes)]


def _block_in_workers(ctx: RunContext, run_dir: Path, pending: dict[str, Case], job: WorkerJob, repeats: Repeats,
                      writer: RunWriter, statuses: Counter[str], bar: Progress) -> bool:
    """Measure ``pending`` in ``repeats.processes`` passes of fresh workers; store each case's merged
    row once every pass has measured it (also when interrupted: complete cases are kept). True
    when every row of the block is stored."""
    import dataclasses

    from harness.record import Row, Status

    ids = list(pending)
    journals = _journal_paths(ctx, run_dir, repeats)
    env = omp_env(repeats.omp_wait)
    job = dataclasses.replace(job, cases=tuple(pending.values()))

    def failed_row(cid: str) -> Row:
        case = pending[cid]
        return Row(key=ctx.key(case), case=ctx.case_fields(case), health=failed(Status.ERROR, ""),
                   peaks=ctx.peaks_for(case, ctx.backend.settings(ctx.device)), provenance=ctx.provenance())

    def on_record(where: str) -> Callable[[dict], None]:
        return lambda rec: bar.update(Row.from_record(rec), where)

    stored = 0
    try:
        for k, path in enumerate(journals):
            run_pass(dataclasses.replace(job, order=tuple(order_for(ids, k)), journal=str(path)), env,
                     lambda cid, code: died(failed_row, cid, code),
                     on_record(f"process {k + 1}/{repeats.processes}"))
    finally:
        for _, recs in iter_complete(journals, ids):
            row = merge(recs)
            writer.append(row)
            statuses[str(row.status)] += 1
            stored += 1
    return stored == len(ids)
