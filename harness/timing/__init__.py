"""Timing: the measuring loop (``measure``), when to stop (``stopping``),
statistics of the raw samples (``stats``) and the Measurement that holds them. Nothing here prints."""

from harness.backends.base import ClockSummary
from harness.timing.inputs import random_inputs, rotation_sets
from harness.timing.measure import measure
from harness.timing.measurement import Measurement
from harness.timing.stats import NOISY_REL_IQR, Stats
from harness.timing.stopping import FixedCount, RelativeCI, StoppingRule

__all__ = ["measure", "Measurement", "ClockSummary", "Stats", "NOISY_REL_IQR", "RelativeCI", "FixedCount",
           "StoppingRule", "random_inputs", "rotation_sets"]
