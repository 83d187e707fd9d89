"""Statistics on known samples, and the stopping rules."""

import math
import random

import numpy as np
import pytest

from harness.errors import SpecError
from harness.timing.stats import NOISY_REL_IQR, Stats, median_ci_ranks, relative_ci
from harness.timing.stopping import BUDGET, CONVERGED, FIXED, MAX_REPS, FixedCount, RelativeCI


def test_stats_one_to_ten():
    s = Stats.of([float(v) for v in range(10, 0, -1)])   # order must not matter
    assert s.n == 10
    assert s.median == 5.5
    assert s.q1 == 3.25 and s.q3 == 7.75           # linear interpolation: 1 + 0.25 * 9 = 3.25
    assert s.iqr == 4.5
    assert (s.min, s.max, s.mean) == (1.0, 10.0, 5.5)
    assert s.std == pytest.approx(math.sqrt(sum((v - 5.5) ** 2 for v in range(1, 11)) / 9))  # 3.0277
    assert s.rel_iqr == pytest.approx(4.5 / 5.5)
    # n = 10: ranks floor(5 - 1.96*sqrt(10)/2) = 1 and ceil(1 + 5 + 3.099) = 10 -> [x(1), x(10)]
    assert (s.ci_low, s.ci_high) == (1.0, 10.0)
    assert s.rel_ci == pytest.approx(9 / 11)
    assert s.noisy and s.outliers == 0


def test_stats_constant_samples_are_quiet():
    s = Stats.of([2e-3] * 12)
    assert s.median == 2e-3 and s.iqr == 0 and s.std == pytest.approx(0, abs=1e-15) and s.rel_ci == 0
    assert not s.noisy


def test_stats_outlier_counted_not_dropped():
    s = Stats.of([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 100.0])
    assert s.outliers == 1 and s.max == 100.0 and s.n == 7
    assert s.median == 1.0 and s.mean == pytest.approx(106 / 7)


def test_stats_small_samples():
    one = Stats.of([3.0])
    assert one.std == 0 and one.noisy and math.isinf(one.rel_ci) and math.isnan(one.ci_low)
    assert Stats.of([1.0, 1.0]).noisy                        # fewer than 3 samples: no spread to speak of
    assert math.isinf(Stats.of([1.0] * 5).rel_ci)            # n = 5: the 95 % interval is not inside the sample
    with pytest.raises(ValueError, match="samples"):
        Stats.of([])


def test_noisy_threshold_is_the_named_one():
    base = [1.0] * 6
    # q1 = 1, q3 = 1 + spread: rel_iqr = spread exactly for these two-level samples
    quiet = Stats.of(base + [1.0 + NOISY_REL_IQR * 0.9] * 6)
    loud = Stats.of(base + [1.0 + NOISY_REL_IQR * 2.5] * 6)
    assert not quiet.noisy and loud.noisy


def test_median_ci_ranks_known_values():
    assert median_ci_ranks(5) is None
    assert median_ci_ranks(7) is None          # floor(3.5 - 2.59) = 0: below the first sample
    assert median_ci_ranks(8) == (0, 7)
    assert median_ci_ranks(10) == (0, 9)
    # n = 100: floor(50 - 9.8) = 40, ceil(1 + 50 + 9.8) = 61 (1-based)
    assert median_ci_ranks(100) == (39, 60)


def test_median_ci_covers_the_true_median_about_95_percent():
    rng = random.Random(7)
    hits, trials = 0, 2000
    for _ in range(trials):
        xs = sorted(rng.expovariate(1.0) for _ in range(50))
        lo, hi = median_ci_ranks(50)
        hits += xs[lo] <= math.log(2) <= xs[hi]        # median of Exp(1) = ln 2
    assert 0.93 <= hits / trials <= 0.985


def test_relative_ci_matches_stats():
    xs = sorted(np.random.default_rng(1).normal(1.0, 0.02, 40).tolist())
    assert relative_ci(xs) == pytest.approx(Stats.of(xs).rel_ci)


def test_relative_ci_rule():
    rule = RelativeCI(target=0.01, min_reps=10, min_time_s=0.5, budget_s=2.0, max_reps=50)
    quiet = [1.0] * 10
    assert rule.reason(quiet[:9], 1.0) is None                # too few samples
    assert rule.reason(quiet, 0.4) is None                    # too little time
    assert rule.reason(quiet, 0.6) == CONVERGED
    noisy = sorted([1.0, 2.0] * 10)
    assert rule.reason(noisy, 1.9) is None
    assert rule.reason(noisy, 2.0) == BUDGET
    assert rule.reason(sorted([1.0, 2.0] * 25), 0.1) == MAX_REPS
    assert FixedCount(3).reason([1, 2], 9.0) is None and FixedCount(3).reason([1, 2, 3], 0.0) == FIXED


@pytest.mark.parametrize("kwargs, field", [({"target": 0}, "target_rel_ci"), ({"min_reps": 0}, "min_reps"),
                                           ({"budget_s": 0}, "budget_s"), ({"max_reps": 5}, "max_reps")])
def test_relative_ci_rule_rejects_bad_settings(kwargs, field):
    with pytest.raises(SpecError, match=field):
        RelativeCI(**kwargs)
