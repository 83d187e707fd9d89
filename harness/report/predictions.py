"""Predicted against measured: per family how close ``predicted_s`` (the efficiency model's where one
was applied, else the hierarchical roofline; ``harness.predict.columns``) came to the measured time,
and the rows it missed most, with what their counts say about why (``harness.predict.explain``).
Shown by the end-of-run summary, the report (a section and a log-log plot) and ``layerbench
residuals``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness import record as R
from harness.analysis.findings import describe_row
from harness.analysis.verdicts import is_set_aside
from harness.predict.columns import BASIS_MODEL, log_residual, residual_error
from harness.predict.explain import explain
from harness.predict.features import features
from harness.report.wrap import WIDTH, wrap

#: Rows the summary names (the report and ``layerbench residuals`` name ``WORST_REPORT``).
WORST_SUMMARY, WORST_REPORT = 3, 10


@dataclass(frozen=True)
class PredictionsView:
    """Per family (and basis): rows, median |error|, shares within 10 % and 20 %, the range of the
    residual; the worst rows (index into the table, one sentence each); and what the predictions rest on."""

    families: pd.DataFrame
    worst: tuple[tuple[Any, str], ...]
    basis: dict[str, int]
    models: tuple[str, ...] = ()
    #: Rows measured (status ``ok``), with a prediction or not: an empty view of a run that measured
    #: nothing says so, not that no roof was stored.
    measured: int = 0

    @property
    def empty(self) -> bool:
        return self.families.empty


def predictions_view(table: pd.DataFrame, worst: int = WORST_REPORT, models: tuple[str, ...] = ()) -> PredictionsView:
    """The view of a derived table (``harness.analysis.derive``, models applied or not)."""
    measured = int(table[R.STATUS].eq("ok").sum()) if R.STATUS in table else 0
    if "predicted_s" not in table:
        return PredictionsView(pd.DataFrame(), (), {}, models, measured)
    ok = table[table[R.STATUS].eq("ok") & pd.to_numeric(table["predicted_s"], errors="coerce").gt(0)]
    if ok.empty:
        return PredictionsView(pd.DataFrame(), (), {}, models, measured)
    err = residual_error(ok)
    res = pd.to_numeric(ok["residual"], errors="coerce")
    rows = []
    for (family, basis), g in ok.groupby([ok[R.FAMILY].astype(str), ok["predicted_basis"].astype(str)], sort=False):
        e, r = err.loc[g.index], res.loc[g.index]
        rows.append({"family": family, "basis": basis, "rows": len(g), "median_error": float(e.median()),
                     "within_10": float((e <= 0.10).mean()), "within_20": float((e <= 0.20).mean()),
                     "residual_min": float(r.min()), "residual_max": float(r.max()),
                     "set_aside": int(is_set_aside(g).sum())})
    size = log_residual(ok).abs().sort_values(ascending=False)
    aside = is_set_aside(ok)
    named = size.index[:worst]
    feats = features(ok.loc[named]) if len(named) else pd.DataFrame()      # one pass for all named rows
    worst_rows = tuple((idx, f"{ok.at[idx, R.FAMILY]} {describe_row(ok.loc[idx])}{'*' if aside.loc[idx] else ''}: "
                        f"{explain(ok.loc[idx], feat=feats.iloc[i])}") for i, idx in enumerate(named))
    basis = {str(k): int(v) for k, v in ok["predicted_basis"].value_counts().items()}
    return PredictionsView(pd.DataFrame(rows), worst_rows, basis, models, measured)


def _pct(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{100 * v:.0f} %"


def lines(view: PredictionsView, worst: int = WORST_SUMMARY) -> list[str]:
    """The summary's lines: one per family, then the ``worst`` rows."""
    if view.empty:
        return ["predicted vs measured: " + ("no row measured" if not view.measured else
                                             "no measured row with a prediction (no roof stored)")]
    on, rest = view.basis.get(BASIS_MODEL, 0), sum(n for k, n in view.basis.items() if k != BASIS_MODEL)
    what = (f"the efficiency model on {on} row(s)" + (f", the roofline on the other {rest}" if rest else "") if on
            else "the roofline alone; `layerbench fit` learns an efficiency model")
    out = [f"predicted vs measured ({what}):"]
    width = max(len(f) for f in view.families["family"])
    for _, r in view.families.iterrows():
        out.append(f"  {r['family']:<{width}}  {r['basis']:<8} {r['rows']:>3} rows: median error "
                   f"{_pct(r['median_error'])}, {_pct(r['within_10'])} / {_pct(r['within_20'])} within 10 / 20 %; "
                   f"residual {r['residual_min']:.2f}x..{r['residual_max']:.2f}x")
    if view.worst[:worst]:
        out.append("largest residuals (measured vs predicted; * not stable):")
        for i, (_, text) in enumerate(view.worst[:worst], 1):
            out += _wrap(f"{i}. {text}")
    return out


def _wrap(text: str) -> list[str]:
    return wrap(text, WIDTH, initial_indent="  ", subsequent_indent="     ")


def as_json(view: PredictionsView, table: pd.DataFrame) -> dict[str, Any]:
    fam = json.loads(view.families.to_json(orient="records", double_precision=6)) if not view.empty else []
    worst = [{"case_id": table.at[idx, R.CASE_ID], "run_id": table.at[idx, R.RUN_ID], "text": text,
              "time_median_s": _num(table.at[idx, R.TIME_MEDIAN]), "predicted_s": _num(table.at[idx, "predicted_s"]),
              "predicted_basis": table.at[idx, "predicted_basis"], "residual": _num(table.at[idx, "residual"])}
             for idx, text in view.worst]
    return {"basis": view.basis, "models": list(view.models), "families": fam, "worst": worst}


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def view_of(model: Any) -> PredictionsView:
    """The predictions view a report model holds (built from its table when it holds none)."""
    view = getattr(model, "predictions", None)
    return view if isinstance(view, PredictionsView) else predictions_view(model.table)
