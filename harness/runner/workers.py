"""Cases measured in fresh worker processes (``--processes N``), as pyperf and asv do: the parent's side.

A number that holds in one process may not hold in the next (OpenMP threads that sleep between
parallel regions, allocator and cache state, the kernels a library picked): each case is measured
in N fresh processes, one after another (never side by side: they would contend), each taking the
cases in a different order (the first in the suite's order, the others in a seeded shuffle).
Workers start from a fork server (``harness.runner.forkserver``) in milliseconds, or as fresh
interpreters (``spawn``).

Cases go through in blocks (``blocks``: 64, then doubling up to 4,096): each block is measured by
the N passes and its rows stored before the next block starts, so a long suite stores its first
rows early and the parent holds one block, never the whole suite; a block's cases travel in its job.
Once a block is stored its journals keep only the rows of cases not stored yet (``prune``).

A worker journals to ``proc-<shard>-<omp policy or env>-p<k>.jsonl`` in the run directory (the
store's rows-journal format, ``harness.store.journal``, with a ``{"start": case_id}`` line before
each case). The parent follows the journal as it grows (``WorkerJournal``: each poll reads only
what was appended since the last one). A worker that dies leaves the case it was measuring as an
``error`` row of that process ("worker process died ...") and the pass goes on with a new worker.
The parent merges the N rows of a case into one (``harness.runner.repeats.merge``).

A case whose processes ran beside a slow host (``repeats.host_slow`` set some aside, so fewer than N
would judge it) is measured in one more process, up to ``EXTRA_PROCESSES`` more, while that stays
so: a noisy spell of a shared host then costs time rather than verdicts. Extra passes journal to
``proc-<...>-n<N>x0.jsonl``, ``-n<N>x1`` and take only those cases, in their own shuffled order; a
failed extra process is left out of the row.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import pickle
import random
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.record import Repeats, Row, Status, shard_label
from harness.runner import confirm
from harness.runner.context import RunContext
from harness.runner.launch import Launcher, WorkerHandle
from harness.runner.progress import Progress
from harness.runner.repeats import measured, merge, short_of
from harness.runner.rows import failed
from harness.runner.tally import Tally
from harness.runner.worker import WorkerJob
from harness.store import RunWriter
from harness.store.journal import JournalTail, append, cut_torn_line, dumps, read_values
from harness.suite import Case

#: Seconds between reads of a running worker's journal (progress).
POLL_S = 0.25
#: Passes a block adds, at most, for its cases whose processes ran beside a slow host (``short_of``).
EXTRA_PROCESSES = 2
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


def order_for(items: Sequence[Any], process: int) -> list[Any]:
    """Process 0 takes the suite's order; process k a shuffle seeded by k (reproducible)."""
    out = list(items)
    if process:
        random.Random(process).shuffle(out)
    return out


def journal_path(run_dir: Path, shard_label: str, process: int, kind: str = "p") -> Path:
    """``proc-<shard and policy>-p<k>.jsonl``; an extra pass's ``...-n<N>x<k>.jsonl`` (``journal_paths``)."""
    return run_dir / f"proc-{shard_label}-{kind}{process}.jsonl"


def _is_row(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("case_id"), str) and isinstance(item.get("row_id"), str)


class WorkerJournal:
    """A worker journal read as it grows (``harness.store.journal.JournalTail``): each ``update()``
    reads only what was appended since the last one, leaving a torn last line until its newline
    arrives. ``rows``: the row of each case by case id (the last one wins); ``started``: the case
    ids started, in order."""

    def __init__(self, path: str | Path) -> None:
        self.tail = JournalTail(path)
        self.rows: dict[str, Row] = {}
        self.started: list[str] = []

    def update(self) -> list[Row]:
        """Read what was appended since the last update; returns the rows of cases that had none."""
        new = []
        for item in self.tail.read():
            if isinstance(item, dict) and isinstance(item.get("start"), str):
                self.started.append(item["start"])
            elif _is_row(item):
                row = Row.from_record(item)
                if row.key.case_id not in self.rows:
                    new.append(row)
                self.rows[row.key.case_id] = row
        return new


def read_journal(path: str | Path) -> tuple[dict[str, Row], list[str]]:
    """(rows by case id, case ids started) from a worker journal; a torn last line is ignored."""
    journal = WorkerJournal(path)
    journal.update()
    return journal.rows, journal.started


def run_worker(job: WorkerJob, start: Launcher, on_row: Callable[[Row], None], journal: WorkerJournal) -> int:
    """Start one worker for ``job`` and wait for it, passing each row it stores to ``on_row`` as it
    comes (a poll every ``POLL_S`` reads only what the worker appended since the last one). The rows
    already in ``journal`` are not passed on. Returns the worker's exit code."""
    journal.update()
    with tempfile.NamedTemporaryFile("wb", suffix=".job", delete=False) as f:
        name = f.name
    try:
        with open(name, "wb") as fh:
            pickle.dump(dataclasses.replace(job, parent_pid=start.worker_parent), fh)
        worker = start.start(name)
        code = _follow(worker, journal, on_row)
        return code
    finally:
        Path(name).unlink(missing_ok=True)        # the worker removes it once loaded


