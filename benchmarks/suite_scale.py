"""Scale of the sweep machinery: expanding a 100,000-case suite, and the runner's resident memory
over a long run of tiny cases (rows stream to the journal; nothing accumulates).

    python benchmarks/suite_scale.py [--cases 2000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import psutil

from harness.runner import run_suite
from harness.suite import parse_suite
from harness.timing import Measurement


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=2000, help="tiny cases in the long run")
    args = ap.parse_args()

    big = parse_suite({"sweep": [{"layer": "conv2d", "input": "{b}x{in}x{size}x{size}", "params": {"k": 3, "p": 1},
                                  "axes": {"b": list(range(1, 26)), "in": list(range(8, 208, 8)),
                                           "out": [16, 32, 64, 128], "size": list(range(7, 47))}}]}, "big")
    t0 = time.perf_counter()
    n = sum(1 for _ in big.cases())
    dt = time.perf_counter() - t0
    print(f"expansion: {n:,} cases in {dt:.2f} s = {n / dt:,.0f} cases/s (each validated: spec + input shapes)")

    rss_trace = []

    def fake(fn, *, inputs, **kw):
        fn(*inputs[0])
        rss_trace.append(rss_mb())
        return Measurement(device="cpu", timer="fake", mode="hot", samples_s=(1e-6,) * 10, number=1, warmup_calls=0,
                           warmup_s=0.0, estimate_s=1e-6, sampling_s=1e-5, threads=1, gc_paused=True, rotation=1,
                           stop_reason="converged", target_rel_ci=0.01)

    side = int(args.cases ** 0.5) + 1
    long = parse_suite({"sweep": [{"layer": "relu", "input": "{a}x{b}", "axes": {"a": list(range(1, side + 1)),
                                                                                 "b": list(range(1, side + 1))}}]},
                       "long")
    with tempfile.TemporaryDirectory() as d:
        marks = []
        start_rss = rss_mb()
        t0 = time.perf_counter()
        run_suite(long, out=d, measure_fn=fake, progress=False)
        dt = time.perf_counter() - t0
        marks.append(rss_mb())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tenth = rss_trace[len(rss_trace) // 10]
    print(f"long run: {long.count():,} tiny cases (fake timer, real analytic count) in {dt:.1f} s; RSS before "
          f"{start_rss:.0f} MB, after 10% of the cases {tenth:.0f} MB, at the last case {rss_trace[-1]:.0f} MB "
          f"(growth over the last 90%: {rss_trace[-1] - tenth:+.0f} MB), after {marks[-1]:.0f} MB, peak {peak:.0f} MB")


if __name__ == "__main__":
    main()
