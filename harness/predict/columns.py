"""The prediction columns of a derived table (``harness.analysis.derive`` calls ``predicted_columns``).

From stored columns alone every measured row gets its hierarchical roofline time
(``predicted_roofline_s``, ``harness.predict.roofline``) and, until a model is applied,
``predicted_s`` equal to it (``predicted_basis`` = ``roofline``). ``apply_models`` replaces
``predicted_s`` with an efficiency model's prediction on the rows of the machine, settings and
dtype it was fitted for (``predicted_basis`` = ``model``); the analysis never looks a model up
itself (it reads no file beside the rows): the caller passes the models it chose.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness import record as R
from harness.predict.roofline import num, roofline


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    unit: str
    doc: str


#: The columns ``predicted_columns`` adds (docs/predicting.md).
PREDICTED = (
    Column("predicted_roofline_s", "s", "hierarchical roofline time from the row's counts and stored ceilings: the "
           "largest of flops / the dtype's GEMM ceiling, the working set's time in the level it fits (the levels "
           "inside it serving their share first, each up to its capacity), and launches x the measured launch "
           "floor"),
    Column("predicted_bound", "-", "which of those bounds is largest: `compute`, `L1`, `L2`, `L3`, `DRAM`/`HBM` or "
           "`launch`"),
    Column("predicted_s", "s", "the predicted time: the efficiency model's (predicted_roofline_s over the fraction "
           "of its roof the machine reaches for such a layer) where a model of the row's machine, settings and "
           "dtype was applied, else predicted_roofline_s"),
    Column("predicted_basis", "-", "`model` or `roofline`: what predicted_s comes from"),
    Column("residual", "fraction", "time_median_s / predicted_s (above 1: slower than predicted)"),
)
BASIS_MODEL, BASIS_ROOFLINE = "model", "roofline"


def _measured(frame: pd.DataFrame) -> pd.Series:
    ok = frame[R.STATUS].astype(str).eq("ok") if R.STATUS in frame else pd.Series(True, index=frame.index)
    return ok & num(frame, R.TIME_MEDIAN).gt(0)


def predicted_columns(frame: pd.DataFrame, models: Iterable[Any] = ()) -> pd.DataFrame:
    """``frame`` with the ``PREDICTED`` columns (measured rows only; NaN/None elsewhere); ``models``:
    efficiency models to apply (``apply_models``)."""
    ok = _measured(frame)
    roof = roofline(frame)
    frame["predicted_roofline_s"] = roof["predicted_roofline_s"].where(ok)
    frame["predicted_bound"] = roof["predicted_bound"].where(ok, None)
    frame["predicted_s"] = frame["predicted_roofline_s"]
    frame["predicted_basis"] = pd.Series(BASIS_ROOFLINE, index=frame.index, dtype=object).where(
        frame["predicted_s"].notna(), None)
    frame["residual"] = num(frame, R.TIME_MEDIAN).where(ok) / frame["predicted_s"]
    return apply_models(frame, models) if models else frame


def apply_models(table: pd.DataFrame, models: Iterable[Any]) -> pd.DataFrame:
    """A table with ``predicted_columns`` where ``predicted_s`` (and ``residual``) come from the first
    model in ``models`` covering each measured row (``EfficiencyModel.covers`` and a fitted dtype)."""
    t = table if "predicted_s" in table else predicted_columns(table.copy())
    ok = _measured(t)
    done = pd.Series(False, index=t.index)
    for m in models:
        todo = ok & ~done
        if not todo.any():
            break
        p = m.predict(t[todo])["predicted_s"]
        hit = p[p.notna()].index
        t.loc[hit, "predicted_s"] = p.loc[hit]
        t.loc[hit, "predicted_basis"] = BASIS_MODEL
        done.loc[hit] = True
    t["residual"] = num(t, R.TIME_MEDIAN).where(ok) / t["predicted_s"]
    return t


def model_keys(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (machine_id, device type, settings_id) of the measured rows: the models that could cover them."""
    cols = [R.MACHINE_ID, R.DEVICE_TYPE, R.SETTINGS_ID]
    if not all(c in table for c in cols):
        return []
    rows = table[_measured(table)][cols].dropna().astype(str).drop_duplicates()
    return [tuple(r) for r in rows.itertuples(index=False)]


def residual_error(table: pd.DataFrame) -> pd.Series:
    """|predicted - measured| / measured of each row (NaN where either is missing)."""
    t = num(table, R.TIME_MEDIAN)
    return (num(table, "predicted_s") - t).abs() / t.where(t > 0)


def log_residual(table: pd.DataFrame) -> pd.Series:
    """log(residual): the size of a miss either way (a row 2x slower and one 2x faster are equally far)."""
    return np.log(num(table, "residual").where(lambda s: s > 0))
