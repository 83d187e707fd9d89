"""layerbench: how fast neural-network layers run, next to what the arithmetic says they should.

Pipeline: suite -> cases (``harness.suite``) -> analytic counts (``harness.count``) + timing
(``harness.timing`` on a ``harness.backends`` backend) -> rows (``harness.record``) -> store
(``harness.store``) -> analysis (``harness.analysis``) -> report (``harness.report``).

Attributes are imported on first use, so ``import harness`` (and ``layerbench --help``) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "count": "harness.analytic.count", "totals": "harness.analytic.count", "measure": "harness.timing",
    "Measurement": "harness.timing", "load_results": "harness.store", "load_runs": "harness.store",
    "conventions": "harness.analytic.catalog", "get_convention": "harness.analytic.catalog",
    "SpecError": "harness.errors", "CountError": "harness.errors", "LayerbenchError": "harness.errors",
}
__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
