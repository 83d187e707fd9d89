"""pytest-benchmark JSON -> the result table: a synthetic file with known stats, and a real
pytest-benchmark session over a two-case suite."""

import json

import pytest

from harness.store import from_pytest_benchmark


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


def plain_nights(tmp_path):
    """``a.json`` (PLAIN, 2026-11-20) and ``b.json`` (the next day, test_sort[100] twice as slow)."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(PLAIN))
    slower = json.loads(json.dumps(PLAIN))
    slower["datetime"] = "2026-11-21T10:00:00"
    slower["benchmarks"][0]["stats"].update(median=4e-5, q1=3.9e-5, q3=4.1e-5, mean=4e-5, min=3e-5, max=5e-5)
    b.write_text(json.dumps(slower))
    return a, b


def test_report_compare_regress_on_plain_files(tmp_path, capsys):
    from harness.cli import main
    a, b = plain_nights(tmp_path)
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "test\\_sort\\[100\\]" in md and " on nan" not in md and " on None" not in md
    assert "its rows store no FLOP count" in md and not list((tmp_path / "r").glob("*.png"))   # no empty plot
    assert capsys.readouterr().out.startswith("findings: none\n")          # no FLOP count: no equal-FLOPs pair
    assert main(["compare", str(a), str(b)]) == 0
    assert "1 slower" in capsys.readouterr().out
    assert main(["regress", str(b), "--baseline", str(a)]) == 1
    assert "2.00x" in capsys.readouterr().out


#: layerbench's pytest plugin's mark: its ``extra_info`` is read as columns (a plain user's is not).
PLUGIN = {"layerbench_plugin": 3}


def test_a_plain_users_extra_info_is_theirs(tmp_path):
    """A plain file's ``extra_info`` never sets the row's identity, machine or status; whole-number
    counts are read (to derive rates), anything else is left alone and the file loads."""
    doc = json.loads(json.dumps(PLAIN))
    doc["benchmarks"][0]["extra_info"] = {"config": {"batch": 32}, "params": 1.5e6, "flops": "many",
                                          "device": "cuda:0", "status": "error", "run_id": "../../x",
                                          "machine_id": "other", "bytes_read": 4096}
    p = tmp_path / "plain.json"
    p.write_text(json.dumps(doc))
    row = from_pytest_benchmark(p).iloc[0]
    assert (row.status, row.device, row.device_type) == ("ok", "cpu", "cpu")
    assert row.run_id.startswith("pytest-benchmark-20261120T100000-") and row.machine_id.startswith("pb")
    assert row.params == 1_500_000 and row.bytes_read == 4096 and row.flops != row.flops   # 'many': not read (NaN)


def test_plain_files_of_one_datetime_or_none_stay_apart(tmp_path):
    """The run id of a plain file holds a digest of its bytes: two nights without ``datetime`` (or with
    the same one) are two runs, and one is compared against the other; the same file twice is one run."""
    from harness.store import load_runs
    undated = {k: v for k, v in PLAIN.items() if k != "datetime"}
    slow = json.loads(json.dumps(undated))
    slow["benchmarks"][1]["stats"]["median"] = 1.5e-5
    for name, doc in (("a.json", undated), ("b.json", slow)):
        (tmp_path / name).write_text(json.dumps(doc))
    loaded = load_runs([tmp_path / "a.json", tmp_path / "b.json", tmp_path / "a.json"])
    assert len(loaded.frame) == 4 and loaded.frame["run_id"].nunique() == 2
    assert all(r.startswith("pytest-benchmark-undated-") for r in loaded.frame["run_id"])
    medians = sorted(loaded.frame.loc[loaded.frame["layer"] == "test_sum", "time_median_s"])
    assert medians == [5e-6, 1.5e-5]


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
        (bench(extra_info={"flops": "many", **PLUGIN}), "extra_info.flops='many': expected int"),
        (bench(extra_info={"flops": 2**70, **PLUGIN}), "extra_info.flops=" + str(2**70)),
        (bench(extra_info={"peak_flops_s": [1], **PLUGIN}), "extra_info.peak_flops_s=[1]: expected float"),
        (bench(extra_info={"flops": -5, **PLUGIN}), "column flops: a value of -5, expected a number >= 0"),
        (bench(extra_info={"status": "bogus", **PLUGIN}), "column status: 'bogus', expected one of error, ok, oom"),
        (bench(extra_info={"run_id": "../../evil", "row_id": "r", "case_id": "c", "machine_id": "m"}),
         "column run_id: run_id='../../evil' is invalid"),
        (bench(extra_info={"flops": -5}), "column flops: a value of -5"),      # a plain user's negative count
        (bench(stats={"median": 0.0}), "stats.median=0.0: expected a finite number of seconds in (0, 1e9)"),
        (bench(stats={"median": 1e-3, "min": 1.0, "max": 1e-9}), "stats.min=1.0 > stats.median=0.001"),
        (bench(stats={"median": 1e-3, "q1": 2e-3, "q3": 1e-3}), "stats.q1=0.002 > stats.median=0.001"),
        (bench(params={"n": "\udcff"}), "params.n='\\udcff': expected text without lone surrogates"),
        (bench(name="t\udcff"), "name='t\\udcff': expected text without lone surrogates"),
        ({"benchmarks": []}, "benchmarks: an empty list; expected at least one benchmark"),
        ({"benchmarks": [ok, ok]}, "benchmarks[1] (test_sort[100]): the same row as benchmarks[0] (test_sort[100])"),
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


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_compare_with_no_case_in_common_says_so(tmp_path, capsys, fmt):
    from harness.cli import main
    other = json.loads(json.dumps(PLAIN))
    for b in other["benchmarks"]:
        b["name"] = "other_" + b["name"]
    (tmp_path / "a.json").write_text(json.dumps(PLAIN))
    (tmp_path / "b.json").write_text(json.dumps(other))
    args = ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--format", fmt, "--fail-on", "median:5%"]
    assert main(args) == 3                                   # a gate that compared nothing has not passed
    out = capsys.readouterr().out
    if fmt == "json":
        doc = json.loads(out)
        assert doc["cases"] == [] and doc["failed"] == 0 and doc["judged"] == 0 and doc["families"] == []
    else:
        assert out.strip().endswith("no case in common")


def test_missing_paths_storage_folders_and_upper_case_suffixes(tmp_path, capsys):
    """A path naming no file is one refused line (a typo never silently shrinks a baseline); a
    pytest-benchmark storage folder loads as a directory; ``.JSON`` is JSON."""
    from harness.cli import main
    from harness.store import load_runs
    storage = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    storage.mkdir(parents=True)
    (storage / "0001_abc_20261120_100000.JSON").write_text(json.dumps(PLAIN))
    (tmp_path / "empty").mkdir()
    loaded = load_runs([tmp_path / ".benchmarks", tmp_path / "typo.json", str(tmp_path / "nights" / "*.json"),
                        tmp_path / "empty"])
    assert len(loaded.frame) == 2
    assert loaded.refused == [f"{tmp_path / 'typo.json'}: no such file or directory, nor a glob matching one",
                              f"{tmp_path / 'nights' / '*.json'}: no such file or directory, nor a glob matching one",
                              f"{tmp_path / 'empty'}: no result file under it (part-*.parquet, rows-*.jsonl or "
                              "pytest-benchmark .json)"]
    assert main(["regress", str(tmp_path / ".benchmarks"), "--baseline", str(tmp_path / ".benchmarks"),
                 str(tmp_path / "typo.json")]) == 2      # the baseline is NEW itself: nothing left
    assert f"refused: {tmp_path / 'typo.json'}: no such file" in capsys.readouterr().err


def test_a_run_on_both_sides_is_left_out_of_the_reference_side(tmp_path, capsys):
    """A glob on the A side (or the baseline) that also catches B's run (NEW) would compare a run with
    itself: that run is left out of A (the baseline), with a note; nothing left is an error."""
    from harness.cli import main
    a, b = plain_nights(tmp_path)
    assert main(["compare", str(a), str(b), "--to", str(b)]) == 0
    out, err = capsys.readouterr()
    assert "is in both A and B: left out of A" in err
    assert out.splitlines()[0].split()[:3] == ["family", "case", "dtype"] and "1 slower" in out
    assert main(["regress", str(b), "--baseline", str(a), str(b)]) == 1
    assert "is in both the baseline and NEW: left out of the baseline" in capsys.readouterr().err
    assert main(["compare", str(b), "--to", str(b)]) == 2
    assert "expected runs other than B's" in capsys.readouterr().err
