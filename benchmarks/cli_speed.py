"""How fast the ``layerbench`` command starts: wall time of ``--help``, ``--version``, ``count --help``
and a one-layer ``count`` in fresh interpreters (median and min of N runs), and what ``--help``
imports (``python -X importtime``: torch, pandas, numpy must be absent). Target: ``--help`` under 0.3 s.

    python benchmarks/cli_speed.py [--runs 10]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "--help": ["--help"],
    "--version": ["--version"],
    "count --help": ["count", "--help"],
    "count conv2d (one layer)": ["count", "conv2d", "in=64", "out=64", "k=3", "p=1", "--input", "1x64x56x56"],
}
HEAVY = ("torch", "pandas", "numpy", "pyarrow", "matplotlib")
TARGET_S = 0.3


def wall(argv: list[str], runs: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds: user + sys) per run of ``python -m harness.cli ARGV`` (stdout discarded).
    On a shared machine the CPU time is the figure other processes do not inflate."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "harness.cli", *argv], stdout=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def heavy_imports(argv: list[str]) -> list[str]:
    """The heavy top-level packages ``argv`` imports (from ``-X importtime``)."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness.cli", *argv], capture_output=True,
                       text=True, check=True)
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "|" in line}
    return sorted(names & set(HEAVY))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    base = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        base.append(time.perf_counter() - t0)
    print(f"python -c pass (interpreter start)  median {statistics.median(base) * 1e3:6.0f} ms")
    ok = True
    for label, argv in COMMANDS.items():
        ts, cpu = wall(argv, args.runs)
        heavy = heavy_imports(argv)
        print(f"layerbench {label:28} median {statistics.median(ts) * 1e3:6.0f} ms  min {min(ts) * 1e3:6.0f} ms  "
              f"CPU {statistics.median(cpu) * 1e3:6.0f} ms  heavy imports: {', '.join(heavy) or 'none'}")
        if label == "--help":
            ok = statistics.median(ts) < TARGET_S and not heavy
    print(f"--help under {TARGET_S} s without heavy imports: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