def _follow(worker: WorkerHandle, journal: WorkerJournal, on_row: Callable[[Row], None]) -> int:
    try:
        while (code := worker.poll(POLL_S)) is None:
            _report(journal, on_row)
    except BaseException:
        worker.kill()
        worker.wait()
        raise
    _report(journal, on_row)
    return code


def _report(journal: WorkerJournal, on_row: Callable[[Row], None]) -> None:
    for row in journal.update():
        on_row(row)


def died(ctx: RunContext, case: Case, code: int) -> Row:
    """The row of a case whose worker died while measuring it."""
    health = failed(Status.ERROR, f"worker process died (exit code {code}) while measuring this case")
    return Row(key=ctx.key(case), case=ctx.case_fields(case), health=health, peaks=ctx.peaks_for(case),
               provenance=ctx.provenance())


def run_pass(job: WorkerJob, start: Launcher, failed_row: Callable[[str, int], Row],
             on_row: Callable[[Row], None]) -> None:
    """Measure every case of ``job`` not yet in its journal, starting a new worker after one that
    dies (its case becomes an ``error`` row). ``RuntimeError`` if a worker dies before measuring
    anything twice in a row."""
    journal = WorkerJournal(job.journal)
    fruitless = 0
    while True:
        journal.update()
        before, started = len(journal.rows), len(journal.started)
        todo = tuple(c for c in job.cases if c.case_id not in journal.rows)
        if not todo:
            return
        code = run_worker(dataclasses.replace(job, cases=todo), start, on_row, journal)
        crashed = [c for c in journal.started[started:] if c not in journal.rows]
        if len(journal.rows) > before or crashed:
            fruitless = 0                     # progress: a new worker takes the rest
        else:
            fruitless += 1
            if fruitless >= 2:
                raise RuntimeError(f"worker process exits with code {code} before measuring anything")
        if code == 0 or not crashed:
            continue
        cut_torn_line(job.journal)            # the dead worker may have left half a line
        row = failed_row(crashed[-1], code)
        with open(job.journal, "a", encoding="utf-8") as fh:
            append(fh, row.to_record())
        on_row(row)


def prune(path: Path, keep: Callable[[str], bool]) -> None:
    """Keep in a worker journal only the rows of the cases ``keep`` accepts (rewritten through a
    temporary file, fsync'd, then renamed over it); remove it when none is left."""
    if not path.exists():
        return
    kept = [item for item in read_values(path) if _is_row(item) and keep(item["case_id"])]
    last = {item["case_id"]: item for item in kept}                 # the last row of a case wins
    if not last:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(dumps(item) for item in last.values())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def iter_complete(journals: Sequence[Path], case_ids: Sequence[str]) -> Iterator[tuple[str, list[Row]]]:
    """(case id, its row from every journal) for the cases every journal holds, in ``case_ids`` order."""
    by_proc = [read_journal(p)[0] for p in journals]
    for cid in case_ids:
        rows = [r.get(cid) for r in by_proc]
        if all(r is not None for r in rows):
            yield cid, rows  # type: ignore[misc]


def with_extras(complete: dict[str, list[Row]], extra: Sequence[Path], asked: int
                ) -> Iterator[tuple[str, list[Row]]]:
    """Each case of ``complete`` (its ``asked`` base rows: ``iter_complete``) with its extra passes'
    rows after them, in pass order, while the case is still ``short_of`` its processes: the rule
    that chose it for each extra pass, so a row left in an extra journal by another start of the run
    never joins a case that did not need it. A failed extra process is left out (the base
    processes judge the case; it cost time)."""
    by_extra = [read_journal(p)[0] if p.exists() else {} for p in extra]
    for cid, base in complete.items():
        rows = list(base)
        for got in by_extra:
            if not short_of(rows, asked):
                break
            row = got.get(cid)
            if row is not None and measured(row):
                rows.append(row)
        yield cid, rows


def journal_paths(ctx: RunContext, run_dir: Path, repeats: Repeats, extra: bool = False) -> list[Path]:
    """The worker journals of this shard and OpenMP policy, one per pass (named by the policy too: a
    resume under another policy never merges old rows); ``extra``: those of the extra passes."""
    tag = f"{shard_label(ctx.shard)}-{repeats.omp_wait or 'env'}"
    if extra:           # named by N too: a start with another --processes never reads them
        return [journal_path(run_dir, tag, j, f"n{repeats.processes}x") for j in range(EXTRA_PROCESSES)]
    return [journal_path(run_dir, tag, k) for k in range(repeats.processes)]


