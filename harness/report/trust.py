"""The summary's lines on how far a run's numbers can be trusted beyond their stability counts: the
rows at two speeds told as their modes, what the host canary set aside, the CPU clock measured
against the one reported, and every row faster than its peak or its ceiling (a defect of the peak
or of the calibration, said with the numbers, never a utilization to believe)."""

from __future__ import annotations

import re

import pandas as pd

from harness import record as R
from harness.analysis.findings import describe_row
from harness.analysis.verdicts import held
from harness.report.wrap import WIDTH, wrap
from harness.timing.canary import NOISE_MADS, REJECT
from harness.units import percent

#: Summary width, and the most rows a line names.
SHOWN = 3
#: Readings of the CPU clock around a row spread this much at most on a quiet host (a dependent-add
#: chain timed per CPU: ``harness.devices.clock``); wider, a reading was interrupted.
CLOCK_STEADY = 0.05


def _num(frame: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(frame[col], errors="coerce") if col in frame else pd.Series(float("nan"), index=frame.index)


def modes_lines(ok: pd.DataFrame) -> list[str]:
    """Each row at two speeds (its reason holds a ``two speeds...`` sentence: ``_TWO_SPEEDS``), named, up
    to ``SHOWN``, and how many more."""
    if R.STABILITY_REASON not in ok:
        return []
    found = ok[R.STABILITY_REASON].fillna("").str.extract(_TWO_SPEEDS)
    told = found[1].where(found[0].isna(), found[0] + ": " + found[1])
    two = ok[found[1].notna()]
    if two.empty:
        return []
    lines = [f"two speeds ({len(two)} row{'s' if len(two) != 1 else ''}):"]
    for i, row in two.head(SHOWN).iterrows():
        host = " (the host's: followed the canary)" if row.get(R.STABILITY) == R.Stability.HOST_SLOWED.value else ""
        name = f"{row[R.FAMILY]} {describe_row(row)}" if pd.notna(row.get(R.FAMILY)) else describe_row(row)
        lines += wrap(f"{name}: {held(told[i], row)}{host}", WIDTH, initial_indent="  - ", subsequent_indent="    ")
    if len(two) > SHOWN:
        lines.append(f"  and {len(two) - SHOWN} more (their `stability_reason`)")
    return lines


#: The two-speeds sentence of a row's reason (first in it, or after a note of processes set aside in
#: rows stored before it came first): where it was seen (one of several processes), and the speeds
#: with which of them holds the row's time.
_TWO_SPEEDS = r"(?:^|; )two speeds(?: (in one of \d+ processes))?: ([^;]*; the row's time[^;]*)"


def canary_lines(ok: pd.DataFrame) -> list[str]:
    """Blocks the host canary set aside and the rows whose processes followed it."""
    rejected = _num(ok, R.SAMPLES_REJECTED)
    if rejected.isna().all():
        return []
    total, rows = int(rejected.fillna(0).sum()), int((rejected > 0).sum())
    slowed = int(ok.get(R.STABILITY, pd.Series(dtype=str)).eq(R.Stability.HOST_SLOWED.value).sum())
    parts = [f"{total} sample block(s) set aside in {rows} row(s), the canary beside them over "
             f"{percent(REJECT, 0)} (or {NOISE_MADS:g} of its deviations) above its median" if total else
             f"no sample block set aside (none beside a canary over {percent(REJECT, 0)} above its median)"]
    if slowed:
        parts.append(f"{slowed} row(s) host-slowed (their processes' times followed the canary)")
    return wrap("host canary: " + "; ".join(parts), WIDTH, subsequent_indent="  ")


def clock_lines(ok: pd.DataFrame) -> list[str]:
    """The CPU clock measured around the rows (median, range)."""
    mhz = _num(ok, R.CLOCK_MHZ).dropna()
    if mhz.empty:
        return []
    spread = _num(ok, R.CLOCK_SPREAD).max()
    text = (f"CPU clock measured around the rows: {mhz.median() / 1e3:.2f} GHz (median of the rows; "
            f"{mhz.min() / 1e3:.2f} to {mhz.max() / 1e3:.2f} GHz across them)")
    if pd.notna(spread):
        text += (f"; the readings around one row spread up to {percent(spread)}"
                 + (" (a reading the host interrupted reads low)" if spread > CLOCK_STEADY else ""))
    return wrap(text + _peak_clock(ok, mhz.median()), WIDTH, subsequent_indent="  ")


#: The clock in a formula peak's detail measured by the dependent-add chain (``devices.cpu.peak``).
_PEAK_CLOCK = re.compile(r"x ([\d.]+) GHz x .*clock: measured")


def _peak_clock(ok: pd.DataFrame, rows_mhz: float) -> str:
    """``; the formula peak takes 3.23 GHz, the clock `layerbench calibrate` measured with the ceilings
    (2026-12-03 07:35): the rows ran 9.7 % below it``: where the rows' formula peak is of one measured
    clock, which the rows' own clock may not reach (a shared host's cores run slower when its
    neighbours are busy)."""
    details = ok[R.PEAK_DETAIL].dropna().astype(str).unique() if R.PEAK_DETAIL in ok else ()
    clocks = {float(m.group(1)) for d in details if (m := _PEAK_CLOCK.search(d))}
    if len(clocks) != 1:
        return ""
    ghz = clocks.pop()
    when = ok[R.CEILING_MEASURED_AT].dropna() if R.CEILING_MEASURED_AT in ok else pd.Series(dtype=object)
    at = f" ({str(when.iloc[0])[:16].replace('T', ' ')})" if len(when) else ""
    gap = rows_mhz / 1e3 / ghz - 1
    ran = "at it" if abs(gap) < 0.005 else f"{percent(abs(gap))} {'below' if gap < 0 else 'above'} it"
    return (f"; the formula peak takes {ghz:.2f} GHz, the clock `layerbench calibrate` measured with the "
            f"ceilings{at}: the rows ran {ran}")


def above_lines(ok: pd.DataFrame) -> list[str]:
    """Rows faster than their theoretical peak (a defect of the peak) or their measured ceiling."""
    lines = []
    for col, util, what in (("above_peak", "util_peak", "the theoretical peak (a defect of the peak: its clock or "
                                                        "FLOP per cycle)"),
                            ("above_ceiling", "util_ceiling", "the measured GEMM ceiling (a kernel the "
                                                              "calibration did not reach: calibrate --force)")):
        if col not in ok:
            continue
        over = ok[ok[col].eq(True)].sort_values(util, ascending=False)
        if over.empty:
            continue
        named = "; ".join(f"{describe_row(r)} {percent(r[util], 0)}" for _, r in over.head(SHOWN).iterrows())
        lines += wrap(f"above {what}: {len(over)} row(s): {named}", WIDTH, subsequent_indent="  ")
    return lines + _above_bandwidth(ok)


#: Why bytes can outrun their level's measured roof: the roof's own convention (STREAM's).
_BW_WHY = ("the main-memory roof is a copy counted as STREAM counts it, without the line each write first reads, so "
           "a layer that reads more than it writes can pass it; a cache's is one kernel's read rate (a sum), which "
           "another kernel may beat")


def _above_bandwidth(ok: pd.DataFrame) -> list[str]:
    """Rows whose bytes/s passed the measured roof of the memory level their working set fits
    (``bw_util_level`` above 1): said with that level, never shown as a utilization to believe."""
    if "bw_util_level" not in ok:
        return []
    cache = ok["roof_mem_cache"].eq(True) if "roof_mem_cache" in ok else pd.Series(False, index=ok.index)
    measured = cache | _num(ok, R.CEILING_BYTES).gt(0)       # a datasheet roof is not the copy's convention
    over = ok[_num(ok, "bw_util_level").gt(1) & measured].sort_values("bw_util_level", ascending=False)
    if over.empty:
        return []
    named = "; ".join(f"{describe_row(r)} {percent(r['bw_util_level'], 0)} of {r['roof_mem_level']}"
                      for _, r in over.head(SHOWN).iterrows())
    return wrap(f"above the measured bandwidth of their memory level ({_BW_WHY}): {len(over)} row(s): {named}",
                WIDTH, subsequent_indent="  ")


def trust_lines(ok: pd.DataFrame) -> list[str]:
    """Every line above, in reading order."""
    return [*modes_lines(ok), *canary_lines(ok), *clock_lines(ok), *above_lines(ok)]
