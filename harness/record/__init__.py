"""The record: what one stored row is (``row``: its typed parts, columns and Arrow schema), what one
stored run is (``run``: its metadata, file names and time formats), and the identities both carry
(``ids``). Everything here is declared once and read by attribute; nothing imports torch.

``from harness import record as R`` gives the row's declarations and column names in one namespace
(every upper-case string in it names a column), and the run's record (``RunMeta``, ``RunFiles``).
"""

from harness.record.row import *  # noqa: F403  (the row's parts, columns and schema: ``R.TIME_MEDIAN``, ``R.Row``)
from harness.record.row import __all__ as _row_names
from harness.record.run import (
    MAX_RUN_ID,
    SAFE_NAME,
    Repeats,
    RunFiles,
    RunMeta,
    default_run_id,
    now_iso,
    run_stamp,
    safe_name,
    shard_label,
)

__all__ = [*_row_names, "MAX_RUN_ID", "SAFE_NAME", "Repeats", "RunFiles", "RunMeta",
           "default_run_id", "now_iso", "run_stamp", "safe_name", "shard_label"]
