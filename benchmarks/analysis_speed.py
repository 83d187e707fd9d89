"""Analysis and report over a large synthetic result table (default 100,000 rows): load, derive
(roofline, labels), equal-FLOPs groups and findings, compare against a second run, and the full
HTML/Markdown report with plots. Target: under 30 s on the project's 2-core machine.

    python benchmarks/analysis_speed.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from harness import record as R
from harness.analysis import compare, derive, equal_flops_groups, findings
from harness.report import build_report
from harness.store import load_results, write_parquet


def synthetic(n: int, seed: int, run_id: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    flops = (2 ** rng.integers(10, 36, n)).astype(np.int64) * rng.choice([1, 1, 1, 3], n)
    moved = (flops / 2.0 ** rng.uniform(-4, 8, n)).astype(np.int64) + 64
    t = np.maximum(flops / 4e14, moved / 3e12) / rng.uniform(0.05, 0.95, n) + 4e-6
    g = rng.choice([1, 2, 4, 8, 16, 32, 64], n)
    k = rng.choice([1, 3, 5, 7], n)
    case = [f"case{i:08d}" for i in range(n)]
    f = pd.DataFrame({
        "run_id": run_id, "case_id": case, "config_id": case, "row_id": [f"h100synthetic:cuda:0:{c}" for c in case],
        "suite": "synthetic", "family": rng.choice(["conv", "groups", "gemm", "norm", "attention"], n),
        "machine_id": "h100synthetic", "machine_name": "NVIDIA H100 80GB HBM3 + synthetic host",
        "settings_id": "synthetic", "host": "synthetic", "layer": "conv2d",
        "config": [json.dumps({"in_channels": 64 * int(gg), "out_channels": 64 * int(gg), "kernel_size": [int(kk)] * 2,
                               "groups": int(gg)}) for gg, kk in zip(g, k)],
        "axes": [json.dumps({"g": int(gg), "k": int(kk)}) for gg, kk in zip(g, k)],
        "input_shapes": "8x64x56x56", "memory_format": rng.choice(["nchw", "channels_last"], n), "dtype": "bf16",
        "device": "cuda:0", "device_type": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "threads": 16,
        "status": "ok", "flops": flops, "bytes_read": moved // 2, "bytes_written": moved - moved // 2,
        "intensity_flop_per_byte": flops / moved, "time_median_s": t, "time_q1_s": t * 0.98, "time_q3_s": t * 1.02,
        "time_ci_low_s": t * 0.99, "time_ci_high_s": t * 1.01, "kernel_launches": rng.integers(1, 4, n),
        "kernels": "sm90_xmma;cudnn", "allow_tf32_cudnn": True, "allow_tf32_matmul": False, "peak_dtype": "bf16",
        "peak_flops_s": 989e12, "peak_bytes_s": 3.35e12, "peak_source": "datasheet", "ceiling_flops_s": 700e12,
        "ceiling_bytes_s": 2.9e12, "ceiling_source": "measured", "launch_overhead_s": 5e-6, "timestamp": "synthetic",
        "harness_version": "synthetic", "torch_version": "synthetic", "python_version": "synthetic",
    })
    for c in R.COLUMN_NAMES:
        if c not in f:
            f[c] = None
    return f[list(R.COLUMN_NAMES)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for name, seed in (("a", 1), ("b", 2)):
            (Path(d) / name).mkdir()
            write_parquet(synthetic(args.rows, seed, name), Path(d) / name / "part-1of1.parquet")
        marks = {}
        t0 = time.perf_counter()
        frame = load_results(Path(d) / "a")
        marks["load"] = time.perf_counter()
        table = derive(frame)
        marks["derive"] = time.perf_counter()
        groups = equal_flops_groups(table)
        found = findings(table)
        marks["findings"] = time.perf_counter()
        other = derive(load_results(Path(d) / "b"))
        verdicts = compare(table, other)
        marks["compare"] = time.perf_counter()
        rep = build_report([Path(d) / "a"], Path(d) / "report")
        marks["report"] = time.perf_counter()
        prev = t0
        print(f"{args.rows:,} synthetic rows ({groups['group'].nunique():,} equal-FLOPs groups, {len(found)} findings, "
              f"{len(verdicts):,} compared)")
        for k, v in marks.items():
            print(f"  {k:9} {v - prev:6.2f} s")
            prev = v
        total = marks["report"] - t0
        print(f"  total     {total:6.2f} s  ({'under' if total < 30 else 'OVER'} the 30 s target); report "
              f"{rep.html.stat().st_size / 1e6:.1f} MB HTML, {len(rep.files)} files")


if __name__ == "__main__":
    main()
