"""Cases measured in fresh worker processes (``--processes N``), as pyperf and asv do.

A number that holds in one process may not hold in the next (OpenMP threads that sleep between
parallel regions, allocator and cache state, the kernels a library picked): each case is measured
in N fresh processes, one after another (never side by side: they would contend), each taking the
cases in a different order (the first in the suite's order, the others in a seeded shuffle).

Cases go through in blocks (``blocks``: 64, then doubling up to 4,096): each block is measured by
the N passes and its rows stored before the next block starts, so a long suite stores its first
rows early and the parent holds one block, never the whole suite; a block's cases travel in its job.
Once a block is stored its journals keep only the records of cases not stored yet (``prune``).

Each worker is ``python -m harness.runner.worker_main JOB`` with the job pickled to a file; it writes
one JSON line per case to its journal (``proc-<shard>-<omp policy or env>-p<k>.jsonl`` in the run
directory, fsync'd; ``harness.journal``):
``{"start": case_id}`` before measuring and ``{"record": ...}`` after. The parent follows the journal
as it grows (``WorkerJournal``: each poll reads only what was appended since the last one, a torn
last line not before its newline arrives). A worker that dies leaves the
case it was measuring as an ``error`` row of that process ("worker process died ...") and the pass
goes on with a new worker. The parent merges the N records of a case into one row (``merge``):
the statistics of the process whose median is the (lower) median, every process's median, their
spread, the highest host load, and the stability verdict (``harness.timing.stability``).
"""

from __future__ import annotations

import itertools
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.journal import JournalTail, append, cut_torn_line, dumps
from harness.record import Peaks, Row, Status
from harness.suite.load import OMP_WAIT as SUITE_OMP_WAIT

#: Seconds between reads of a running worker's journal (progress).
POLL_S = 0.25
#: Policies ``--omp-wait`` accepts (the suite key's, ``harness.suite.load.OMP_WAIT``), as OMP_WAIT_POLICY spells them.
OMP_WAIT = {p: p.upper() for p in SUITE_OMP_WAIT}


@dataclass(frozen=True, slots=True)
class WorkerJob:
    """Everything one worker needs: the suite and run settings, the peaks the parent resolved, and
    the case ids to measure in order."""

    suite: Any
    device: str
    dtypes: tuple[str, ...]
    case_dtypes: tuple[str, ...] | None
    threads: int | None
    mode: str
    shard: tuple[int, int]
    run_id: str
    peaks: Mapping[str, Peaks]
    measure_fn: Callable[..., Any]
    profile: bool
    order: tuple[str, ...]
    journal: str
    parent_pid: int = 0           # the worker stops when its parent is gone (0: no check)
    #: The cases of ``order`` themselves (``harness.suite.Case``); empty: the worker expands the suite
    #: to find them (a block's cases travel with it, so no worker expands a million-case suite).
    cases: tuple[Any, ...] = ()


#: Cases in a run's first block of worker passes; each next block doubles, up to ``MAX_BLOCK``.
FIRST_BLOCK = 64
MAX_BLOCK = 4096


def blocks(items: Iterable[Any], first: int | None = None, most: int | None = None) -> Iterator[list[Any]]:
    """``items`` in lists of ``first``, ``2 first``, ... up to ``most`` items (default ``FIRST_BLOCK``
    and ``MAX_BLOCK``), drawn as they come (one block and a look-ahead of ``first`` in memory); a
    rest shorter than ``first`` joins the block before it (a short last block would cost as many
    worker starts as a full one)."""
    first = first or FIRST_BLOCK
    most = most or MAX_BLOCK
    it, size = iter(items), first
    block = list(itertools.islice(it, size))
    while block:
        ahead = list(itertools.islice(it, first))
        if len(ahead) < first:
            yield block + ahead
            return
        yield block
        size = min(2 * size, most)
        block = ahead + list(itertools.islice(it, max(size - len(ahead), 0)))


