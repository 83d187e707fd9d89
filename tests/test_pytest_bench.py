"""pytest-benchmark JSON -> the result table: a synthetic file with known stats, and a real
pytest-benchmark session over a two-case suite."""

import json

import pytest

from harness.pytest_bench import from_pytest_benchmark


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


PLAIN = {"machine_info": {"node": "box", "cpu": {"brand_raw": "Foo CPU", "count": 4}, "python_version": "3.11.2"},
         "datetime": "2026-11-20T10:00:00",
         "benchmarks": [{"name": "test_sort[100]", "stats": {"median": 2e-5, "q1": 1.9e-5, "q3": 2.1e-5, "iqr": 2e-6,
                                                              "min": 1e-5, "max": 3e-5, "mean": 2e-5, "rounds": 10}},
                        {"name": "test_sum", "stats": {"median": 5e-6}}]}


def test_plain_users_file_without_extra_info(tmp_path):
    p = tmp_path / "plain.json"
    p.write_text(json.dumps(PLAIN))
    df = from_pytest_benchmark(p)
    assert list(df["status"]) == ["ok", "ok"] and df["flops"].isna().all() and df["peak_flops_s"].isna().all()
    assert set(df["layer"]) == {"test_sort[100]", "test_sum"} and (df["machine_name"] == "Foo CPU (4 CPUs)").all()
    assert (df["host"] == "box").all() and (df["peak_source"] == "not stored").all()
    sort = df[df["layer"] == "test_sort[100]"].iloc[0]
    # rel_iqr 2e-6 / 2e-5 = 10 % (not above the 10 % noise rule), 10 rounds: stable from the stats alone
    assert sort["rel_iqr"] == pytest.approx(0.1) and sort["stability"] == "stable" and sort["reps"] == 10
    assert df[df["layer"] == "test_sum"].iloc[0]["stability"] == "noisy"      # no iqr, no rounds: unknown spread


def test_report_compare_regress_on_plain_files(tmp_path, capsys):
    from harness.cli import main
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(PLAIN))
    slower = json.loads(json.dumps(PLAIN))
    slower["datetime"] = "2026-11-21T10:00:00"
    slower["benchmarks"][0]["stats"].update(median=4e-5, q1=3.9e-5, q3=4.1e-5, mean=4e-5)
    b.write_text(json.dumps(slower))
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "r")]) == 0
    assert "test\\_sort\\[100\\]" in (tmp_path / "r" / "report.md").read_text()
    assert main(["compare", str(a), str(b)]) == 0
    assert "1 slower" in capsys.readouterr().out
    assert main(["regress", str(b), "--baseline", str(a)]) == 1
    assert "2.00x" in capsys.readouterr().out


def _hostile():
    ok = PLAIN["benchmarks"][0]

    def bench(**kw):
        return {"benchmarks": [dict(ok, **kw)]}
    return [
        ([1, 2], "benchmarks: missing"),
        ({"benchmarks": "x"}, "benchmarks: missing"),
        ({"benchmarks": [[1]]}, "benchmarks[0]=[1]: expected an object"),
        ({"benchmarks": [{"stats": {"median": 1}}]}, "benchmarks[0].name=None"),
        (bench(stats=[1.0]), "stats=[1.0]: expected an object"),
        (bench(stats={"median": "fast"}), "stats.median='fast'"),
        (bench(stats={"median": -1.0}), "stats.median=-1.0"),
        (bench(stats={"median": 1e300}), "stats.median=1e+300"),
        (bench(stats={"median": 1e-3, "rounds": 10**30}), "stats.rounds=" + str(10**30)),
        (bench(stats={"median": 1e-3, "rounds": 2.5}), "stats.rounds=2.5"),
        (bench(stats={"median": 1e-3, "data": [1e-3, "x"]}), "stats.data="),
        (bench(extra_info={"flops": "many"}), "extra_info.flops='many': expected int"),
        (bench(extra_info={"flops": 2**70}), "extra_info.flops=" + str(2**70)),
        (bench(extra_info={"peak_flops_s": [1]}), "extra_info.peak_flops_s=[1]: expected float"),
        (bench(extra_info=[1]), "extra_info=[1]: expected an object"),
        (dict(bench(), machine_info=["x"]), "machine_info=['x']: expected an object"),
        (dict(bench(), commit_info={"id": 5}), "commit_info.id=5"),
    ]


@pytest.mark.parametrize("doc,needle", _hostile())
def test_hostile_files_are_refused_in_one_line(tmp_path, doc, needle):
    from harness.store import load_runs
    p = tmp_path / "hostile.json"
    p.write_text(json.dumps(doc))
    loaded = load_runs(p)
    assert loaded.frame.empty and len(loaded.refused) == 1
    line = loaded.refused[0]
    assert line.startswith(f"{p}: ") and needle in line and "\n" not in line, line


@pytest.mark.parametrize("text,needle", [("NaN", "benchmarks: missing"), ("{\"benchmarks\": [" * 5000, "nested"),
                                         ("\x00\xff junk", "not JSON"),
                                         ('{"benchmarks": [{"name": "t", "stats": {"median": NaN}}]}',
                                          "stats.median=nan"),
                                         ('{"benchmarks": [{"name": "t", "stats": {"median": 1e999}}]}',
                                          "stats.median=inf")])
def test_junk_nan_and_deep_nesting_are_refused(tmp_path, text, needle):
    from harness.store import load_runs
    p = tmp_path / "junk.json"
    p.write_text(text)
    loaded = load_runs(p)
    assert len(loaded.refused) == 1 and loaded.refused[0].startswith(str(p)) and needle in loaded.refused[0], \
        loaded.refused
