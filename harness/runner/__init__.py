"""Run a suite on a device: one row per case, each isolated, each stored the moment it is measured.

``context`` fixes what a run knows when it starts (the resolved device, the machine, peaks and
ceilings), ``rows`` turns one case into one row (a failing case is a row with its status and
reason), ``loop`` runs the cases in order, ``resume`` finds and checks the run a ``--resume``
continues, ``workers`` (the parent) and ``worker`` (the child) measure cases in fresh processes
started by ``launch`` (from the ``forkserver``), ``repeats`` merges their rows, ``tally`` counts
what was stored and ``progress`` shows it.

Names load on first use: ``harness.runner.launch`` imports no torch, so a command can start a run's
fork server before it imports torch itself.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"run_suite": "harness.runner.loop", "RunSummary": "harness.runner.loop", "work_items": "harness.runner.loop",
         "DUPLICATE": "harness.runner.loop", "parse_shard": "harness.runner.resume",
         "RunContext": "harness.runner.context", "make_context": "harness.runner.context",
         "resolve_peaks": "harness.runner.context", "analytic_counts": "harness.runner.rows",
         "prepare_case": "harness.runner.rows", "prepare_pass": "harness.runner.rows",
         "measure_case": "harness.runner.rows",
         "build_row": "harness.runner.rows", "case_seed": "harness.runner.rows"}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harness.runner' has no attribute {name!r}")
