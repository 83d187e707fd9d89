"""Cells for people: times in automatic units, rates with SI prefixes, fractions as percentages,
parameters as short ``k=3 g=64`` text. Used by every renderer; the stored table is never changed."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from harness import record as R
from harness.analysis.findings import describe_row, device_label
from harness.analysis.metrics import DERIVED
from harness.units import percent, seconds, si

#: The columns the report's row tables show (the full table is ``rows.csv`` beside the report).
SHOWN = [("case", "the layer, its non-default parameters and input"), (R.DTYPE, "dtype"),
         ("where", "device (GPU name) or machine (CPU)"), (R.TIME_MEDIAN, "median time per call"),
         (R.REL_IQR, "IQR / median: the spread of samples"),
         ("achieved_flops_s", "achieved FLOP/s"), ("util_ceiling", "of the measured GEMM ceiling"),
         ("util_peak", "of the theoretical peak (datasheet or formula)"),
         ("roofline_fraction", "roofline time / measured time"), ("label", "what bounds the row"),
         (R.STATUS, "ok / skipped / oom / error")]

_FORMAT: dict[str, Callable[[object], str]] = {}


def _fmt_rate(unit: str) -> Callable[[object], str]:
    return lambda v: si(float(v), unit) if pd.notna(v) else ""


def cell(column: str, v: object) -> str:
    """One value as a person reads it."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if column.endswith("_flops_s"):
        return si(float(v), "FLOP/s")
    if column.endswith("_bytes_s"):
        return si(float(v), "B/s")
    if column.endswith("_s"):
        return seconds(float(v))
    if column.startswith(("util_", "bw_util_")) or column in ("roofline_fraction", R.REL_IQR, R.REL_CI):
        return percent(float(v))
    if column in (R.INTENSITY,):
        return f"{float(v):.3g}"
    if column in (R.FLOPS, R.MACS, R.BYTES_READ, R.BYTES_WRITTEN, R.PARAMS):
        return si(float(v))
    return str(v)


def rows_view(table: pd.DataFrame) -> pd.DataFrame:
    """The chosen columns of ``table`` formatted for reading (``SHOWN``)."""
    out = pd.DataFrame(index=table.index)
    for name, _ in SHOWN:
        if name == "case":
            out["case"] = [f"{r[R.FAMILY]}: {describe_row(r)}" for _, r in table.iterrows()]
        elif name == "where":
            out["where"] = [device_label(r) for _, r in table.iterrows()]
        elif name in table:
            out[name] = [cell(name, v) for v in table[name]]
    return out.reset_index(drop=True)


def glossary() -> list[tuple[str, str, str]]:
    """(column, unit, meaning) for every stored and derived column."""
    return [(c.name, c.unit, c.doc) for c in R.COLUMNS] + [(d.name, d.unit, d.doc) for d in DERIVED]


def peaks_view(peaks: pd.DataFrame) -> pd.DataFrame:
    """The stored peaks table for reading: each value in its unit, the source named."""
    shown = [R.MACHINE_NAME, R.DEVICE, R.PEAK_DTYPE, R.THREADS, R.PEAK_FLOPS, R.PEAK_BYTES, R.PEAK_SOURCE,
             R.CEILING_FLOPS, R.CEILING_BYTES, R.CEILING_SOURCE, "ceiling_measured_at"]
    out = peaks[[c for c in shown if c in peaks]].copy()
    for c in out.columns:
        out[c] = [cell(c, v) for v in out[c]]
    return out.rename(columns={R.PEAK_FLOPS: "peak FLOP/s", R.PEAK_BYTES: "peak B/s", R.PEAK_SOURCE: "peak source",
                               R.CEILING_FLOPS: "measured FLOP/s", R.CEILING_BYTES: "measured B/s",
                               R.CEILING_SOURCE: "ceiling", "ceiling_measured_at": "measured at"})
