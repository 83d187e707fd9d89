"""Run a suite on a device: one row per case, each isolated, each stored the moment it is measured.

``context`` fixes what a run knows when it starts (the resolved device, the machine, peaks and
ceilings), ``rows`` turns one case into one row (a failing case is a row with its status and
reason), ``loop`` runs the cases in order, ``resume`` finds and checks the run a ``--resume``
continues, ``workers`` (the parent) and ``worker`` (the child) measure cases in fresh processes
started by ``forkserver``, ``repeats`` merges their rows, ``tally`` counts what was stored and
``progress`` shows it.
"""

from harness.runner.context import RunContext, make_context, resolve_peaks
from harness.runner.loop import DUPLICATE, RunSummary, run_suite, work_items
from harness.runner.resume import parse_shard
from harness.runner.rows import analytic_counts, build_row, case_seed, measure_case, prepare_case

__all__ = ["run_suite", "RunSummary", "parse_shard", "work_items", "RunContext", "make_context", "resolve_peaks",
           "analytic_counts", "prepare_case", "measure_case", "build_row", "case_seed", "DUPLICATE"]
