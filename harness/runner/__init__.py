"""Run a suite on a device: one row per case, each isolated, each stored the moment it is measured.

``context`` fixes what a run knows when it starts (device, machine, peaks and ceilings), ``rows``
turns one case into one row (a failing case is a row with its status and reason), ``loop`` runs
the cases in order, with resume and shards, and ``progress`` shows it.
"""

from harness.runner.context import RunContext, make_context, peak_dtype, resolve_peaks, row_id
from harness.runner.loop import DUPLICATE, RunSummary, parse_shard, run_suite, work_items
from harness.runner.rows import analytic_counts, build_row, case_seed, measure_case, prepare_case

__all__ = ["run_suite", "RunSummary", "parse_shard", "work_items", "RunContext", "make_context", "resolve_peaks",
           "peak_dtype", "row_id", "analytic_counts", "prepare_case", "measure_case", "build_row", "case_seed",
           "DUPLICATE"]
