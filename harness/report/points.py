"""Which rows the report draws and names: plain pandas, so that the report model (and
``layerbench export``) never import matplotlib; ``harness.report.plots`` draws them."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness import record as R
from harness.analysis.verdicts import is_set_aside

#: The roofline an outlier is judged against (``harness.analysis.metrics``).
FRACTION = "roof_level_fraction"


def drawable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows a plot can place: ok, with FLOPs and a time above zero."""
    return frame[(frame[R.STATUS] == "ok") & (pd.to_numeric(frame[R.FLOPS], errors="coerce") > 0)
                 & (pd.to_numeric(frame[R.TIME_MEDIAN], errors="coerce") > 0)]


def unstable(frame: pd.DataFrame) -> pd.Series:
    """Rows drawn hollow: those set aside (``harness.analysis.verdicts.is_set_aside``)."""
    return is_set_aside(frame)


def outliers(frame: pd.DataFrame) -> list[tuple[str, Any]]:
    """The slowest and the fastest ok row relative to its roofline (lowest and highest
    ``roof_level_fraction``, the hierarchical roofline whose memory roof is the level the working
    set fits; ``roofline_fraction`` where that is not derived): (``slowest``/``fastest``, row
    index); empty without a roofline."""
    column = FRACTION if FRACTION in frame else "roofline_fraction"
    f = pd.to_numeric(drawable(frame).get(column), errors="coerce").dropna() \
        if column in frame else pd.Series(dtype=float)
    if len(f) < 2:
        return []
    return [("slowest vs roofline", f.idxmin()), ("fastest vs roofline", f.idxmax())]
