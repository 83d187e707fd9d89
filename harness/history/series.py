"""One case's history: per machine, settings and device, one point per run (night or commit), oldest
first: the run's median, its noise band (the wider of IQR and the median's CI), its date and commit."""

from __future__ import annotations

import pandas as pd

from harness import record as R

#: A series is one case on one device of one machine under one threading setting.
SERIES_KEY = (R.MACHINE_ID, R.SETTINGS_ID, R.ROW_ID)


def nightly(frame: pd.DataFrame) -> pd.DataFrame:
    """Measured ok rows, one per run and series, ordered by each run's first timestamp; columns: the
    series key, ``run_id``, ``when``, ``git_commit``, ``time_median_s``, ``low_s``, ``high_s`` and the
    case's description columns. No stability filter: callers pass the judged rows
    (``harness.analysis.verdicts.judged``)."""
    from harness.analysis.compare import band
    ok = frame[(frame[R.STATUS] == "ok") & frame[R.TIME_MEDIAN].notna()].copy()
    ok["low_s"], ok["high_s"] = band(ok)
    when = ok.groupby(R.RUN_ID)[R.TIMESTAMP].transform("min")
    ok["when"] = pd.to_datetime(when, errors="coerce", utc=True, format="ISO8601")
    ok = ok.drop_duplicates([*SERIES_KEY, R.RUN_ID], keep="last")
    return ok.sort_values(["when", R.RUN_ID], kind="stable").reset_index(drop=True)
