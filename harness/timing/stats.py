"""Statistics of timing samples: a pure function of the raw samples (seconds per call).

Robust summaries come first (median, interquartile range, a distribution-free confidence
interval of the median); mean and standard deviation are kept for comparison with tools that
report them (NVBench, pytest-benchmark). Nothing here times or prints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: A measurement whose interquartile range exceeds this fraction of its median is ``noisy``.
#: torch.utils.benchmark warns at the same 10 % ("system fluctuation").
NOISY_REL_IQR = 0.10
#: Fewer samples than this give no spread worth the name: such a measurement is ``noisy`` too.
MIN_SAMPLES_FOR_SPREAD = 3
#: Two-sided normal quantile of the median's confidence interval (95 %).
CI_Z = 1.959963984540054


def median_ci_ranks(n: int, z: float = CI_Z) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the sorted samples bounding the median's confidence interval.

    Distribution-free (binomial) interval: ranks ``n/2 - z*sqrt(n)/2`` rounded down and
    ``1 + n/2 + z*sqrt(n)/2`` rounded up, 1-based (Conover, *Practical Nonparametric
    Statistics*, 3rd ed., §3.2). ``None`` when ``n`` is too small for the interval to lie inside
    the sample (n < 8 at 95 %).
    """
    half = z * math.sqrt(n) / 2
    lo = math.floor(n / 2 - half)
    hi = math.ceil(1 + n / 2 + half)
    if lo < 1 or hi > n:
        return None
    return lo - 1, hi - 1


def relative_ci(sorted_samples: Sequence[float], z: float = CI_Z) -> float:
    """Half-width of the median's confidence interval over the median (``inf`` when undefined)."""
    n = len(sorted_samples)
    ranks = median_ci_ranks(n, z)
    if ranks is None:
        return math.inf
    med = _median_sorted(sorted_samples)
    if med <= 0:
        return math.inf
    return (sorted_samples[ranks[1]] - sorted_samples[ranks[0]]) / (2 * med)


def _median_sorted(s: Sequence[float]) -> float:
    n = len(s)
    mid = n // 2
    return float(s[mid]) if n % 2 else (s[mid - 1] + s[mid]) / 2


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of timing samples, all times in seconds per call.

    ``rel_iqr`` = IQR / median; ``rel_std`` = std / mean; ``rel_ci`` = half-width of the
    median's 95 % confidence interval / median; quartiles by linear interpolation (numpy's
    default, as torch.utils.benchmark); ``outliers`` counts samples beyond 1.5 IQR of the
    quartiles (Tukey, as pytest-benchmark), none of them dropped.
    """

    n: int
    median: float
    q1: float
    q3: float
    iqr: float
    min: float
    max: float
    mean: float
    std: float
    rel_iqr: float
    rel_std: float
    ci_low: float
    ci_high: float
    rel_ci: float
    outliers: int
    noisy: bool

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        """Statistics of ``samples`` (seconds per call; at least one)."""
        if len(samples) == 0:
            raise ValueError("samples: empty; expected at least one timing sample")
        a = np.sort(np.asarray(samples, dtype=np.float64))
        n = int(a.size)
        q1, med, q3 = (float(v) for v in np.quantile(a, [0.25, 0.5, 0.75]))
        iqr = q3 - q1
        mean = float(a.mean())
        std = float(a.std(ddof=1)) if n > 1 else 0.0
        ranks = median_ci_ranks(n)
        lo, hi = (float(a[ranks[0]]), float(a[ranks[1]])) if ranks else (math.nan, math.nan)
        rel_ci = (hi - lo) / (2 * med) if ranks and med > 0 else math.inf
        rel_iqr = iqr / med if med > 0 else math.inf
        outliers = int(((a < q1 - 1.5 * iqr) | (a > q3 + 1.5 * iqr)).sum())
        return cls(n=n, median=med, q1=q1, q3=q3, iqr=iqr, min=float(a[0]), max=float(a[-1]), mean=mean,
                   std=std, rel_iqr=rel_iqr, rel_std=std / mean if mean > 0 else math.inf, ci_low=lo,
                   ci_high=hi, rel_ci=rel_ci, outliers=outliers,
                   noisy=bool(n < MIN_SAMPLES_FOR_SPREAD or rel_iqr > NOISY_REL_IQR))
