"""Stored rows -> pytest-benchmark JSON (``write_pytest_benchmark``, ``layerbench run --benchmark-json``):
pytest-benchmark's own ``compare`` loads the file, and layerbench reads it back identically."""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest
from test_report import GROUPS, timed_run

from harness.cli import main
from harness.errors import SpecError
from harness.report.pytest_json import write_pytest_benchmark
from harness.store import from_pytest_benchmark, load_runs

TINY = 'name = "tiny"\n[[sweep]]\nfamily = "act"\nlayer = "relu"\ninput = "{b}x16"\naxes = { b = [1, 2] }\n'


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Every column of every row equal (NaN equal to NaN/None, lists element-wise)."""
    a, b = a.sort_values("row_id").reset_index(drop=True), b.sort_values("row_id").reset_index(drop=True)
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        for x, y in zip(a[col], b[col]):
            if isinstance(x, float) and math.isnan(x):
                assert y is None or (isinstance(y, float) and math.isnan(y)), (col, x, y)
            elif hasattr(x, "tolist"):
                assert list(x) == list(y), col
            else:
                assert x == y or (x is None and (y is None or y != y)), (col, x, y)


def test_round_trip_and_pytest_benchmark_stats(tmp_path):
    run = timed_run(tmp_path, [GROUPS], [1e-4, 5e-4])
    out = write_pytest_benchmark(run.run_dir, tmp_path / "pb.json")
    _same(load_runs(run.run_dir).frame, from_pytest_benchmark(out))
    doc = json.loads(out.read_text())
    from pytest_benchmark.stats import Stats
    for b in doc["benchmarks"]:
        st = b["stats"]
        assert set(Stats.fields) | {"data", "iterations"} <= set(st)
        med = b["extra_info"]["time_median_s"]
        # ten equal samples (the fake clock): no spread, no outliers, ops = 1 / mean
        assert st["median"] == st["min"] == st["max"] == med and st["iqr"] == 0
        assert st["mean"] == b["extra_info"]["time_mean_s"] == pytest.approx(med) and st["stddev"] == pytest.approx(0)
        assert st["rounds"] == 10 and st["data"] == [med] * 10 and st["outliers"] == "0;0"
        assert st["ops"] == pytest.approx(1 / med) and st["total"] == pytest.approx(10 * med)
    assert sorted(b["stats"]["median"] for b in doc["benchmarks"]) == [1e-4, 5e-4]
    assert doc["machine_info"]["layerbench"]["machine_id"] == load_runs(run.run_dir).frame["machine_id"].iloc[0]


def test_pytest_benchmark_compare_accepts_the_file(tmp_path):
    run = timed_run(tmp_path, [GROUPS], [1e-4, 5e-4])
    out = write_pytest_benchmark(run.run_dir, tmp_path / "pb.json")
    r = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(out), "--columns",
                        "min,median,rounds"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("layerbench[groups: conv2d") == 2 and "Median" in r.stdout


def test_no_ok_row_is_a_clear_error(tmp_path):
    frame = load_runs(timed_run(tmp_path, [GROUPS], [1e-4, 5e-4]).run_dir).frame.assign(status="error")
    with pytest.raises(SpecError, match="--benchmark-json='2 row\\(s\\), none ok'"):
        write_pytest_benchmark(frame, tmp_path / "pb.json")


def test_run_writes_benchmark_json(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY)
    out = tmp_path / "pb.json"
    assert main(["run", str(suite), "--out", str(tmp_path / "res"), "--calibrate", "never", "--no-report",
                 "--quiet", "--benchmark-json", str(out)]) == 0
    assert f"pytest-benchmark JSON: {out}" in capsys.readouterr().out
    stored = load_runs(tmp_path / "res").frame
    back = from_pytest_benchmark(out)
    _same(stored, back)
    assert set(back["flops"]) == {16, 32} and (back["timer"] != "pytest-benchmark").all()
