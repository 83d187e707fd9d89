"""Candidate findings re-measured interleaved, in fresh processes like the run's own.

After a run's rows are stored, the caller names the pairs of cases worth confirming (a selector of
the stored run: ``harness.analysis.confirmed.candidate_pairs``; the runner never imports the
analysis). Each of the run's processes (``--processes``; the run's own process where it measured in
one) times every pair with ``harness.timing.interleave`` (ABAB... blocks, the lead drawn per process
and pair) and journals one ``harness.store.confirmations.Confirmation`` per pair. Once every process
has run, the records are stored as the run's confirmations and the journals removed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from harness.record import shard_label
from harness.runner.context import RunContext
from harness.runner.rows import analytic, prepare_pass
from harness.store.confirmations import Confirmation, journal_path, read_journals, write_confirmations
from harness.store.journal import append
from harness.suite import Case
from harness.timing.hostload import host_busy, sample
from harness.timing.interleave import interleave

log = logging.getLogger(__name__)

#: What a selector returns: (slow case id, fast case id) pairs of the stored run, most telling first.
Selector = Callable[[Path], Sequence[tuple[str, str]]]


def pairs_of(selected: Sequence[tuple[str, str]], cases: Iterable[Case]) -> list[tuple[Case, Case]]:
    """The (slow, fast) cases of the selected case ids (pairs naming a case not in ``cases`` dropped)."""
    by_id = {c.case_id: c for c in cases}
    return [(by_id[s], by_id[f]) for s, f in selected if s in by_id and f in by_id]


def time_pair(ctx: RunContext, slow: Case, fast: Case, process: int, seed: int) -> Confirmation:
    """One process's interleaved timing of ``slow`` against ``fast`` (host load sampled around it):
    each prepared as a row times it, its pass included (a candidate pairs rows of one pass)."""
    device = ctx.device
    with device.backend.pass_scope(device, slow.pass_):
        slow_work, _ = prepare_pass(slow, device, analytic(slow).counts)
        fast_work, _ = prepare_pass(fast, device, analytic(fast).counts)
        before = sample()
        with slow_work.grad_mode():
            got = interleave(fast_work.fn, slow_work.fn, device=device, inputs_a=fast_work.sets,
                             inputs_b=slow_work.sets, threads=slow.threads or ctx.threads, seed=seed)
    return Confirmation(run_id=ctx.run_id, slow_row_id=ctx.row_id(slow.case_id), fast_row_id=ctx.row_id(fast.case_id),
                        process=process, slow_first=not got.a_first, slow_s=list(got.b_s), fast_s=list(got.a_s),
                        host_busy=host_busy(before, sample()), measuring_s=round(got.measuring_s, 4))


def confirm_main(ctx: RunContext, pairs: Sequence[tuple[Case, Case]], process: int, journal: str) -> None:
    """Time every pair in this process and journal each record; a pair that fails is skipped (logged)."""
    with open(journal, "a", encoding="utf-8") as fh:
        for i, (slow, fast) in enumerate(pairs):
            try:
                record = time_pair(ctx, slow, fast, process, seed=1000 * process + i)
            except Exception as e:          # a pair that cannot be timed stays unconfirmed, never the run dead
                log.warning("confirming %s vs %s failed: %s: %s", slow.case_id, fast.case_id, type(e).__name__, e)
                continue
            append(fh, dataclasses.asdict(record))


def journals(ctx: RunContext, run_dir: Path, processes: int) -> list[Path]:
    """The confirmation journal of each process of this shard."""
    return [journal_path(run_dir, shard_label(ctx.shard), k) for k in range(processes)]


def store(ctx: RunContext, run_dir: Path, paths: Sequence[Path]) -> int:
    """Store the records the processes journaled as the run's confirmations (journals removed);
    returns how many."""
    records = read_journals(paths)
    write_confirmations(run_dir, shard_label(ctx.shard), records, paths)
    return len(records)
