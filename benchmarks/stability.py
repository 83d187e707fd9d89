"""Do numbers hold in a second process? Two complete runs of the same suites, compared.

    python benchmarks/stability.py [--processes 3] [--suites shufflenet-guidelines,quick] [--hog]
                                   [--hogs N] [--worker-start fork-server|spawn|both] [--keep DIR]

For each suite, two complete runs (each a ``layerbench run`` process of its own, each case measured
in ``--processes`` fresh workers), then per case: whether the two runs' times agree within 3 % (rows
``stable`` in both), and whether every case that moved by more than 10 % is flagged (not
``stable``) in at least one run; the sample blocks the host canary set aside; and for each candidate
finding both runs timed interleaved, whether their interleaved ratios (median over processes) agree
within 5 %, with each process's ratio beside them. ``--hog`` adds a third run beside ``--hogs``
spinning processes (default 1) and prints the share of its rows flagged (not ``stable``), its
verdicts, and its findings: confirmed ones, and unconfirmed ones (never printed as findings).
Prints the figures and wall times; ``--keep DIR`` keeps the runs (``DIR/<start>/<suite>/a``, ``b``).
``--worker-start both`` runs everything with workers forked from the preloaded server and with
fresh interpreters, so the two can be compared (a forked worker must be as fresh as a spawned one).
Goals on a shared 2-vCPU VM: >= 50 % of rows stable in both runs, >= 90 % of those within 3 %; every
> 10 % move flagged; interleaved ratios within 5 % between the runs; beside a hog every row flagged
and no unconfirmed finding printed as a finding.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from harness.analysis.findings import describe_row
from harness.report.model import build_model
from harness.store import Loaded, load_runs


def one_run(suite: str, out: Path, processes: int, start: str = "fork-server") -> tuple[Loaded, float]:
    """One complete run in its own ``layerbench run`` process (so even ``--processes 1`` is a
    second process for the second run): what it stored (rows, confirmations) and its wall time."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness.cli", "run", suite, "--out", str(out), "--processes",
                    str(processes), "--quiet", "--no-report", "--calibrate", "never", "--worker-start", start],
                   check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    (run_dir,) = set(out.iterdir()) - before
    return load_runs([run_dir]), wall


def interleaved_ratios(loaded: Loaded) -> dict[tuple[str, str], tuple[float, list[float]]]:
    """(slow case, fast case) -> (the median over processes of the interleaved ratio, each process's)."""
    c, frame = loaded.confirmations, loaded.frame
    case = dict(zip(frame["row_id"], frame["case_id"]))
    out = {}
    for (slow, fast), g in c.groupby(["slow_row_id", "fast_row_id"]):
        ratios = [float(pd.Series(s).div(pd.Series(f)).median()) for s, f in zip(g["slow_s"], g["fast_s"])]
        out[(case.get(slow, slow), case.get(fast, fast))] = (float(pd.Series(ratios).median()), ratios)
    return out


def shown(ratio: tuple[float, list[float]]) -> str:
    """``1.496x (1.21/1.50/1.52 per process)``."""
    return f"{ratio[0]:.3f}x ({'/'.join(f'{r:.2f}' for r in ratio[1])} per process)"


def agreement(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, float]:
    """Figures of two runs of one suite: stable-in-both agreement and flagged moves."""
    cols = ["case_id", "status", "time_median_s", "stability", "canary_s"]
    m = a[cols].merge(b[cols], on="case_id", suffixes=("_a", "_b"))
    m = m[(m.status_a == "ok") & (m.status_b == "ok")]
    ratio = m.time_median_s_b / m.time_median_s_a
    move = (ratio - 1).abs().where(ratio >= 1, (1 / ratio - 1).abs())
    scaled = ratio / (m.canary_s_b / m.canary_s_a)          # each time over its canary: the host's speed out
    scaled_move = (scaled - 1).abs().where(scaled >= 1, (1 / scaled - 1).abs())
    both = (m.stability_a == "stable") & (m.stability_b == "stable")
    flagged = (m.stability_a != "stable") | (m.stability_b != "stable")
    moved = move > 0.10
    return {"cases": len(m), "stable_in_both": int(both.sum()),
            "agree_3pct": float((move[both] <= 0.03).mean()) if both.any() else float("nan"),
            "agree_10pct": float((move[both] <= 0.10).mean()) if both.any() else float("nan"),
            "agree_3pct_scaled": float((scaled_move[both] <= 0.03).mean()) if both.any() else float("nan"),
            "median_move": float(move.median()), "median_move_scaled": float(scaled_move.median()),
            "moved_10pct": int(moved.sum()), "moved_and_flagged": int((moved & flagged).sum()),
            "flagged_a": int((m.stability_a != "stable").sum()), "flagged_b": int((m.stability_b != "stable").sum())}


def moves(a: pd.DataFrame, b: pd.DataFrame, over: float = 0.03) -> pd.DataFrame:
    """Cases whose time moved by more than ``over`` between the runs, with both verdicts."""
    cols = ["case_id", "family", "axes", "time_median_s", "process_medians_s", "stability", "stability_reason"]
    m = a[cols].merge(b[cols], on=["case_id", "family", "axes"], suffixes=("_a", "_b"))
    r = m.time_median_s_b / m.time_median_s_a
    m["move"] = r.where(r >= 1, 1 / r) - 1
    return m[m.move > over].sort_values("move", ascending=False)


