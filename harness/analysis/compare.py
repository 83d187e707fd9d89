"""Comparisons across runs: two runs case by case, nightly regressions against a baseline or the
recent history, and one suite across devices. Machines are never mixed silently: a comparison
of two machines is an explicit, labelled cross-device comparison (joined on ``case_id``), and
regressions refuse history from another machine or setting unless told to accept it.

A verdict needs both a difference beyond ``threshold`` and noise bands that do not overlap: each
side's interquartile range or median 95 % confidence interval, whichever is wider, so noise never
reads as a change (in the spirit of NVBench's SAME/FAST/SLOW).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from harness import record as R
from harness.analysis.changepoints import baseline
from harness.analysis.findings import device_label
from harness.analysis.series import band, nightly
from harness.analysis.verdicts import count, is_judged, labels, set_aside, set_aside_of, usable
from harness.errors import LayerbenchError, SpecError
from harness.store.pytest_bench import STATS

#: Default relative change below which two medians are the ``same``. Two runs of one build on a
#: shared 2-core VM differ by up to about 10 % on memory-bound rows (docs/analysis.md, "Comparing runs").
COMPARE_THRESHOLD = 0.10
#: Default relative slowdown a nightly regression must exceed (beyond noise).
REGRESSION_THRESHOLD = 0.15
#: False-positive budget of ``regressions``: the chance that a steady case of a steady machine is
#: flagged on one night (one-sided, on the log-time scale); ``benchmarks/regress_fp.py`` measures it.
FP_BUDGET = 0.001
#: Nights of history from which ``regressions`` judges by the history's own noise (z); with fewer,
#: by the noise bands of the runs (too few nights to estimate night-to-night noise).
MIN_NIGHTS_FOR_Z = 8
#: Statistics ``--fail-on`` may name (pytest-benchmark's ``--benchmark-compare-fail`` names), and their columns.
FAIL_STATS = {k: STATS[k] for k in ("min", "max", "mean", "median", "stddev", "iqr")}


class MixedMachines(LayerbenchError, ValueError):
    """Runs of different machines or settings where one machine was expected; says which, and how
    to compare them on purpose."""


@dataclass(frozen=True, slots=True)
class Side:
    """The machines (and settings) one side of a comparison holds."""

    machines: dict[str, str]     # machine_id -> machine_name
    settings: tuple[str, ...]
    torch: tuple[str, ...]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Side:
        m = frame.drop_duplicates(R.MACHINE_ID).set_index(R.MACHINE_ID)[R.MACHINE_NAME].to_dict()
        return cls(machines={str(k): str(v) for k, v in m.items()},
                   settings=tuple(sorted(frame[R.SETTINGS_ID].dropna().astype(str).unique())),
                   torch=tuple(sorted(frame[R.TORCH_VERSION].dropna().astype(str).unique())))

    def label(self) -> str:
        return "; ".join(f"{name} [{mid}]" for mid, name in self.machines.items()) or "no rows"


def _ok(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    return frame[frame[R.STATUS] == "ok"].drop_duplicates(key, keep="last").set_index(key)


def _side(frame: pd.DataFrame, tag: str, key: str) -> pd.DataFrame:
    ok = _ok(frame, key)
    lo, hi = band(ok)
    cols = {R.TIME_MEDIAN: f"time_{tag}_s", R.DEVICE_NAME: f"device_{tag}", R.RUN_ID: f"run_{tag}",
            R.MACHINE_ID: f"machine_{tag}"}
    out = ok[list(cols)].rename(columns=cols)
    out[f"stability_{tag}"] = labels(ok)
    out[f"timing_{tag}"] = timing_text(ok)
    for stat, col in FAIL_STATS.items():
        if stat != "median" and col in ok:
            out[f"{stat}_{tag}_s"] = ok[col]
    out[f"low_{tag}_s"], out[f"high_{tag}_s"] = lo, hi
    if R.CANARY in ok:                       # the host's speed beside the row (seconds per canary step)
        canary = pd.to_numeric(ok[R.CANARY], errors="coerce")
        out[f"canary_{tag}_s"] = canary.where(canary > 0)
    if "util_roof" in ok:                    # FLOP/s, or B/s of the level's roof on the memory side
        out[f"util_{tag}"] = ok["util_roof"]
        out[f"util_{tag}_bytes"] = ok["roof_bound"].eq("memory")
    return out


def compare(a: pd.DataFrame, b: pd.DataFrame, threshold: float = COMPARE_THRESHOLD,
            across_machines: bool = False) -> pd.DataFrame:
    """Per case present in both (ok rows), ``ratio`` = time b / time a, the utilization of each when
    derived, and ``verdict``: ``slower``, ``faster`` or ``same``; ``host`` where a change is the host's
    (``host_explained``: the row's canary moved as much); ``set aside`` when either side's
    row is set aside (``harness.analysis.verdicts``: a stability other than ``stable`` or null);
    ``timing differs`` when the two rows were timed differently (another timer, another number of
    rotating input sets: ``timing_text``), whose ratio means nothing.
    ``attrs["stability"]`` counts each side's labels (null as ``no verdict``), ``attrs["set_aside"]``
    each side's set-aside rows per value.

    Runs of one machine join on ``row_id`` (the case on that machine and device). Runs of different
    machines raise ``MixedMachines`` unless ``across_machines``: they then join on ``case_id``
    (plus thread count) and ``frame.attrs["cross_device"]`` labels the result.
    """
    sa, sb = Side.of(a), Side.of(b)
    cross = set(sa.machines) != set(sb.machines) or len(sa.machines) > 1
    if cross and not across_machines:
        raise MixedMachines(f"A holds {sa.label()}; B holds {sb.label()}: a comparison across machines is a "
                            "cross-device comparison: ask for it with --across-machines")
    key = R.CASE_ID if cross else R.ROW_ID
    meta = _ok(a, key)[[c for c in (R.CASE_ID, R.ROW_ID, *R.IDENTITY) if c in a and c != key]]
    j = meta.join(_side(a, "a", key), how="inner").join(_side(b, "b", key), how="inner")
    j["ratio"] = j["time_b_s"] / j["time_a_s"]
    slower = (j["low_b_s"] > j["high_a_s"]) & (j["ratio"] > 1 + threshold)
    faster = (j["high_b_s"] < j["low_a_s"]) & (j["ratio"] < 1 - threshold)
    used = usable(j["stability_a"]) & usable(j["stability_b"])
    differs = j["timing_a"] != j["timing_b"]
    j["verdict"] = np.where(differs, TIMING_DIFFERS, np.where(~used, SET_ASIDE, np.where(
        slower, "slower", np.where(faster, "faster", "same"))))
    comparable = not cross and sa.torch == sb.torch and sa.settings == sb.settings and len(sa.settings) == 1
    j["host_ratio"] = j["canary_b_s"] / j["canary_a_s"] if comparable and "canary_a_s" in j and "canary_b_s" in j \
        else np.nan
    j.loc[host_explained(j, threshold), "verdict"] = HOST
    out = j.reset_index()
    out.attrs.update(cross_device=cross, a=sa.label(), b=sb.label(),
                     notes=_setting_notes(sa, sb) + _timing_notes(out) + _unmatched_notes(a, b, key)
                     + ([] if cross else host_notes(a, b)) + _host_verdict_notes(out),
                     stability={t: count(out[f"stability_{t}"]) for t in "ab"},
                     set_aside={t: set_aside_of(out[f"stability_{t}"]) for t in "ab"})
    return out


#: Verdict of a case whose row is set aside on either side (``harness.analysis.verdicts``).
SET_ASIDE = "set aside"
#: Verdict of a case timed one way in A and another in B (another timer, or another number of
#: rotating input sets): the ratio is shown, no verdict is drawn from it.
TIMING_DIFFERS = "timing differs"
#: Verdicts that judge nothing (excluded from geometric means, ``--fail-on`` and the coverage gate).
UNJUDGED = (SET_ASIDE, TIMING_DIFFERS)
#: Verdict of a case whose change the host explains (``host_explained``): judged (it counts towards
#: the coverage gate), but not a change of the code: left out of ``--fail-on`` and the geometric means.
HOST = "host"
#: Verdicts that are not a change of the layer's own speed.
NOT_A_CHANGE = (*UNJUDGED, HOST)


def host_moved(ratio: pd.Series, host_ratio: pd.Series, threshold: float) -> pd.Series:
    """Where the host explains a change: its canary (``host_ratio``, B over A) moved ``HOST_SHIFT`` or
    more the way the time did, and the time's ratio divided by it is within ``threshold`` of 1."""
    moved = (np.abs(np.log(host_ratio)) >= np.log1p(HOST_SHIFT)) & (np.sign(np.log(host_ratio)) ==
                                                                    np.sign(np.log(ratio)))
    return (moved & (ratio / host_ratio).between(1 - threshold, 1 + threshold)).fillna(False).astype(bool)


def host_explained(table: pd.DataFrame, threshold: float) -> pd.Series:
    """Cases judged ``slower`` or ``faster`` that the host canary beside the row in B and in A
    explains (``host_ratio``; only where both runs share one machine, threading settings and torch,
    so the canaries are one kernel on one host): it moved at least ``HOST_SHIFT`` the same way, and
    the ratio divided by it is within ``threshold`` of 1 (``host_moved``): the layer moved as much as
    a fixed GEMM and copy timed beside it, which is the host's speed. (On a shared 2-vCPU VM two runs
    minutes apart moved a median 6.2 % case by case, 3.0 % once each time was divided by its canary;
    the only row stable in both moved 11 % with its canary 10 %.)"""
    if "host_ratio" not in table:
        return pd.Series(False, index=table.index)
    return table["verdict"].isin(["slower", "faster"]) & host_moved(table["ratio"], table["host_ratio"], threshold)


def _host_verdict_notes(table: pd.DataFrame) -> list[str]:
    host = table[table["verdict"] == HOST]
    if host.empty:
        return []
    return [f"{len(host)} case(s) moved as much as the host canary beside them (B/A {_span(host['ratio'])}, their "
            f"canaries' {_span(host['host_ratio'])}; one machine, settings and torch): verdict `host`, left out of "
            "--fail-on and the geometric means"]


def _span(values: pd.Series) -> str:
    lo, hi = float(values.min()), float(values.max())
    return f"{lo:.3f}" if round(lo, 3) == round(hi, 3) else f"{lo:.3f} to {hi:.3f}"


def timing_text(rows: pd.DataFrame) -> pd.Series:
    """How each row was timed, as two sides of a comparison must agree on: the timer and the number
    of input sets rotated (``perf_counter_ns, 16 input sets``)."""
    timer = rows[R.TIMER].astype(object).where(rows[R.TIMER].notna(), "unknown timer") if R.TIMER in rows \
        else pd.Series("unknown timer", index=rows.index)
    sets = pd.to_numeric(rows[R.ROTATION], errors="coerce") if R.ROTATION in rows else \
        pd.Series(np.nan, index=rows.index)
    return timer.astype(str) + ", " + sets.map(lambda n: "? input sets" if pd.isna(n) else
                                               f"{int(n)} input set{'s' if n != 1 else ''}")


def _timing_notes(table: pd.DataFrame) -> list[str]:
    differ = table[table["verdict"] == TIMING_DIFFERS]
    if differ.empty:
        return []
    pairs = sorted({f"{a} vs {b}" for a, b in zip(differ["timing_a"], differ["timing_b"])})
    return [f"{len(differ)} case(s) were timed differently in A and B ({'; '.join(pairs[:3])}): their ratio is "
            "shown without a verdict"]


def family_geomeans(table: pd.DataFrame) -> pd.DataFrame:
    """Per family, the geometric mean of ``ratio`` over its cases with a verdict (judged on both sides),
    and how many cases that is; per family and pass (a ``pass`` column) when the cases hold several
    passes (a backward's change is not its forward's)."""
    t = table[~table["verdict"].isin(NOT_A_CHANGE)]
    by = [R.FAMILY, R.PASS] if mixed_passes(table) else [R.FAMILY]
    if t.empty:
        return pd.DataFrame(columns=[*by, "cases", "geomean_ratio"])
    g = t.assign(log_ratio=np.log(t["ratio"])).groupby(by, sort=False)["log_ratio"].agg(["size", "mean"])
    out = g.index.to_frame(index=False)
    return out.assign(cases=g["size"].to_numpy(), geomean_ratio=np.exp(g["mean"].to_numpy()))


def mixed_passes(frame: pd.DataFrame) -> bool:
    """Whether ``frame`` holds a pass other than the forward (tables then show a pass column)."""
    return R.PASS in frame and bool(frame[R.PASS].dropna().ne(R.PASSES[0]).any())


@dataclass(frozen=True, slots=True)
class FailOn:
    """One ``--fail-on`` rule: ``median:10%`` (B more than 10 % above A) or ``min:0.001`` (more than
    1 ms above A), pytest-benchmark's ``--benchmark-compare-fail`` syntax."""

    stat: str
    limit: float
    relative: bool

    @classmethod
    def parse(cls, text: str) -> list[FailOn]:
        rules = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            m = re.fullmatch(r"(\w+):([0-9]*\.?[0-9]+(?:e-?\d+)?)(%?)", part)
            if not m or m.group(1) not in FAIL_STATS:
                raise SpecError("--fail-on", part, f"STAT:N% or STAT:SECONDS with STAT one of {', '.join(FAIL_STATS)} "
                                "(e.g. median:10%, min:0.001)")
            value = float(m.group(2))
            rules.append(cls(m.group(1), value / 100 if m.group(3) else value, bool(m.group(3))))
        if not rules:
            raise SpecError("--fail-on", text, "at least one STAT:LIMIT rule")
        return rules

    def __str__(self) -> str:
        return f"{self.stat}:{self.limit:.0%}" if self.relative else f"{self.stat}:{self.limit:g}s"

    def crossed(self, table: pd.DataFrame) -> pd.Series:
        """Rows (with a verdict) where B exceeds A by more than the limit."""
        a = table["time_a_s"] if self.stat == "median" else table.get(f"{self.stat}_a_s")
        b = table["time_b_s"] if self.stat == "median" else table.get(f"{self.stat}_b_s")
        if a is None or b is None:
            return pd.Series(False, index=table.index)
        over = (b - a) / a > self.limit if self.relative else (b - a) > self.limit
        return over.fillna(False) & ~table["verdict"].isin(NOT_A_CHANGE)


#: A median canary this much apart between two runs is said (``host_notes``).
HOST_SHIFT = 0.05


def _unmatched_notes(a: pd.DataFrame, b: pd.DataFrame, key: str) -> list[str]:
    """One line per side with measured cases the other side lacks (a suite that grew, a pass added),
    named by their families: left out of the comparison, and said so."""
    notes = []
    oka, okb = _ok(a, key), _ok(b, key)
    for side, theirs, ok_mine, ok_theirs, other in (("A", b, oka, okb, "B"), ("B", a, okb, oka, "A")):
        only = ok_mine[~ok_mine.index.isin(ok_theirs.index)]
        if only.empty:
            continue
        there = theirs.drop_duplicates(key, keep="last").set_index(key)[R.STATUS].reindex(only.index)
        failed = there.dropna()
        if len(failed):                 # a case that stopped measuring is news, not a suite that shrank
            how = ", ".join(f"{n} {st}" for st, n in failed.astype(str).value_counts().items())
            notes.append(f"{len(failed)} case(s) measured in {side} were not measured in {other} ({how}): not "
                         "compared")
        absent = only[there.isna().to_numpy()]
        if len(absent):
            fams = ", ".join(f"{n} {f}" for f, n in absent[R.FAMILY].astype(str).value_counts().items()) \
                if R.FAMILY in absent else ""
            notes.append(f"{len(absent)} measured case(s) of {side} are not in {other} ({fams}): not compared")
    return notes


def _canary_absent_note(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """One line when one side has host canaries and the other none (stored before rows kept one)."""
    has = [R.CANARY in f and pd.to_numeric(f[R.CANARY], errors="coerce").gt(0).any() for f in (a, b)]
    if has[0] == has[1]:
        return []
    return [f"{'A' if not has[0] else 'B'} stored no host canary (measured before rows kept one): whether the host "
            "ran at another speed in the two runs cannot be told"]


def host_notes(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    """One line when the host canary (``canary_s``: the host's speed beside each row's blocks) ran a
    median ``HOST_SHIFT`` or more apart in A and B, of one machine and settings: a shift of that size
    in every layer is then likely the host's. Said, never taken out of the ratios: the canary is a
    torch GEMM and copy, which a change of torch or build moves as it moves the layers."""
    if any(R.CANARY not in f or R.SETTINGS_ID not in f for f in (a, b)):
        return _canary_absent_note(a, b)
    if len({str(v) for f in (a, b) for v in f[R.SETTINGS_ID].dropna()}) != 1:
        return []                   # other threads: canaries of another size, not comparable
    ca, cb = (pd.to_numeric(f.loc[f[R.STATUS] == "ok", R.CANARY], errors="coerce") for f in (a, b))
    ca, cb = ca[ca > 0], cb[cb > 0]
    if ca.empty or cb.empty:
        return _canary_absent_note(a, b)
    r = float(cb.median() / ca.median())
    if abs(math.log(r)) < math.log1p(HOST_SHIFT):
        return []
    how = f"{r:.2f}x slower" if r > 1 else f"{1 / r:.2f}x faster"
    return [f"the host canary ran a median {how} in B than in A ({ca.median() * 1e6:.1f} vs {cb.median() * 1e6:.1f} "
            f"us per step): a shift of about that size in every layer is likely the host's speed, not the code's"]


def _setting_notes(sa: Side, sb: Side) -> list[str]:
    notes = []
    if sa.settings != sb.settings:
        notes.append(f"threading settings differ (settings_id {', '.join(sa.settings)} vs {', '.join(sb.settings)})")
    if sa.torch != sb.torch:
        notes.append(f"torch differs ({', '.join(sa.torch)} vs {', '.join(sb.torch)})")
    return notes


def check_history(history: pd.DataFrame, new: pd.DataFrame, accept_machines: bool = False,
                  accept_settings: bool = False) -> pd.DataFrame:
    """The history rows ``regressions`` may use: same machine and settings as ``new``. Other runs
    raise ``MixedMachines`` (naming them) unless accepted."""
    sn = Side.of(new)
    if len(sn.machines) != 1 or len(sn.settings) > 1:
        raise MixedMachines(f"the new run holds {sn.label()} (settings {', '.join(sn.settings)}): regress one "
                            "machine and setting at a time")
    mid = next(iter(sn.machines))
    other_machine = history[R.MACHINE_ID] != mid
    other_setting = ~other_machine & ~history[R.SETTINGS_ID].isin(sn.settings)
    for mask, accepted, what, flag in ((other_machine, accept_machines, "another machine", "--accept-other-machines"),
                                       (other_setting, accept_settings, "other threading settings",
                                        "--accept-other-settings")):
        if mask.any() and not accepted:
            runs = history.loc[mask, [R.RUN_ID, R.MACHINE_NAME, R.SETTINGS_ID]].drop_duplicates(R.RUN_ID)
            listed = "; ".join(f"{r.run_id} ({r.machine_name}, settings {r.settings_id})"
                               for r in runs.head(5).itertuples())
            raise MixedMachines(f"{len(runs)} baseline run(s) come from {what} than the new run ({sn.label()}): "
                                f"{listed}{' ...' if len(runs) > 5 else ''}. Pass {flag} to use them anyway, or "
                                "--same-machine-only to leave them out")
    return history


def same_machine_only(history: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """History rows of the new run's machine and settings, and how many runs were left out."""
    sn = Side.of(new)
    keep = history[R.MACHINE_ID].isin(list(sn.machines)) & history[R.SETTINGS_ID].isin(sn.settings)
    return history[keep], history.loc[~keep, R.RUN_ID].nunique()


def regressions(history: pd.DataFrame, new: pd.DataFrame, threshold: float = REGRESSION_THRESHOLD,
                budget: float = FP_BUDGET) -> pd.DataFrame:
    """Cases of ``new`` slower than their baseline beyond noise and ``threshold``.

    ``history`` holds earlier runs of the same machine and settings (``check_history``; the new run
    itself is left out when a glob catches it). Per case (``row_id``) its stable nightly medians,
    oldest first, give the baseline (``harness.analysis.changepoints.baseline``): the segment since
    the last change point; the reference is the median of that segment, so one noisy night moves
    neither the reference nor the band. A case regressed when it is slower than the reference by
    more than ``threshold`` and, with ``MIN_NIGHTS_FOR_Z`` nights of history and 3 or more in the
    segment, its log-slowdown over the
    history's robust noise (``z``) exceeds the ``budget`` quantile of Student's t with (nights - 1) / 2
    degrees of freedom (the noise is itself estimated from those nights); with fewer, when its own band lies above the
    highest band of the segment. Only judged rows (``harness.analysis.verdicts``: ``stable``, or
    no verdict recorded) count, on both sides; ``attrs["set_aside"]`` counts the new run's
    set-aside rows per stability value.
    A slowdown the host canary explains is not a regression: against the segment's nights that ran
    the new row's torch version and settings, the new row's ``canary_s`` over their median canary
    (``host_ratio``) moved ``HOST_SHIFT`` or more the same way and the slowdown divided by it is
    within ``threshold`` of 1 (``host_moved``, as ``compare``'s ``host`` verdict: the layer moved as
    much as a GEMM and copy timed beside it); such a case is listed in ``attrs["host"]`` instead.
    Returns those rows with ``reference_s``, ``band_high_s``, ``slowdown``, ``z``, ``segment_runs``
    and ``history_runs``; ``attrs["judged"]`` counts the cases judged, ``attrs["without_baseline"]``
    the judged rows of ``new`` with no stable history to be judged against.
    """
    h = history[(history[R.STATUS] == "ok") & ~history[R.RUN_ID].isin(new[R.RUN_ID].unique())]
    h = nightly(h[is_judged(h)])
    n = _ok(new, R.ROW_ID)
    aside = set_aside(n)
    n = n[is_judged(n)].copy()
    n["low"], _ = band(n)
    z_limit = NormalDist().inv_cdf(1 - budget)
    refs = []
    for rid, g in h[h[R.ROW_ID].isin(n.index)].groupby(R.ROW_ID, sort=False):
        b = baseline(g[R.TIME_MEDIAN].tolist())
        refs.append((rid, b.reference_s, g["high_s"].iloc[b.since:].max(), b.noise, b.nights, len(g),
                     _segment_canary(g.iloc[b.since:], n.loc[rid])))
    ref = pd.DataFrame(refs, columns=[R.ROW_ID, "reference_s", "band_high_s", "noise", "segment_runs",
                                      "history_runs", "canary_ref_s"]).set_index(R.ROW_ID)
    j = n.join(ref, how="inner")
    j["slowdown"] = j[R.TIME_MEDIAN] / j["reference_s"]
    j["z"] = np.log(j["slowdown"].astype(float)) / j["noise"]
    # the noise is estimated from the history itself: Student's t with the history's degrees of freedom, halved
    # for the median-of-differences estimator's lower efficiency (~0.37 of the standard deviation's)
    from scipy.stats import t as student_t  # deferred: scipy.stats takes ~2 s to import; only regress needs it
    j["z_limit"] = student_t.isf(budget, np.maximum(1.0, (j["history_runs"] - 1) / 2))
    use_z = (j["segment_runs"] >= 3) & (j["history_runs"] >= MIN_NIGHTS_FOR_Z)
    beyond = np.where(use_z, j["z"] > j["z_limit"], j["low"] > j["band_high_s"])
    bad = beyond & (j["slowdown"] > 1 + threshold)
    canary = pd.to_numeric(j[R.CANARY], errors="coerce") if R.CANARY in j else pd.Series(np.nan, index=j.index)
    j["host_ratio"] = canary.where(canary > 0) / j["canary_ref_s"]
    host = bad & host_moved(j["slowdown"].astype(float), j["host_ratio"], threshold).to_numpy()
    bad = bad & ~host
    j["judged_by"] = np.where(use_z, "noise", "band")
    j[["z", "z_limit"]] = j[["z", "z_limit"]].where(use_z)      # a z the band rule did not use is not shown
    cols = [c for c in [R.CASE_ID, *R.IDENTITY, R.TIME_MEDIAN, "reference_s", "band_high_s", "slowdown", "judged_by",
                        "z", "z_limit", "segment_runs", "history_runs"] if c in j]
    out = j.loc[bad, cols].sort_values("slowdown", ascending=False).reset_index()
    explained = j.loc[host, [*cols, "host_ratio"]].sort_values("slowdown", ascending=False).reset_index()
    out.attrs.update(set_aside=aside, judged=len(j), without_baseline=len(n) - len(j), budget=budget,
                     z_limit=z_limit, host=explained)  # z_limit: the normal's
    return out


def _segment_canary(segment: pd.DataFrame, new: pd.Series) -> float:
    """The median ``canary_s`` of a baseline segment's nights that ran ``new``'s torch version and
    threading settings (the canary is torch's own GEMM and copy, sized by the threads: another
    version or setting moves it as it moves the layers); NaN without one."""
    if any(c not in segment for c in (R.CANARY, R.TORCH_VERSION, R.SETTINGS_ID)):
        return float("nan")
    same = segment[R.TORCH_VERSION].astype(str).eq(str(new.get(R.TORCH_VERSION))) & \
        segment[R.SETTINGS_ID].astype(str).eq(str(new.get(R.SETTINGS_ID)))
    canary = pd.to_numeric(segment.loc[same, R.CANARY], errors="coerce")
    canary = canary[canary > 0]
    return float(canary.median()) if len(canary) else float("nan")


def cross_device(frame: pd.DataFrame, value: str = "util_ceiling") -> pd.DataFrame:
    """One row per case (``case_id``), one column per machine and device: ``value`` (default:
    utilization of the measured ceiling, else of the theoretical peak), so a user sees which
    device runs which layer closest to its peak. An explicit cross-device view."""
    f = frame[frame[R.STATUS] == "ok"].copy()
    if value == "util_ceiling" and "util_peak" in f:
        f[value] = f[value].where(f[value].notna(), f["util_peak"])
    f["where"] = [device_label(r) for _, r in f.iterrows()]
    idx = [c for c in R.IDENTITY if c in f]
    if R.PASS in f:                                          # a forward row has no gradients: still a row of the view
        f[R.PASS] = f[R.PASS].fillna(R.PASSES[0])
    if R.GRADS in f:
        f[R.GRADS] = f[R.GRADS].fillna("")
    return f.pivot_table(index=idx, columns="where", values=value, aggfunc="median")