def measure_in_workers(ctx: RunContext, run_dir: Path, cases: Iterable[Case], start: Launcher,
                       measure_fn: Callable[..., Any], profile: bool, repeats: Repeats, writer: RunWriter,
                       tally: Tally, bar: Progress, done: set[str]) -> None:
    """Measure ``cases`` block by block (``blocks``: 64 cases, doubling up to 4,096), each block in
    ``repeats.processes`` passes of fresh workers and its rows stored before the next block starts:
    the first rows are stored within a block's time and memory holds one block, however long the
    suite. Once a block is stored, its journals keep only the rows of cases neither in it nor
    stored (``done``: row ids), which a later block uses (a resume's first block need not hold
    every case the interrupted one had journaled)."""
    journals = (journal_paths(ctx, run_dir, repeats), journal_paths(ctx, run_dir, repeats, extra=True))
    for block in blocks(cases):
        pending = {c.case_id: c for c in block}
        job = WorkerJob(ctx=ctx, cases=(), measure_fn=measure_fn, profile=profile, journal="")
        if _block(ctx, pending, job, journals, start, writer, tally, bar):
            for path in (*journals[0], *journals[1]):
                prune(path, lambda cid, block=pending: cid not in block and ctx.row_id(cid) not in done)


def _block(ctx: RunContext, pending: dict[str, Case], job: WorkerJob,
           journals: tuple[Sequence[Path], Sequence[Path]], start: Launcher, writer: RunWriter, tally: Tally,
           bar: Progress) -> bool:
    """Measure ``pending`` in one pass per journal of ``journals[0]``, then the cases short of
    processes beside a slow host in extra passes (``journals[1]``); store each case's merged row once
    every pass it needs has measured it. When interrupted, the complete cases are stored, except
    those still short of processes with an extra pass left: they stay in the journals, and a resume
    measures their extra passes before storing them. True when every row of the block is stored."""
    base, extra = journals
    stored = 0
    complete: dict[str, list[Row]] | None = None        # the base passes' rows, read once they are done
    finished = False
    try:
        for k, path in enumerate(base):
            _pass(ctx, pending, list(pending.values()), job, k, path, f"process {k + 1}/{len(base)}", start, bar)
            if k == 0 and job.profile:      # what the first process did not measure, a later one profiles
                rows = read_journal(path)[0]
                job = dataclasses.replace(job, profile_also=frozenset(
                    cid for cid in pending if cid not in rows or not measured(rows[cid])))
        complete = dict(iter_complete(base, list(pending)))
        for j, path in enumerate(extra):
            again = [pending[cid] for cid, rows in with_extras(complete, extra[:j], len(base))
                     if short_of(rows, len(base))]
            if not again:
                break
            journaled = read_journal(path)[0] if path.exists() else {}
            bar.extend(sum(c.case_id not in journaled for c in again))
            _pass(ctx, pending, again, job, len(base) + j, path, f"extra process {j + 1} (slow host)", start, bar)
        finished = True
    finally:
        if complete is None:                            # interrupted in a base pass: what is complete
            complete = dict(iter_complete(base, list(pending)))
        for _, rows in with_extras(complete, extra, len(base)):
            if not finished and short_of(rows, len(base)) and len(rows) < len(base) + len(extra):
                continue                                # its extra passes are a resume's to finish
            row = merge(rows)
            writer.append(row)
            tally.stored(row, rows)
            stored += 1
    return stored == len(pending)


def _pass(ctx: RunContext, pending: dict[str, Case], cases: list[Case], job: WorkerJob, k: int, path: Path,
          where: str, start: Launcher, bar: Progress) -> None:
    """One pass of workers over ``cases``, in process ``k``'s order, journaled to ``path``. Only the
    first pass profiles what ran (one profiled call a case; the same kernels run in every process,
    and ``repeats.merge`` takes them from the process that has them), and later passes the cases it
    did not measure (``WorkerJob.profile_also``)."""
    ordered = dataclasses.replace(job, cases=tuple(order_for(cases, k)), journal=str(path),
                                  profile=job.profile and k == 0)
    run_pass(ordered, start, lambda cid, code: died(ctx, pending[cid], code),
             lambda row: bar.update(row, where))


def confirm_in_workers(ctx: RunContext, run_dir: Path, pairs: Sequence[tuple[Case, Case]], start: Launcher,
                       measure_fn: Callable[..., Any], repeats: Repeats) -> int:
    """Time ``pairs`` interleaved in ``repeats.processes`` fresh workers, one after another, each
    taking them in its own order (``order_for``); store the records (``harness.runner.confirm``)."""
    paths = confirm.journals(ctx, run_dir, repeats.processes)
    for k, path in enumerate(paths):
        job = WorkerJob(ctx=ctx, cases=(), measure_fn=measure_fn, profile=False, journal=str(path),
                        pairs=tuple(order_for(list(pairs), k)), process=k)
        run_worker(job, start, lambda row: None, WorkerJournal(path))
    return confirm.store(ctx, run_dir, paths)
