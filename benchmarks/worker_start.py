"""Where a run's time goes, and what a worker process costs to start (``nox -s bench-workers``).

Prints:
  1. worker start: the seconds from asking for a worker to its exit, for a job with nothing to
     measure, started from the fork server (``fork-server``, the default) and as a fresh interpreter
     (``spawn``), each ``--workers`` times; and the fork server's own start (until it has imported
     torch and the measuring code), which a run overlaps with resolving its context;
  2. the main job's measuring share: ``layerbench run SUITE --processes P`` as a subprocess (the
     report and summary included), its wall time net of one interpreter start (``python -c "import
     torch, harness.runner"``), and the share of that spent warming up and sampling in every
     process (the run's stored ``measuring_s``, and each interleaved confirmation's). Targets:
     worker start under 0.3 s; measuring >= 85 % with ``--processes 1``, >= 75 % with the default 3.
     Also the rest (net wall time less the measuring) in seconds: a slow spell of a shared host
     stretches the measuring (and so the share) much more than the rest, so a before/after pair is
     best compared by the rest.

``--checkout DIR`` runs part 2 on another checkout of layerbench (its ``harness`` on PYTHONPATH),
so a before/after pair is measured on the same machine, minutes apart. A checkout that stores no
``measuring_s`` is measured by its rows (warm-up + sampling of the process each row keeps, times the
processes: an estimate). Figures depend on what else runs on the machine: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker_start(kind: str, n: int) -> tuple[list[float], float]:
    """(seconds from start to exit of each of ``n`` empty workers, seconds until the server was ready)."""
    from harness.backends import resolve_device
    from harness.runner.context import make_context
    from harness.runner.launch import launcher, omp_env
    from harness.runner.worker import WorkerJob
    from harness.suite import load_suite
    from harness.timing import measure
    suite = load_suite("quick")
    t = time.perf_counter()
    start = launcher(kind, omp_env(None))
    ctx = make_context(suite, resolve_device("cpu"), ["fp32"], None, "hot", (1, 1), "bench")
    out, ready = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            job = WorkerJob(ctx=ctx, cases=(), measure_fn=measure, profile=False, journal=f"{tmp}/j{i}.jsonl",
                            parent_pid=start.worker_parent)
            path = f"{tmp}/job{i}"
            with open(path, "wb") as fh:
                pickle.dump(job, fh)
            if i == 0 and kind == "fork-server":
                start.start(path).wait()            # the first answer waits for the server's imports
                ready = time.perf_counter() - t
                continue
            t0 = time.perf_counter()
            start.start(path).wait()
            out.append(time.perf_counter() - t0)
    start.close()
    return out, ready


def interpreter_start(pythonpath: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, harness.runner"], check=True, cwd=pythonpath,
                   env=dict(os.environ, PYTHONPATH=pythonpath))
    return time.perf_counter() - t


def main_job(suite: str, processes: int, pythonpath: str) -> tuple[float, float, float, bool, int]:
    """(wall s, measuring s of the rows, measuring s of the interleaved confirmations, whether the
    rows' was stored exactly, rows) of one CLI run."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "harness.cli", "run", suite, "--processes", str(processes),
                        "--out", tmp, "--quiet"], check=True, env=dict(os.environ, PYTHONPATH=pythonpath),
                       cwd=pythonpath,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        run_dir = next(p for p in Path(tmp).iterdir() if p.is_dir())
        meta = json.loads(next(run_dir.glob("run-*.json")).read_text())
        import pyarrow.parquet as pq
        rows = pq.read_table(next(run_dir.glob("part-*.parquet"))).to_pandas()
        confirming = sum(float(v) for f in run_dir.glob("confirm-*.parquet")
                         for v in pq.read_table(f).to_pandas().get("measuring_s", []) if v == v and v is not None)
        if meta.get("measuring_s") is not None:
            return wall, float(meta["measuring_s"]), confirming, True, len(rows)
        spent = rows[["warmup_s", "estimate_s", "sampling_s"]].fillna(0.0).to_numpy().sum()
        return wall, float(spent) * processes, confirming, False, len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=6, help="workers started per launcher (default 6)")
    ap.add_argument("--suite", default="quick")
    ap.add_argument("--processes", default="1,3", help="comma-separated --processes values (default 1,3)")
    ap.add_argument("--checkout", default=None, help="another layerbench checkout for part 2 (before/after)")
    ap.add_argument("--skip-workers", action="store_true", help="part 2 only")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each main job, and interpreter starts (default 3; "
                    "the medians are printed: a shared host swings between runs)")
    args = ap.parse_args(argv)
    root = Path(args.checkout or Path(__file__).resolve().parents[1]).resolve()
    if not args.skip_workers:
        for kind in ("fork-server", "spawn"):
            times, ready = worker_start(kind, args.workers)
            extra = f"; the server was ready after {ready:.2f} s" if kind == "fork-server" else ""
            print(f"worker start ({kind}): median {statistics.median(times):.3f} s over {len(times)} workers "
                  f"(min {min(times):.3f}, max {max(times):.3f}){extra}")
    boots = [interpreter_start(str(root)) for _ in range(args.repeat)]
    boot = statistics.median(boots)
    print(f"interpreter start (import torch, harness.runner): median {boot:.2f} s of {len(boots)} "
          f"({', '.join(f'{b:.2f}' for b in boots)})  [{root}]")
    for p in (int(x) for x in args.processes.split(",")):
        shares, others = [], []
        for _ in range(args.repeat):
            wall, spent, confirming, exact, rows = main_job(args.suite, p, str(root))
            net = wall - boot
            shares.append((spent + confirming) / net)
            others.append(net - spent - confirming)
            how = "stored measuring_s" if exact else "estimated from the rows"
            print(f"layerbench run {args.suite} --processes {p}: {rows} rows, {wall:.1f} s wall, {net:.1f} s net of "
                  f"the interpreter start; warm-up + sampling {spent:.1f} s of rows ({how}) + {confirming:.1f} s of "
                  f"interleaved confirmations = {100 * shares[-1]:.0f} %")
        print(f"  --processes {p}: measuring share median {100 * statistics.median(shares):.0f} % of {len(shares)} "
              f"runs (target {85 if p == 1 else 75} %); the rest median {statistics.median(others):.1f} s (on a "
              f"shared host the measuring stretches with the host's slow spells, the rest much less: compare it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
