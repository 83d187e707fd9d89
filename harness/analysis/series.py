"""One case's history: per machine, settings and device, one point per run (night or commit), oldest
first: the run's median, its noise band (the wider of IQR and the median's CI), its date and commit."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness import record as R

#: A series is one case on one device of one machine under one threading setting.
SERIES_KEY = (R.MACHINE_ID, R.SETTINGS_ID, R.ROW_ID)


def band(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each row's noise band: the wider of its interquartile range and its median's 95 % CI. The
    CI alone narrows as samples accumulate while run-to-run drift does not; the IQR (the spread of
    single samples) keeps two runs of the same build from reading as a change."""
    med = frame[R.TIME_MEDIAN]
    nan = pd.Series(np.nan, index=frame.index)
    q1, q3 = frame.get(R.TIME_Q1, nan).fillna(med), frame.get(R.TIME_Q3, nan).fillna(med)
    lo = np.fmin(frame.get(R.TIME_CI_LOW, nan), q1)
    hi = np.fmax(frame.get(R.TIME_CI_HIGH, nan), q3)
    return lo, hi


def nightly(frame: pd.DataFrame) -> pd.DataFrame:
    """Measured ok rows, one per run and series, ordered by each run's first timestamp; columns: the
    series key, ``run_id``, ``when``, ``git_commit``, ``time_median_s``, ``low_s``, ``high_s`` and the
    case's description columns. No stability filter: callers pass the judged rows
    (``harness.analysis.verdicts.judged``)."""
    ok = frame[(frame[R.STATUS] == "ok") & frame[R.TIME_MEDIAN].notna()].copy()
    ok["low_s"], ok["high_s"] = band(ok)
    when = ok.groupby(R.RUN_ID)[R.TIMESTAMP].transform("min")
    ok["when"] = pd.to_datetime(when, errors="coerce", utc=True, format="ISO8601")
    ok = ok.drop_duplicates([*SERIES_KEY, R.RUN_ID], keep="last")
    return ok.sort_values(["when", R.RUN_ID], kind="stable").reset_index(drop=True)
