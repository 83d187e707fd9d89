"""Findings confirmed by interleaving: the candidate pairs a run re-measured alternately in the same
fresh processes (``harness.runner.confirm``; stored by ``harness.store.confirmations``), judged.

*Candidates* (``candidate_pairs``): in each equal-FLOPs group of one layer kind (across families and
within each family) or of one family, over a run's measured rows whatever their stability, the
slowest and the fastest by median when they differ by ``min_spread`` or more (one layer in several
families counted once: ``_extremes``); the largest first, at most ``MAX_PAIRS``.

*Judged* (``interleaved_findings``): a pair's ratio in one process is the median over its pairs of
blocks of slow / fast; the pair **holds** when that ratio is ``min_spread`` or more in every process
that timed it. A pair that holds is a finding whose size is the median of its process ratios, and
whose spread is their range; one that does not is *unconfirmed*, told with both numbers (the medians'
ratio and the interleaved ones). A run with confirmations takes its findings from them; rows set
aside (even ``contended``) may carry one, since a slow host slowed both layers alike.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import record as R
from harness.analysis.findings import (
    EQUAL_FLOPS_TOL,
    EXPLAIN_COLUMNS,
    PARTITION,
    SAME_FAMILY,
    SAME_LAYER,
    Finding,
    describe_row,
    device_label,
    kind_groups,
    reasons,
)
from harness.analysis.verdicts import labels, measured
from harness.store import load_runs
from harness.units import seconds, si

#: Most candidate pairs a run re-measures.
MAX_PAIRS = 8
#: ``Finding.basis`` of a finding from interleaved blocks.
INTERLEAVED = "interleaved"


@dataclass(frozen=True, slots=True)
class Pair:
    """A candidate finding: its run, the slow and the fast row (ids, and their labels in the frame
    they were drawn from) and their medians' ratio."""

    run_id: str
    slow_row_id: str
    fast_row_id: str
    slow_case_id: str
    fast_case_id: str
    ratio: float
    slow_index: object = None
    fast_index: object = None


def candidate_pairs(frame: pd.DataFrame, top: int = MAX_PAIRS, tol: float = EQUAL_FLOPS_TOL,
                    min_spread: float = 1.1) -> list[Pair]:
    """The pairs to re-measure (module docstring), largest medians' ratio first."""
    rows = frame[measured(frame)]
    part = [c for c in PARTITION if c in rows]
    found: dict[tuple[str, str, str], Pair] = {}     # one pair of layers once, whichever copies a group held
    # one layer kind across families, one layer kind within each family (ShuffleNet V2's G1 and G2 sweeps
    # are both 1x1 convolutions: each its own pair), and one family across kinds
    for by, kind in ((part, SAME_LAYER), (part + [R.FAMILY], SAME_LAYER), (part, SAME_FAMILY)):
        for _, g in kind_groups(rows, by, tol, 2, kind).groupby("group", sort=False):
            (slow, t_slow), (fast, t_fast) = _extremes(g)
            ratio = float(t_slow / t_fast)
            if ratio >= min_spread:
                found.setdefault((slow[R.RUN_ID], layer_key(slow), layer_key(fast)), Pair(
                    slow[R.RUN_ID], slow[R.ROW_ID], fast[R.ROW_ID], slow[R.CASE_ID], fast[R.CASE_ID], ratio,
                    slow.name, fast.name))
    return sorted(found.values(), key=lambda p: -p.ratio)[:top]


def layer_key(row: pd.Series) -> str:
    """One layer whatever family holds it: its ``config_id`` and gradients (grad-input and grad-weight
    of one layer are two kernels); a row without a ``config_id`` is itself (its ``row_id``)."""
    cfg = row.get(R.CONFIG_ID)
    base = str(cfg) if isinstance(cfg, str) and cfg else f"row {row.get(R.ROW_ID)}"
    grads = row.get(R.GRADS)
    return f"{base}|{grads if isinstance(grads, str) else ''}"


def _extremes(g: pd.DataFrame) -> tuple[tuple[pd.Series, float], tuple[pd.Series, float]]:
    """The slowest and the fastest layer of an equal-FLOPs group, each with its time: one layer
    measured in several families (one ``config_id``: ShuffleNet V2's 1x1 convolution of 128 channels
    in the G1, G2 and threads sweeps) is one layer, timed by the median of its rows and named by the
    row of the lowest case id, so that noise between its copies picks neither the pair nor its names
    (two runs then time the same pair)."""
    own = pd.Series([f"row {i}" for i in g.index], index=g.index)       # a row with no config_id: itself
    key = g[R.CONFIG_ID].astype(object).where(g[R.CONFIG_ID].notna(), own) if R.CONFIG_ID in g else own
    if R.GRADS in g:                               # grad-input and grad-weight of one layer: two kernels
        key = key.astype(str) + "|" + g[R.GRADS].astype(object).where(g[R.GRADS].notna(), "").astype(str)
    t = g.groupby(key, sort=False)[R.TIME_MEDIAN].median()
    by_id = g.sort_values(R.CASE_ID).index
    rep = by_id.to_series().groupby(key.loc[by_id], sort=False).first()     # each layer's row of lowest case id
    return (g.loc[rep[t.idxmax()]], float(t.max())), (g.loc[rep[t.idxmin()]], float(t.min()))


