"""Do numbers hold in a second process? Two complete runs of the same suites, compared.

    python benchmarks/stability.py [--processes 3] [--suites shufflenet-guidelines,quick] [--hog]
                                   [--worker-start fork-server|spawn|both]

For each suite, two complete runs (each a ``layerbench run`` process of its own, each case measured
in ``--processes`` fresh workers), then per case: whether the two runs' times agree within 3 % (rows
``stable`` in both), and whether every case that moved by more than 10 % is flagged (not
``stable``) in at least one run. ``--hog`` adds a third run beside a CPU hog (one spinning process
per CPU) and prints the share of its rows marked ``contended``. Prints the figures and wall times.
``--worker-start both`` runs everything with workers forked from the preloaded server and with
fresh interpreters, so the two can be compared (a forked worker must be as fresh as a spawned one).
Issue 11's goals: >= 90 % agree within 3 %; every > 10 % move flagged; >= 90 % contended under a hog.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from harness.store import load_results


def one_run(suite: str, out: Path, processes: int, start: str = "fork-server") -> tuple[pd.DataFrame, float]:
    """One complete run in its own ``layerbench run`` process (so even ``--processes 1`` is a
    second process for the second run): its rows and wall time."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness.cli", "run", suite, "--out", str(out), "--processes",
                    str(processes), "--quiet", "--no-report", "--calibrate", "never", "--worker-start", start],
                   check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    (run_dir,) = set(out.iterdir()) - before
    return load_results(run_dir), wall


def agreement(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    """Figures of two runs of one suite: stable-in-both agreement and flagged moves."""
    cols = ["case_id", "status", "time_median_s", "stability"]
    m = a[cols].merge(b[cols], on="case_id", suffixes=("_a", "_b"))
    m = m[(m.status_a == "ok") & (m.status_b == "ok")]
    ratio = m.time_median_s_b / m.time_median_s_a
    move = (ratio - 1).abs().where(ratio >= 1, (1 / ratio - 1).abs())
    both = (m.stability_a == "stable") & (m.stability_b == "stable")
    flagged = (m.stability_a != "stable") | (m.stability_b != "stable")
    moved = move > 0.10
    return {"cases": len(m), "stable_in_both": int(both.sum()),
            "agree_3pct": float((move[both] <= 0.03).mean()) if both.any() else float("nan"),
            "agree_10pct": float((move[both] <= 0.10).mean()) if both.any() else float("nan"),
            "moved_10pct": int(moved.sum()), "moved_and_flagged": int((moved & flagged).sum()),
            "flagged_a": int((m.stability_a != "stable").sum()), "flagged_b": int((m.stability_b != "stable").sum())}


def moves(a: pd.DataFrame, b: pd.DataFrame, over: float = 0.03) -> pd.DataFrame:
    """Cases whose time moved by more than ``over`` between the runs, with both verdicts."""
    cols = ["case_id", "family", "axes", "time_median_s", "process_medians_s", "stability", "stability_reason"]
    m = a[cols].merge(b[cols], on=["case_id", "family", "axes"], suffixes=("_a", "_b"))
    r = m.time_median_s_b / m.time_median_s_a
    m["move"] = r.where(r >= 1, 1 / r) - 1
    return m[m.move > over].sort_values("move", ascending=False)


def hog_run(suite: str, out: Path, processes: int, start: str = "fork-server") -> tuple[float, float]:
    """(share of rows marked contended, wall s) of a run beside one spinning process per CPU."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        frame, wall = one_run(suite, out, processes, start)
    finally:
        for h in hogs:
            h.kill()
    ok = frame[frame.status == "ok"]
    return float((ok.stability == "contended").mean()), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--suites", default="shufflenet-guidelines,quick")
    ap.add_argument("--hog", action="store_true", help="also run beside a CPU hog")
    ap.add_argument("--detail", action="store_true", help="list the cases that moved by more than 3 %%")
    ap.add_argument("--worker-start", default="fork-server", choices=["fork-server", "spawn", "both"],
                    help="how worker processes start (both: the whole benchmark once each way)")
    args = ap.parse_args()
    starts = ["fork-server", "spawn"] if args.worker_start == "both" else [args.worker_start]
    with tempfile.TemporaryDirectory() as tmp:
        for start in starts:
            for suite in args.suites.split(","):
                report(suite, Path(tmp) / start, args, start)


def report(suite: str, tmp: Path, args: argparse.Namespace, start: str) -> None:
    """Two runs of ``suite`` (and one beside a hog with ``--hog``): their agreement, printed."""
    a, wall_a = one_run(suite, tmp / "a", args.processes, start)
    b, wall_b = one_run(suite, tmp / "b", args.processes, start)
    fig = agreement(a, b)
    verdicts = pd.concat([a, b]).stability.value_counts().to_dict()
    print(f"{suite} (--processes {args.processes}, workers: {start}): {fig['cases']} cases, "
          f"wall {wall_a:.1f} s + {wall_b:.1f} s")
    print(f"  stable in both runs: {fig['stable_in_both']}; of those within 3 %: "
          f"{100 * fig['agree_3pct']:.0f} %, within 10 %: {100 * fig['agree_10pct']:.0f} %")
    print(f"  moved > 10 % between runs: {fig['moved_10pct']}, flagged in at least one run: "
          f"{fig['moved_and_flagged']}")
    print(f"  rows flagged (not stable): run 1 {fig['flagged_a']}, run 2 {fig['flagged_b']}; verdicts {verdicts}")
    if args.detail:
        for _, r in moves(a, b).iterrows():
            meds = ["/".join(f"{x * 1e6:.0f}" for x in r[f"process_medians_s_{k}"]) for k in "ab"]
            print(f"    {r['family']} {r['axes']}: {100 * r['move']:.0f} % ({meds[0]} vs {meds[1]} us): "
                  f"{r['stability_a']} / {r['stability_b']}")
    if args.hog:
        share, wall = hog_run(suite, tmp / "hog", args.processes, start)
        print(f"  beside a CPU hog: {100 * share:.0f} % of rows contended (wall {wall:.1f} s)")

if __name__ == "__main__":
    main()
