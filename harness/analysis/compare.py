"""Comparisons across runs: two runs case by case, nightly regressions against a baseline or the
recent history, and one suite across devices. Machines are never mixed silently: a comparison
of two machines is an explicit, labelled cross-device comparison (joined on ``case_id``), and
regressions refuse history from another machine or setting unless told to accept it.

A verdict needs both a difference beyond ``threshold`` and noise bands that do not overlap: each
side's interquartile range or median 95 % confidence interval, whichever is wider, so noise never
reads as a change (in the spirit of NVBench's SAME/FAST/SLOW).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import record as R
from harness.errors import LayerbenchError

#: Default relative change below which two medians are the ``same``. Two runs of one build on this
#: project's 2-core VM differ by up to about 10 % on memory-bound rows (README, "Comparing runs").
COMPARE_THRESHOLD = 0.10
#: Default relative slowdown a nightly regression must exceed (beyond noise).
REGRESSION_THRESHOLD = 0.15


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


def _band(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each row's noise band: the wider of its interquartile range and its median's 95 % CI. The
    CI alone narrows as samples accumulate while run-to-run drift does not; the IQR (the spread of
    single samples) keeps two runs of the same build from reading as a change."""
    med = frame[R.TIME_MEDIAN]
    nan = pd.Series(np.nan, index=frame.index)
    q1, q3 = frame.get(R.TIME_Q1, nan).fillna(med), frame.get(R.TIME_Q3, nan).fillna(med)
    lo = np.fmin(frame.get(R.TIME_CI_LOW, nan), q1)
    hi = np.fmax(frame.get(R.TIME_CI_HIGH, nan), q3)
    return lo, hi


def _ok(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    return frame[frame[R.STATUS] == "ok"].drop_duplicates(key, keep="last").set_index(key)


def _side(frame: pd.DataFrame, tag: str, key: str) -> pd.DataFrame:
    ok = _ok(frame, key)
    lo, hi = _band(ok)
    cols = {R.TIME_MEDIAN: f"time_{tag}_s", R.DEVICE_NAME: f"device_{tag}", R.RUN_ID: f"run_{tag}",
            R.MACHINE_ID: f"machine_{tag}"}
    out = ok[list(cols)].rename(columns=cols)
    out[f"low_{tag}_s"], out[f"high_{tag}_s"] = lo, hi
    if "util_ceiling" in ok:
        out[f"util_{tag}"] = ok["util_ceiling"].where(ok["util_ceiling"].notna(), ok.get("util_peak"))
    return out


def compare(a: pd.DataFrame, b: pd.DataFrame, threshold: float = COMPARE_THRESHOLD,
            across_machines: bool = False) -> pd.DataFrame:
    """Per case present in both (ok rows), ``ratio`` = time b / time a, the utilization of each when
    derived, and ``verdict``: ``slower``, ``faster`` or ``same``.

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
    j["verdict"] = np.where(slower, "slower", np.where(faster, "faster", "same"))
    out = j.reset_index()
    out.attrs.update(cross_device=cross, a=sa.label(), b=sb.label(),
                     notes=_setting_notes(sa, sb))
    return out


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


def regressions(history: pd.DataFrame, new: pd.DataFrame, threshold: float = REGRESSION_THRESHOLD) -> pd.DataFrame:
    """Cases of ``new`` slower than their history beyond noise and ``threshold``.

    ``history`` holds earlier runs of the same machine (``check_history``; the new run itself is left
    out when a glob catches it): the reference is the
    median of their medians, the noise band the highest upper bound (q3 or CI) any of them reached.
    A case regressed when its own band lies above that and its median exceeds the reference by
    more than ``threshold``. Joined on ``row_id`` (the case on this machine and device). Returns
    those rows with ``reference_s``, ``band_high_s`` and ``slowdown``.
    """
    h = history[(history[R.STATUS] == "ok") & ~history[R.RUN_ID].isin(new[R.RUN_ID].unique())].copy()
    _, h["high"] = _band(h)
    ref = h.groupby(R.ROW_ID).agg(reference_s=(R.TIME_MEDIAN, "median"), band_high_s=("high", "max"),
                                  history_runs=(R.RUN_ID, "nunique"))
    n = _ok(new, R.ROW_ID)
    n["low"], _ = _band(n)
    j = n.join(ref, how="inner")
    j["slowdown"] = j[R.TIME_MEDIAN] / j["reference_s"]
    bad = (j["low"] > j["band_high_s"]) & (j["slowdown"] > 1 + threshold)
    cols = [c for c in [R.CASE_ID, *R.IDENTITY, R.TIME_MEDIAN, "reference_s", "band_high_s", "slowdown",
                        "history_runs"] if c in j]
    return j.loc[bad, cols].sort_values("slowdown", ascending=False).reset_index()


def cross_device(frame: pd.DataFrame, value: str = "util_ceiling") -> pd.DataFrame:
    """One row per case (``case_id``), one column per machine and device: ``value`` (default:
    utilization of the measured ceiling, else of the theoretical peak), so a user sees which
    device runs which layer closest to its peak. An explicit cross-device view."""
    f = frame[frame[R.STATUS] == "ok"].copy()
    if value == "util_ceiling" and "util_peak" in f:
        f[value] = f[value].where(f[value].notna(), f["util_peak"])
    f["where"] = np.where(f[R.DEVICE].astype(str).str.startswith("cpu"), f[R.MACHINE_NAME], f[R.DEVICE_NAME])
    idx = [c for c in R.IDENTITY if c in f]
    return f.pivot_table(index=idx, columns="where", values=value, aggfunc="median")