def select(run_dir: Path) -> list[tuple[str, str]]:
    """(slow case id, fast case id) of the candidate pairs of the run stored in ``run_dir``: what
    ``run_suite(confirm=...)`` times interleaved."""
    return [(p.slow_case_id, p.fast_case_id) for p in candidate_pairs(load_runs([run_dir]).frame)]


def process_ratios(confirmations: pd.DataFrame, pair: Pair) -> list[float]:
    """Each process's median slow / fast ratio over its interleaved blocks of ``pair`` (process order)."""
    c = confirmations
    mine = c[(c["run_id"] == pair.run_id) & (c["slow_row_id"] == pair.slow_row_id)
             & (c["fast_row_id"] == pair.fast_row_id)].sort_values("process")
    out = []
    for slow, fast in zip(mine["slow_s"], mine["fast_s"]):
        r = np.asarray(slow, dtype=float) / np.asarray(fast, dtype=float)
        if r.size and np.isfinite(r).all():
            out.append(float(np.median(r)))
    return out


def interleaved_findings(frame: pd.DataFrame, confirmations: pd.DataFrame, top: int = 10,
                         min_spread: float = 1.1) -> tuple[list[Finding], list[Finding]]:
    """(findings, unconfirmed) of the pairs ``confirmations`` timed whose rows ``frame`` holds (the
    pairs the run chose when it ran, whatever rule chose them: ``timed_pairs``)."""
    found: list[Finding] = []
    unconfirmed: list[Finding] = []
    for pair in timed_pairs(frame, confirmations):
        ratios = process_ratios(confirmations, pair)
        if not ratios:
            continue
        holds = min(ratios) >= min_spread
        (found if holds else unconfirmed).append(_finding(frame.loc[[pair.fast_index, pair.slow_index]], pair,
                                                          ratios, holds))
    found.sort(key=lambda f: -f.spread)
    return found[:top], unconfirmed


def timed_pairs(frame: pd.DataFrame, confirmations: pd.DataFrame) -> list[Pair]:
    """A ``Pair`` per (run, slow row, fast row) of ``confirmations`` whose two rows ``frame`` holds,
    with their medians' ratio: the stored record of what was timed, so a run keeps its findings when
    a later rule would have chosen other candidates. Two layers timed twice through copies in other
    families (a run that chose them so) count once: the first timed, the largest candidate."""
    if confirmations.empty or R.ROW_ID not in frame:
        return []
    at = {(r, i): idx for idx, r, i in zip(frame.index, frame[R.RUN_ID], frame[R.ROW_ID])}
    out, seen = [], set()
    for run, slow_id, fast_id in confirmations[["run_id", "slow_row_id", "fast_row_id"]].drop_duplicates().itertuples(
            index=False):
        slow, fast = at.get((run, slow_id)), at.get((run, fast_id))
        if slow is None or fast is None:
            continue
        layers = (run, layer_key(frame.loc[slow]), layer_key(frame.loc[fast]))
        if layers in seen:              # the same two layers timed again through another family's copies
            continue
        seen.add(layers)
        ratio = float(frame.at[slow, R.TIME_MEDIAN] / frame.at[fast, R.TIME_MEDIAN])
        out.append(Pair(run, slow_id, fast_id, frame.at[slow, R.CASE_ID], frame.at[fast, R.CASE_ID], ratio, slow,
                        fast))
    return out


def _finding(pair_rows: pd.DataFrame, pair: Pair, ratios: list[float], holds: bool) -> Finding:
    """The sentence of a confirmed pair (``holds``) or of an unconfirmed one; ``pair_rows``: fast, slow."""
    fast, slow = pair_rows.iloc[0], pair_rows.iloc[1]
    mid = statistics.median(ratios)
    each = ", ".join(f"{r:.2f}" for r in ratios)
    what = (f"{device_label(slow)} {slow[R.DTYPE]}, {si(float(fast[R.FLOPS]))}FLOPs: {describe_row(slow)}")
    if holds:
        text = (f"{what} takes {mid:.2f}x as long as {describe_row(fast)}, timed interleaved in {len(ratios)} "
                f"process(es) ({each}x; medians {seconds(slow[R.TIME_MEDIAN])} vs {seconds(fast[R.TIME_MEDIAN])}, "
                f"{' vs '.join(labels(pair_rows).iloc[::-1])}): "
                + "; ".join(reasons(slow, fast)) + ".")
    else:
        text = (f"{what} vs {describe_row(fast)}: medians {pair.ratio:.2f}x apart, but interleaved in "
                f"{len(ratios)} process(es) {each}x: not a difference that holds in every process")
    cols = [c for c in [*EXPLAIN_COLUMNS, R.PROCESS_MEDIANS] if c in pair_rows]
    return Finding(group=-1, spread=mid, text=text, rows=pair_rows[cols], basis=INTERLEAVED,
                   kind=SAME_LAYER if slow[R.LAYER] == fast[R.LAYER] else SAME_FAMILY)