def hog_run(suite: str, out: Path, processes: int, start: str = "fork-server", hogs: int = 1) -> None:
    """A run beside ``hogs`` spinning processes: the share of rows flagged, verdicts, findings, printed."""
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    try:
        loaded, wall = one_run(suite, out, processes, start)
    finally:
        for h in spinning:
            h.kill()
    ok = loaded.frame[loaded.frame.status == "ok"]
    model = build_model(loaded, with_plots=False)
    print(f"  beside {hogs} CPU hog(s): {100 * (ok.stability != 'stable').mean():.0f} % of rows flagged "
          f"({ok.stability.value_counts().to_dict()}), {int(ok.samples_rejected.fillna(0).sum())} blocks rejected; "
          f"findings {len(model.findings)} (bases {sorted({f.basis for f in model.findings})}), unconfirmed "
          f"{len(model.unconfirmed)} (wall {wall:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--suites", default="shufflenet-guidelines,quick")
    ap.add_argument("--hog", action="store_true", help="also run beside a CPU hog")
    ap.add_argument("--hogs", type=int, default=1, help="spinning processes beside the --hog run")
    ap.add_argument("--detail", action="store_true", help="list the cases that moved by more than 3 %%")
    ap.add_argument("--worker-start", default="fork-server", choices=["fork-server", "spawn", "both"],
                    help="how worker processes start (both: the whole benchmark once each way)")
    ap.add_argument("--keep", default=None, help="keep the runs it measured under this directory (default: a "
                    "temporary one, removed at the end)")
    args = ap.parse_args()
    starts = ["fork-server", "spawn"] if args.worker_start == "both" else [args.worker_start]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        for start in starts:
            for suite in args.suites.split(","):
                report(suite, root / start / suite, args, start)


def report(suite: str, tmp: Path, args: argparse.Namespace, start: str) -> None:
    """Two runs of ``suite`` (and one beside a hog with ``--hog``): their agreement, printed."""
    la, wall_a = one_run(suite, tmp / "a", args.processes, start)
    lb, wall_b = one_run(suite, tmp / "b", args.processes, start)
    a, b = la.frame, lb.frame
    fig = agreement(a, b)
    verdicts = pd.concat([a, b]).stability.value_counts().to_dict()
    print(f"{suite} (--processes {args.processes}, workers: {start}): {fig['cases']} cases, "
          f"wall {wall_a:.1f} s + {wall_b:.1f} s")
    print(f"  stable in both runs: {fig['stable_in_both']}; of those within 3 %: "
          f"{100 * fig['agree_3pct']:.0f} %, within 10 %: {100 * fig['agree_10pct']:.0f} %")
    print(f"  each time scaled by its row's canary (the host's speed taken out, as the efficiency model does): "
          f"{100 * fig['agree_3pct_scaled']:.0f} % of those within 3 %; median move over every case "
          f"{100 * fig['median_move']:.1f} % -> {100 * fig['median_move_scaled']:.1f} % scaled")
    print(f"  moved > 10 % between runs: {fig['moved_10pct']}, flagged in at least one run: "
          f"{fig['moved_and_flagged']}")
    print(f"  rows flagged (not stable): run 1 {fig['flagged_a']}, run 2 {fig['flagged_b']}; verdicts {verdicts}")
    print(f"  sample blocks rejected by the canary: run 1 {int(a.samples_rejected.fillna(0).sum())}, run 2 "
          f"{int(b.samples_rejected.fillna(0).sum())}")
    ra, rb = interleaved_ratios(la), interleaved_ratios(lb)
    both = sorted(set(ra) & set(rb))
    close = [k for k in both if abs(ra[k][0] / rb[k][0] - 1) <= 0.05]
    print(f"  candidate findings timed interleaved: run 1 {len(ra)}, run 2 {len(rb)}, in both {len(both)}; "
          f"their ratios within 5 % between the runs: {len(close)} of {len(both)}")
    names = {r.case_id: f"{r.family} {describe_row(r)}" for _, r in a.iterrows()}
    for slow, fast in both:
        print(f"    in both: {names.get(slow, slow)} vs {names.get(fast, fast)}: {shown(ra[(slow, fast)])} vs "
              f"{shown(rb[(slow, fast)])}")
    for label, mine, other in (("run 1 only", ra, rb), ("run 2 only", rb, ra)):
        for slow, fast in sorted(set(mine) - set(other)):
            print(f"    {label}: {names.get(slow, slow)} vs {names.get(fast, fast)}: {shown(mine[(slow, fast)])}")
    if args.detail:
        for _, r in moves(a, b).iterrows():
            meds = ["/".join(f"{x * 1e6:.0f}" for x in r[f"process_medians_s_{k}"]) for k in "ab"]
            print(f"    {r['family']} {r['axes']}: {100 * r['move']:.0f} % ({meds[0]} vs {meds[1]} us): "
                  f"{r['stability_a']} / {r['stability_b']}")
    if args.hog:
        hog_run(suite, tmp / "hog", args.processes, start, args.hogs)

if __name__ == "__main__":
    main()