def order_for(case_ids: Sequence[str], process: int) -> list[str]:
    """Process 0 takes the suite's order; process k a shuffle seeded by k (reproducible)."""
    out = list(case_ids)
    if process:
        random.Random(process).shuffle(out)
    return out


def journal_path(run_dir: Path, shard_label: str, process: int) -> Path:
    return run_dir / f"proc-{shard_label}-p{process}.jsonl"


class WorkerJournal:
    """A worker journal read as it grows (``harness.journal.JournalTail``): each ``update()`` reads
    only what was appended since the last one, leaving a torn last line until its newline arrives.
    ``records``: the record of each case by case id (the last one wins); ``started``: the case ids
    started, in order."""

    def __init__(self, path: str | Path) -> None:
        self.tail = JournalTail(path)
        self.records: dict[str, dict[str, Any]] = {}
        self.started: list[str] = []

    def update(self) -> list[dict[str, Any]]:
        """Read what was appended since the last update; returns the records of cases that had none."""
        new = []
        for item in self.tail.read():
            if not isinstance(item, dict):
                continue
            if "start" in item:
                self.started.append(item["start"])
            elif isinstance(item.get("record"), dict) and "case_id" in item["record"]:
                rec = item["record"]
                if rec["case_id"] not in self.records:
                    new.append(rec)
                self.records[rec["case_id"]] = rec
        return new


