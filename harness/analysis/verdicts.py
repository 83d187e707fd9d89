"""Which measured rows verdicts may use: the one rule that findings, the report, the end-of-run
summary, ``compare``, ``regress`` and the history site share (findings across processes, the one
use of set-aside rows, are ``harness.analysis.findings``').

The rule, on the ``stability`` column:

- a row is **measured** when its ``status`` is ``ok``; rows not measured (error, skipped, ...)
  are neither judged nor set aside;
- a measured row is **judged** (its time may carry a finding, a compare verdict or a regression)
  when its ``stability`` is ``stable`` or null. Null on a measured row means no verdict was
  recorded (a hand-built frame, or a file whose rows carry none): nothing says it is unstable, so
  it is used, but it is counted as ``no verdict``, never as ``stable``;
- a measured row whose ``stability`` is anything else (``noisy``, ``bimodal``, ``contended``,
  ``host-slowed``) is
  **set aside**: counted by its value and left out of every verdict on its median. It may still
  carry a finding **across processes** (``harness.analysis.findings.cross_process_findings``):
  measured in at least 3 worker processes, when every process of one layer took at least 1.1x as
  long as every process of an equal-FLOPs layer of its run.
"""

from __future__ import annotations

import json
import re

import pandas as pd

from harness import record as R
from harness.timing.modes import held_clause

#: The stored verdict of a row whose time holds across processes.
STABLE = R.Stability.STABLE.value
#: The label of a measured row with a null ``stability`` (used, but not called stable).
NO_VERDICT = "no verdict"
#: What happens to set-aside rows, in the one sentence every output prints.
SET_ASIDE_RULE = ("compare and regress leave them out, findings use them only where every process of one layer "
                  "took 1.1x or more of every process of the other")
#: Labels whose rows verdicts may use.
JUDGED = (STABLE, NO_VERDICT)


#: The derived column holding ``labels`` (``harness.analysis.derive`` adds it once per table).
LABEL = "stability_label"


def labels(frame: pd.DataFrame) -> pd.Series:
    """Each row's stability label: the stored value, or ``NO_VERDICT`` where it is null (or the
    column is absent); read from ``LABEL`` when the table is derived (computed once per table)."""
    if LABEL in frame:
        return frame[LABEL]
    col = frame[R.STABILITY] if R.STABILITY in frame else pd.Series(None, index=frame.index, dtype=object)
    return col.astype(object).where(col.notna(), NO_VERDICT).astype(str)


def usable(label: pd.Series) -> pd.Series:
    """Whether each label lets its row be judged (``stable`` or ``no verdict``)."""
    return label.isin(JUDGED)


def measured(frame: pd.DataFrame) -> pd.Series:
    """Rows with status ``ok``."""
    return frame[R.STATUS].eq("ok")


def is_judged(frame: pd.DataFrame) -> pd.Series:
    """Measured rows verdicts may use (the rule above)."""
    return measured(frame) & usable(labels(frame))


def is_set_aside(frame: pd.DataFrame) -> pd.Series:
    """Measured rows left out of every verdict: a stored stability other than ``stable``."""
    return measured(frame) & ~usable(labels(frame))


def judged(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` verdicts may use."""
    return frame[is_judged(frame)]


def count(label: pd.Series) -> dict[str, int]:
    """Rows per label: ``stable`` first, then ``no verdict``, then the others by name."""
    n = label.value_counts()
    order = [k for k in JUDGED if k in n] + sorted(k for k in n.index if k not in JUDGED)
    return {str(k): int(n[k]) for k in order}


def counts(frame: pd.DataFrame) -> dict[str, int]:
    """Measured rows per stability label (``{"stable": 3, "no verdict": 1, "noisy": 2}``)."""
    return count(labels(frame[measured(frame)]))


def set_aside(frame: pd.DataFrame) -> dict[str, int]:
    """Set-aside rows per stability value, by name (``{"bimodal": 1, "noisy": 2}``)."""
    return count(labels(frame[is_set_aside(frame)]))


def set_aside_of(label: pd.Series) -> dict[str, int]:
    """``set_aside`` over labels already drawn (the set-aside ones among them, per value)."""
    return count(label[~usable(label)])


def set_aside_text(aside: dict[str, int], of: str = "") -> str | None:
    """The one sentence for set-aside rows, ``None`` when there are none:
    ``"3 measured rows of B set aside, not stable (1 bimodal, 2 noisy): "`` and ``SET_ASIDE_RULE``
    (``of``: ``" of B"``, ``" of the new run"`` or nothing)."""
    n = sum(aside.values())
    if not n:
        return None
    parts = ", ".join(f"{v} {k}" for k, v in aside.items())
    return (f"{n} measured row{'s' if n != 1 else ''}{of} set aside, not stable ({parts}): "
            f"{SET_ASIDE_RULE}")


def _one_process(frame: pd.DataFrame) -> bool:
    """Whether every measured row with a stored process count was measured by one process."""
    if R.PROCESSES not in frame:
        return False
    n = pd.to_numeric(frame.loc[measured(frame), R.PROCESSES], errors="coerce").dropna()
    return bool(len(n)) and bool((n <= 1).all())


def counts_text(frame: pd.DataFrame) -> str:
    """``"stability: 3 stable, 1 no verdict, 2 noisy"`` over the measured rows, then the
    set-aside sentence when any row is set aside."""
    per = counts(frame)
    text = "stability: " + (", ".join(f"{v} {k}" for k, v in per.items()) or "no measured row")
    if per.get(NO_VERDICT):
        text += f" ({NO_VERDICT}: none recorded; used, not called stable)"
    if per.get(STABLE) and _one_process(frame):
        text += (" (each case in one process: stable within it, never checked in another; --processes 3 "
                 "measures each case in three fresh ones)")
    aside = set_aside_text(set_aside(frame))
    return text + (f"; {aside}" if aside else "")


#: The clause of a two-speeds reason naming the mode that holds the row's time (``modes.describe``).
_HELD = re.compile(r"the row's time is the (first|second)(?=;|$| \()")


def held(text: str, row: pd.Series) -> str:
    """``text`` (a reason, or its two-speeds sentence) with "the row's time is the first" made "the
    row's time, 760 us, falls in the first" where the row's time prints otherwise than that mode's
    median (``modes`` column): reasons stored before the sentence said so."""
    found = _HELD.search(text)
    raw = row.get(R.MODES_COLUMN)
    t = row.get(R.TIME_MEDIAN)
    if not found or not isinstance(raw, str) or not isinstance(t, float) or not t > 0:
        return text
    try:
        modes = json.loads(raw)
        mid = modes[0 if found.group(1) == "first" else 1]["median_s"]
    except (ValueError, LookupError, TypeError):
        return text
    if not isinstance(mid, (int, float)):
        return text
    return text[:found.start()] + held_clause(found.group(1), t, mid) + text[found.end():]
