"""False-positive rate and detection rate of ``regress`` (``harness.analysis.regressions``: baseline since
the last change point, z against the history's robust noise, false-positive budget 0.001 per case).

Synthetic nights, seeded by measured noise: each case's night-to-night noise (sigma of the log median)
is taken from the committed quick-suite runs of a shared 2-core VM (``results/reference/``: the
spread of each case's median across its 4 runs of one build); a case without that takes the median
sigma. On top, a host "slow spell" (the caveat in docs/analysis.md, "Comparing runs": the same build 1.2-1.8x
slower on a few rows) hits a case-night with probability ``--spell`` (default 0.02).

For each trial: ``--history`` nights of an unchanged build, then one new night either unchanged
(false positives) or with every case 15 % slower (detection). Prints both rates per case-night and
per night (any case flagged).

    python benchmarks/regress_fp.py [--trials 60] [--history 20] [--spell 0.02] [--seed 0]
"""

from __future__ import annotations

import argparse
import glob
import time

import numpy as np
import pandas as pd

from harness import record as R
from harness.analysis import regressions
from harness.store import load_results

SLOWDOWN = 1.15


def measured_sigmas() -> list[float]:
    """Per case, the std of log(median) across the reference runs of one build and machine."""
    files = glob.glob("results/reference/*/quick-cpu-*") + glob.glob("results/reference/quick-cpu-*")
    if not files:
        return []
    f = load_results(files)
    f = f[(f[R.STATUS] == "ok") & f[R.TIME_MEDIAN].notna()]
    g = f.groupby([R.SETTINGS_ID, R.ROW_ID])[R.TIME_MEDIAN].agg(lambda s: np.log(s).std(ddof=1) if len(s) > 1
                                                               else np.nan)
    return [float(x) for x in g.dropna() if x > 0]


def _row(case: str, run: str, night: int, t: float, rel_iqr: float) -> dict:
    return {R.RUN_ID: run, R.ROW_ID: f"m:cpu:{case}", R.CASE_ID: case, R.STATUS: "ok", R.MACHINE_ID: "m",
            R.MACHINE_NAME: "synthetic", R.SETTINGS_ID: "s", R.TIME_MEDIAN: t, R.TIME_Q1: t * (1 - rel_iqr / 2),
            R.TIME_Q3: t * (1 + rel_iqr / 2), R.TIME_CI_LOW: t * 0.995, R.TIME_CI_HIGH: t * 1.005,
            R.STABILITY: "stable", R.TIMESTAMP: "2026-01-01T00:00:00+0000", "night": night,
            R.FAMILY: "f", R.LAYER: "relu", R.CONFIG: "{}", R.INPUT_SHAPES: case, R.MEMORY_FORMAT: "nchw",
            R.DTYPE: "fp32", R.TORCH_VERSION: "2.13"}


def night(rng: np.random.Generator, sigmas: np.ndarray, spell: float, factor: float = 1.0) -> np.ndarray:
    t = 1e-3 * np.exp(rng.normal(0, sigmas)) * factor
    slow = rng.random(len(sigmas)) < spell
    return np.where(slow, t * rng.uniform(1.2, 1.8, len(sigmas)), t)


def trial(rng: np.random.Generator, sigmas: np.ndarray, history: int, spell: float, factor: float) -> pd.DataFrame:
    rows = []
    for i in range(history):
        for c, t in enumerate(night(rng, sigmas, spell)):
            rows.append(_row(f"c{c}", f"h{i:03d}", i, t, 0.02))
    hist = pd.DataFrame(rows)
    hist[R.TIMESTAMP] = [f"2026-01-{1 + n // 24:02d}T{n % 24:02d}:00:00+0000" for n in hist["night"]]
    new = pd.DataFrame([_row(f"c{c}", "new", history, t, 0.02)
                        for c, t in enumerate(night(rng, sigmas, spell, factor))])
    return regressions(hist, new, threshold=0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--spell", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    measured = measured_sigmas()
    pool = np.array(measured) if measured else np.array([0.03])
    print(f"noise: {'measured' if measured else 'assumed'} night-to-night sigma of log median over "
          f"{len(pool)} case(s): median {np.median(pool):.3f}, max {pool.max():.3f}; slow spells p={args.spell}")
    rng = np.random.default_rng(args.seed)
    sigmas = rng.choice(pool, args.cases)
    start = time.time()
    for label, factor in (("unchanged build", 1.0), (f"every case {SLOWDOWN - 1:.0%} slower", SLOWDOWN)):
        flagged = {0.10: [], 0.15: []}
        for _ in range(args.trials):
            bad = trial(rng, sigmas, args.history, args.spell, factor)
            for thr in flagged:
                flagged[thr].append(int((bad["slowdown"] > 1 + thr).sum()))
        for thr, counts in flagged.items():
            per_case = sum(counts) / (args.trials * args.cases)
            per_night = sum(c > 0 for c in counts) / args.trials
            what = "false positives" if factor == 1.0 else "detected"
            print(f"{label}, threshold {thr:.0%}: {what} {per_case:.2%} of case-nights, {per_night:.0%} of nights "
                  f"with any ({args.trials} nights x {args.cases} cases, {args.history}-night history)")
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
