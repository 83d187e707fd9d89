"""pytest-benchmark JSON -> the result table: a synthetic file with known stats, and a real
pytest-benchmark session over a two-case suite."""

import json
import os
import subprocess
import sys
from pathlib import Path

from harness.pytest_bench import from_pytest_benchmark
from harness.store import load_results

ROOT = Path(__file__).resolve().parent.parent


def test_stats_mapping(tmp_path):
    doc = {"datetime": "2026-11-24T00:00:00", "machine_info": {"node": "box"}, "commit_info": {"id": "abc"},
           "benchmarks": [{"name": "t", "fullname": "f::t", "extra_info": {"row_id": "r1", "flops": 100},
                           "stats": {"min": 1.0, "max": 3.0, "mean": 2.0, "stddev": 0.5, "rounds": 7, "median": 2.0,
                                     "iqr": 0.4, "q1": 1.8, "q3": 2.2, "iterations": 3, "outliers": "1;2",
                                     "data": [1.0, 2.0, 3.0]}}]}
    p = tmp_path / "pb.json"
    p.write_text(json.dumps(doc))
    row = from_pytest_benchmark(p).iloc[0]
    assert (row.time_median_s, row.time_q1_s, row.time_q3_s, row.time_iqr_s) == (2.0, 1.8, 2.2, 0.4)
    assert (row.time_std_s, row.reps, row.number, row.outliers) == (0.5, 7, 3, 2)
    assert row.rel_iqr == 0.2 and row.noisy and row.flops == 100 and row.git_commit == "abc"   # 0.4 / 2 > 0.10
    assert row.timer == "pytest-benchmark" and row.status == "ok"


def test_real_session_converts(tmp_path):
    suite = tmp_path / "two.toml"
    suite.write_text('name = "two"\n[[sweep]]\nlayer = "relu"\ninput = "{b}x16"\naxes = { b = [1, 2] }\n')
    out = tmp_path / "pb.json"
    env = dict(os.environ, LAYERBENCH_SUITE=str(suite), LAYERBENCH_DEVICE="cpu", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(ROOT / "benchmarks" / "test_suite_benchmark.py"), "--benchmark-only",
                        f"--benchmark-json={out}", "--benchmark-max-time=0.01", "--benchmark-min-rounds=3"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    df = load_results(out)
    assert len(df) == 2 and set(df["input_shapes"]) == {"1x16", "2x16"}
    assert set(df["flops"]) == {16, 32} and (df["time_median_s"] > 0).all() and df["row_id"].is_unique
