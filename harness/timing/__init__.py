"""Timing: the measuring loop (``measure``), when to stop (``stopping``), statistics of the raw
samples (``stats``), the Measurement that holds them, the stability verdict of a row measured in
one or more processes (``stability``), the host's load around a measurement (``hostload``), input
sets (``inputs``) and what ran (``profile``). Nothing here prints.

Names load on first use: ``stats``, ``stopping`` and ``stability`` are plain Python, and importing
them (the store reads verdicts of pytest-benchmark files) must not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"measure": "harness.timing.measure", "Measurement": "harness.timing.measurement",
         "ClockSummary": "harness.backends.base", "Stats": "harness.timing.stats",
         "NOISY_REL_IQR": "harness.timing.stats", "RelativeCI": "harness.timing.stopping",
         "FixedCount": "harness.timing.stopping", "StoppingRule": "harness.timing.stopping",
         "random_inputs": "harness.timing.inputs", "rotation_sets": "harness.timing.inputs"}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harness.timing' has no attribute {name!r}")
