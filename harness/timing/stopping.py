"""When to stop sampling: small strategies behind one interface (NVBench's stopping criteria).

A rule sees the samples so far (sorted, seconds per call) and the seconds spent sampling, and
returns the reason to stop, or ``None`` to go on. The measuring loop knows nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from harness.errors import SpecError
from harness.timing.stats import relative_ci

#: Stop reasons a Measurement can carry.
CONVERGED, BUDGET, MAX_REPS, FIXED = "converged", "budget", "max_reps", "fixed"


class StoppingRule(Protocol):
    """``reason(sorted_samples, elapsed_s)`` -> why to stop now, or ``None`` to take another sample."""

    def reason(self, sorted_samples: Sequence[float], elapsed_s: float) -> str | None: ...


@dataclass(frozen=True, slots=True)
class RelativeCI:
    """Stop once the median's 95 % confidence interval is within ``target`` of the median.

    Args:
        target: relative half-width of the median's CI to reach (0.01 = 1 %).
        min_reps: never stop on convergence with fewer samples (NVBench: 10).
        min_time_s: never stop on convergence before this much sampling time.
        budget_s: stop after this much sampling time whatever the noise (reason ``budget``).
        max_reps: stop after this many samples (reason ``max_reps``).
    """

    target: float = 0.01
    min_reps: int = 10
    min_time_s: float = 0.0
    budget_s: float = 2.0
    max_reps: int = 100_000

    def __post_init__(self) -> None:
        if not self.target > 0:
            raise SpecError("target_rel_ci", self.target, "a fraction > 0, e.g. 0.01")
        if self.min_reps < 1:
            raise SpecError("min_reps", self.min_reps, "an integer >= 1")
        if not self.budget_s > 0:
            raise SpecError("budget_s", self.budget_s, "seconds > 0")
        if self.max_reps < self.min_reps:
            raise SpecError("max_reps", self.max_reps, f"an integer >= min_reps ({self.min_reps})")

    def reason(self, sorted_samples: Sequence[float], elapsed_s: float) -> str | None:
        n = len(sorted_samples)
        if n >= self.max_reps:
            return MAX_REPS
        if n >= self.min_reps and elapsed_s >= self.min_time_s and relative_ci(sorted_samples) <= self.target:
            return CONVERGED
        if elapsed_s >= self.budget_s and n >= 1:
            return BUDGET
        return None


@dataclass(frozen=True, slots=True)
class FixedCount:
    """Take exactly ``reps`` samples (for reproducing another tool's fixed-count protocol)."""

    reps: int

    def __post_init__(self) -> None:
        if self.reps < 1:
            raise SpecError("reps", self.reps, "an integer >= 1")

    def reason(self, sorted_samples: Sequence[float], elapsed_s: float) -> str | None:
        return FIXED if len(sorted_samples) >= self.reps else None
