"""Where a sweep's time goes ``nox -s bench-sweep`` or ``python benchmarks/sweep_cost.py``.

Prints:
  1. the quick suite's wall time in this process (imports done, interpreter start excluded; the
     start-up is printed beside it), and the share of it spent in warm-up plus sampling (the
     stored ``warmup_s + estimate_s + sampling_s`` of every row); target: at least 85 %;
     the same suite in 3 worker processes (the CLI default), wall time with and without the
     workers' start-up (rows keep one process's timing, so no share is printed for it);
  2. the per-case overhead (everything but warm-up and sampling: counting, building the layer and
     its inputs, the profiled call, storing the row) over 1,000 tiny cases (relu on 1 x c, c = 8 ...
     1007, the real timer with a minimal budget); target: under 20 ms;
  3. whether counting imported ``torch._dynamo``, ``symbolic_shapes`` or ``sympy`` (target: none).

Figures depend on the machine and on what else runs on it: report them with the machine's load.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY_SUITE = """
name = "tiny"
description = "1,000 tiny relu cases: the runner's per-case overhead"
devices = ["cpu"]
dtypes = ["fp32"]
budget_s = 0.001
warmup_s = 0.0
min_reps = 3
target_rel_ci = 1.0

[[sweep]]
family = "tiny"
layer = "relu"
input = "1x{c}"
axes = { c = { start = 8, stop = %d, step = 1 } }
"""


def start_up_s() -> float:
    """Seconds for a fresh interpreter to import the runner (what the wall time is net of)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import harness.runner"], check=True)
    return time.perf_counter() - t


def measured_share(run_dir: Path) -> tuple[int, float]:
    """(rows, seconds of warm-up plus sampling stored in them)."""
    from harness.store import load_runs
    f = load_runs([run_dir]).frame
    spent = f[["warmup_s", "estimate_s", "sampling_s"]].fillna(0.0).to_numpy().sum()
    return len(f), float(spent)


def run(suite_name_or_path: str, out: Path, processes: int = 1) -> tuple[float, Path]:
    from harness.runner import run_suite
    from harness.suite import load_suite
    suite = load_suite(suite_name_or_path)
    t = time.perf_counter()
    s = run_suite(suite, out=out, progress=False, calibrate="never", processes=processes)
    return time.perf_counter() - t, s.run_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", type=int, default=1000, help="tiny cases for the overhead figure (default 1000)")
    args = ap.parse_args(argv)
    boot = start_up_s()
    import harness.runner  # noqa: F401  (imports out of the timed region, as start-up is)
    with tempfile.TemporaryDirectory() as tmp:
        wall, run_dir = run("quick", Path(tmp))
        rows, spent = measured_share(run_dir)
        print(f"quick suite: {rows} rows, {wall:.2f} s wall in-process (interpreter start and imports "
              f"{boot:.2f} s, excluded); warm-up + sampling {spent:.2f} s = {100 * spent / wall:.1f} % "
              f"(target >= 85 %)")
        wall, run_dir = run("quick", Path(tmp), processes=3)
        rows, spent = measured_share(run_dir)            # each row: the lower-median process's figures
        print(f"quick suite with --processes 3 (the CLI default): {wall:.2f} s wall, {wall - 3 * boot:.2f} s net "
              f"of the 3 workers' interpreter start and imports")
        suite = Path(tmp) / "tiny.toml"
        suite.write_text(TINY_SUITE % (8 + args.tiny))
        wall, run_dir = run(str(suite), Path(tmp))
        rows, spent = measured_share(run_dir)
        per_case = (wall - spent) / rows
        print(f"tiny cases: {rows} rows in {wall:.2f} s, warm-up + sampling {spent:.2f} s; per-case overhead "
              f"{1e3 * per_case:.1f} ms (target < 20 ms)")
    heavy = ("torch._dynamo", "torch.fx.experimental.symbolic_shapes", "sympy")
    print("imported while counting: " + ", ".join(f"{m} {'yes' if m in sys.modules else 'no'}" for m in heavy)
          + " (counting runs on meta tensors with stand-ins for them: harness/analytic/meta.py)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