def read_journal(path: str | Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(records by case id, case ids started) from a worker journal; a torn last line is ignored."""
    journal = WorkerJournal(path)
    journal.update()
    return journal.records, journal.started


def omp_env(omp_wait: str | None) -> dict[str, str]:
    """The environment of a worker: this one, with OMP_WAIT_POLICY set when asked, and Python's
    path so that the job's functions import."""
    env = dict(os.environ)
    if omp_wait is not None:
        env["OMP_WAIT_POLICY"] = OMP_WAIT[omp_wait]
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def run_worker(job: WorkerJob, env: Mapping[str, str], on_record: Callable[[dict[str, Any]], None],
               journal: WorkerJournal | None = None) -> int:
    """Start one worker for ``job`` and wait for it, passing each record it stores to ``on_record``
    as it comes (a poll every ``POLL_S`` reads only what the worker appended since the last one).
    ``journal``: the reader of ``job.journal`` to go on with (default: a new one; either way the
    records already there are not passed on). Returns the worker's exit code."""
    import dataclasses
    job = dataclasses.replace(job, parent_pid=os.getpid())
    if journal is None:
        journal = WorkerJournal(job.journal)
    journal.update()
    with tempfile.NamedTemporaryFile("wb", suffix=".job", delete=False) as f:
        name = f.name
    try:
        with open(name, "wb") as fh:
            pickle.dump(job, fh)
        proc = subprocess.Popen([sys.executable, "-m", "harness.runner.worker_main", name], env=dict(env),
                                stdin=subprocess.DEVNULL)
        try:
            while proc.poll() is None:
                time.sleep(POLL_S)
                _report(journal, on_record)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        _report(journal, on_record)
        return proc.returncode
    finally:
        Path(name).unlink(missing_ok=True)        # the worker removes it once loaded


def _report(journal: WorkerJournal, on_record: Callable[[dict[str, Any]], None]) -> None:
    for rec in journal.update():
        on_record(rec)


def worker_main(job: WorkerJob) -> None:
    """Inside the worker: measure ``job.order`` and journal each record (host load sampled around it)."""
    import dataclasses

    from harness.runner.context import make_context
    from harness.runner.hostload import host_busy, sample
    from harness.runner.repeats import single
    from harness.runner.rows import build_row
    from harness.timing.measure import gc_settled

    _die_with_parent(job.parent_pid)
    ctx = make_context(job.suite, job.device, list(job.dtypes), job.threads, job.mode, job.shard, job.run_id)
    ctx = dataclasses.replace(ctx, peaks=dict(job.peaks))
    cases = _job_cases(job, ctx.backend.type)
    llc = ctx.backend.last_level_cache(ctx.device)
    cut_torn_line(job.journal)                # a worker killed mid-write left half a line
    with gc_settled(), open(job.journal, "a", encoding="utf-8") as fh:
        for cid in job.order:
            if job.parent_pid and os.getppid() != job.parent_pid:
                return                        # the parent is gone: never measure beside its successor
            append(fh, {"start": cid})
            before = sample()
            row = build_row(cases[cid], ctx, job.measure_fn, llc, job.profile)
            append(fh, {"record": single(row, host_busy(before, sample())).to_record()})


def _job_cases(job: WorkerJob, device_type: str) -> dict[str, Any]:
    """The job's cases by id: those it carries, else those of the suite it names (expanded)."""
    if job.cases:
        return {c.case_id: c for c in job.cases}
    from harness.runner.loop import work_items
    wanted = set(job.order)
    dtypes = list(job.case_dtypes) if job.case_dtypes else None
    return {c.case_id: c for c in work_items(job.suite, dtypes, job.shard, device_type) if c.case_id in wanted}


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this worker when its parent dies (``PR_SET_PDEATHSIG``), so that a parent
    killed with SIGKILL never leaves a worker measuring beside a resumed run; elsewhere the check
    before each case does it."""
    if not parent_pid or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)      # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:                                                # died before prctl
        os._exit(0)


def died(case_record: Callable[[str], Row], cid: str, code: int) -> dict[str, Any]:
    """The record of a case whose worker died while measuring it."""
    row = case_record(cid)
    rec = row.to_record()
    rec.update(status=str(Status.ERROR), error=f"worker process died (exit code {code}) while measuring this case")
    return rec


def run_pass(job: WorkerJob, env: Mapping[str, str], failed_record: Callable[[str, int], dict[str, Any]],
             on_record: Callable[[dict[str, Any]], None]) -> None:
    """Measure every case of ``job.order`` not yet in its journal, starting a new worker after one
    that dies (its case becomes an ``error`` record). ``RuntimeError`` if a worker dies before
    measuring anything twice in a row."""
    journal = WorkerJournal(job.journal)
    fruitless = 0
    while True:
        journal.update()
        before, started = len(journal.records), len(journal.started)
        todo = tuple(c for c in job.order if c not in journal.records)
        if not todo:
            return
        code = run_worker(_with_order(job, todo), env, on_record, journal)
        crashed = [c for c in journal.started[started:] if c not in journal.records]
        if len(journal.records) > before or crashed:
            fruitless = 0                     # progress: a new worker takes the rest
        else:
            fruitless += 1
            if fruitless >= 2:
                raise RuntimeError(f"worker process exits with code {code} before measuring anything")
        if code == 0 or not crashed:
            continue
        cut_torn_line(job.journal)            # the dead worker may have left half a line
        with open(job.journal, "a", encoding="utf-8") as fh:
            rec = failed_record(crashed[-1], code)
            append(fh, {"record": rec})
        on_record(rec)


def _with_order(job: WorkerJob, order: tuple[str, ...]) -> WorkerJob:
    import dataclasses
    return dataclasses.replace(job, order=order)


def prune(path: Path, keep: Callable[[str], bool]) -> None:
    """Keep in a worker journal only the records of the cases ``keep`` accepts (rewritten through a
    temporary file, fsync'd, then renamed over it); remove it when none is left."""
    if not path.exists():
        return
    kept = [rec for cid, rec in read_journal(path)[0].items() if keep(cid)]
    if not kept:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(dumps({"record": rec}) for rec in kept)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def iter_complete(journals: Sequence[Path], case_ids: Sequence[str]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(case id, its record from every journal) for the cases every journal holds, in ``case_ids`` order."""
    by_proc = [read_journal(p)[0] for p in journals]
    for cid in case_ids:
        recs = [r.get(cid) for r in by_proc]
        if all(r is not None for r in recs):
            yield cid, recs  # type: ignore[misc]
