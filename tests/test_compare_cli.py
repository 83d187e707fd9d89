"""``layerbench compare`` for people and CI: globs on both sides, times in automatic units, the geometric
mean per family, ``--fail-on`` (pytest-benchmark's syntax) and its exit code, table/markdown/json,
``--only-changed``, verdicts only on judged rows (set-aside ones counted by stability value), machines never
mixed silently; ``export`` carries the derived columns."""

import json

import pandas as pd
import pytest

from harness import record as R
from harness.analysis.compare import FailOn, compare, family_geomeans
from harness.cli import main
from harness.store import write_parquet


def row(**kw):
    base = dict(status="ok", device="cpu", device_type="cpu", device_name="X", machine_id="m" * 12,
                machine_name="X (2 CPUs)", settings_id="s" * 12, host="h", dtype="fp32", threads=2, flops=2e6,
                bytes_read=5e5, bytes_written=5e5, layer="conv2d", config="{}", axes="{}", memory_format="nchw",
                suite="s", timestamp="2026-11-24T02:00:00+0000", harness_version="0", torch_version="2.13",
                python_version="3.11", peak_source="none", ceiling_source="none", stability="stable")
    base.update(kw)
    base.setdefault("input_shapes", base["case_id"])
    base.setdefault("config_id", base["case_id"])
    base.setdefault("row_id", f"{base['machine_id']}:{base['device']}:{base['case_id']}")
    t = base["time_median_s"]
    for col, f in (("time_q1_s", 0.99), ("time_q3_s", 1.01), ("time_ci_low_s", 0.995), ("time_ci_high_s", 1.005),
                   ("time_min_s", 0.98), ("time_mean_s", 1.0)):
        base.setdefault(col, t * f)
    return {c: base.get(c) for c in R.COLUMN_NAMES}


# A: every case 100 us. B: conv family 1.21x and 1.0x (geomean 1.1), relu 0.5x, one noisy row, one bimodal.
A = [row(case_id=c, family=f, run_id="a", time_median_s=1e-4) for c, f in
     (("c1", "conv"), ("c2", "conv"), ("r1", "relu"), ("n1", "relu"), ("b1", "conv"))]
B = [row(case_id="c1", family="conv", run_id="b", time_median_s=1.21e-4),
     row(case_id="c2", family="conv", run_id="b", time_median_s=1.0e-4),
     row(case_id="r1", family="relu", run_id="b", time_median_s=0.5e-4),
     row(case_id="n1", family="relu", run_id="b", time_median_s=3e-4, stability="noisy"),
     row(case_id="b1", family="conv", run_id="b", time_median_s=3e-4, stability="bimodal")]


@pytest.fixture
def runs(tmp_path):
    for name, rows in (("nightly-a-1", A[:3]), ("nightly-a-2", A[3:]), ("nightly-b-1", B[:3]), ("nightly-b-2", B[3:])):
        (tmp_path / name).mkdir()
        write_parquet(pd.DataFrame(rows, columns=list(R.COLUMN_NAMES)), tmp_path / name / "part-1of1.parquet")
    return tmp_path


def test_library_verdicts_geomean_and_fail_on():
    t = compare(pd.DataFrame(A, columns=list(R.COLUMN_NAMES)), pd.DataFrame(B, columns=list(R.COLUMN_NAMES)))
    v = t.set_index("case_id")["verdict"].to_dict()
    assert v == {"c1": "slower", "c2": "same", "r1": "faster", "n1": "set aside", "b1": "set aside"}
    assert t.attrs["stability"]["b"] == {"stable": 3, "noisy": 1, "bimodal": 1}
    geo = family_geomeans(t).set_index("family")
    assert geo.loc["conv", "geomean_ratio"] == pytest.approx(1.1) and geo.loc["conv", "cases"] == 2   # sqrt(1.21 x 1)
    assert geo.loc["relu", "geomean_ratio"] == pytest.approx(0.5) and geo.loc["relu", "cases"] == 1
    (rule,) = FailOn.parse("median:10%")
    assert rule == FailOn("median", 0.10, True)
    assert list(t.loc[rule.crossed(t), "case_id"]) == ["c1"]          # n1 (3x, noisy) is set aside, not failed
    (absolute,) = FailOn.parse("min:0.00001")                          # 10 us: c1's min rose 20.6 us
    assert list(t.loc[absolute.crossed(t), "case_id"]) == ["c1"]
    with pytest.raises(ValueError, match="--fail-on.*median:10%"):
        FailOn.parse("p99:10%")


def test_a_shift_of_the_host_canary_is_said_and_the_ratios_stay_measured():
    """B's canary ran 1.25x slower (40 vs 32 us per step): one note names it; the ratios stay measured.
    c1 (1.21x) moved no more than its canary (1.21 / 1.25 = 0.97): its verdict is the host's."""
    a = pd.DataFrame([{**r, "canary_s": 32e-6} for r in A], columns=list(R.COLUMN_NAMES))
    b = pd.DataFrame([{**r, "canary_s": 40e-6} for r in B], columns=list(R.COLUMN_NAMES))
    t = compare(a, b)
    assert t.attrs["notes"] == ["the host canary ran a median 1.25x slower in B than in A (32.0 vs 40.0 us per "
                                "step): a shift of about that size in every layer is likely the host's speed, "
                                "not the code's",
                                "1 case(s) moved as much as the host canary beside them (B/A 1.210, their canaries' "
                                "1.250; one machine, settings and torch): verdict `host`, left out of --fail-on and "
                                "the geometric means"]
    assert t.set_index("case_id")["ratio"].to_dict()["c1"] == pytest.approx(1.21)
    assert compare(a, b.assign(canary_s=33e-6)).attrs["notes"] == []          # within 5 %: nothing said
    assert compare(a, b.assign(settings_id="t" * 12)).attrs["notes"][-1].startswith("threading settings differ")


def test_a_change_the_host_canary_explains_is_the_host_s_not_a_regression():
    """Per case: c1 took 1.21x with its own canary 1.20x slower (1.21 / 1.2 = 1.008: the host); r1 took
    0.5x beside a canary 1.2x slower (0.42 after it: a real change, still ``faster``); c2 is ``same``
    whatever its canary. With another torch the canaries are not one kernel: no host verdict."""
    canary_b = {"c1": 38.4e-6, "r1": 38.4e-6, "c2": 38.4e-6, "n1": 32e-6, "b1": 32e-6}
    a = pd.DataFrame([{**r, "canary_s": 32e-6} for r in A], columns=list(R.COLUMN_NAMES))
    b = pd.DataFrame([{**r, "canary_s": canary_b[r["case_id"]]} for r in B], columns=list(R.COLUMN_NAMES))
    t = compare(a, b)
    v = t.set_index("case_id")["verdict"].to_dict()
    assert v == {"c1": "host", "c2": "same", "r1": "faster", "n1": "set aside", "b1": "set aside"}
    assert t.set_index("case_id")["host_ratio"].to_dict()["c1"] == pytest.approx(1.2)
    (rule,) = FailOn.parse("median:10%")
    assert not rule.crossed(t).any()                                  # c1's 21 % is the host's
    geo = family_geomeans(t).set_index("family")
    assert geo.loc["conv", "cases"] == 1 and geo.loc["conv", "geomean_ratio"] == pytest.approx(1.0)   # c2 alone
    from harness.report.compare import CompareModel
    model = CompareModel.of(t, 0.10, (rule,))
    assert model.judged == 3 and not model.failed                    # the host's verdict still counts as judged
    assert model.tail().endswith("0 slower, 1 faster, 1 same, 1 host, 2 set aside")
    other = compare(a, b.assign(torch_version="2.14"))
    assert other.set_index("case_id")["verdict"]["c1"] == "slower" and other["host_ratio"].isna().all()
    assert list(other.loc[rule.crossed(other), "case_id"]) == ["c1"]
    # a canary that barely moved (1.02x: 1.21 / 1.02 = 1.19) or moved the other way explains nothing
    for moved in (32.64e-6, 28e-6):
        still = compare(a, b.assign(canary_s=moved))
        assert still.set_index("case_id")["verdict"]["c1"] == "slower"
        assert list(still.loc[rule.crossed(still), "case_id"]) == ["c1"]
    # a side whose settings are not recorded is not known to share them: no host verdict
    assert compare(a, b.assign(settings_id=None)).set_index("case_id")["verdict"]["c1"] == "slower"


def test_cases_on_one_side_only_and_a_side_without_canary_are_said():
    """B measured two backward cases A never had, and only B kept a host canary: both said in a note."""
    a = pd.DataFrame(A, columns=list(R.COLUMN_NAMES))
    extra = [row(case_id=c, family="backward", run_id="b", time_median_s=2e-4) for c in ("w1", "w2")]
    b = pd.DataFrame([{**r, "canary_s": 40e-6} for r in [*B, *extra]], columns=list(R.COLUMN_NAMES))
    t = compare(a, b)
    assert len(t) == 5 and t.attrs["notes"] == [
        "2 measured case(s) of B are not in A (2 backward): not compared",
        "A stored no host canary (measured before rows kept one): whether the host ran at another speed in the "
        "two runs cannot be told"]
    assert compare(a, a).attrs["notes"] == []
    broke = b.copy()
    broke.loc[broke["case_id"] == "c2", ["status", "time_median_s"]] = ["error", None]   # c2 stopped measuring
    assert compare(a, broke).attrs["notes"][0] == ("1 case(s) measured in A were not measured in B (1 error): not "
                                                   "compared")


def test_a_comparison_with_nothing_judged_says_why_it_has_no_family_mean(tmp_path, capsys):
    for name, rows in (("a", A[3:4]), ("b", B[3:4])):                   # n1: noisy in B
        (tmp_path / name).mkdir()
        write_parquet(pd.DataFrame(rows, columns=list(R.COLUMN_NAMES)), tmp_path / name / "part-1of1.parquet")
    main(["compare", str(tmp_path / "a"), "--to", str(tmp_path / "b")])
    assert "geometric mean of B/A per family:\n(none: no case judged on both sides)" in capsys.readouterr().out


def test_cli_globs_units_fail_on_and_formats(runs, capsys):
    a, b = str(runs / "nightly-a-*"), str(runs / "nightly-b-*")
    assert main(["compare", a, "--to", b]) == 0
    out, err = capsys.readouterr()
    assert "100 us" in out and "121 us" in out and "0.0001" not in out            # automatic units
    assert "1 slower, 1 faster, 1 same, 2 set aside" in out
    assert "conv" in out.split("geometric mean of B/A per family:")[1] and "1.100" in out
    assert err.strip() == ("2 measured rows of B set aside, not stable (1 bimodal, 1 noisy): compare and regress "
                           "leave them out, findings use them only where every process of one layer took 1.1x or "
                           "more of every process of the other")
    assert main(["compare", a, "--to", b, "--fail-on", "median:10%"]) == 1
    out, err = capsys.readouterr()
    assert "slower (fail-on)" in out and "--fail-on median:10%: 1 case(s) crossed it" in err
    assert main(["compare", a, "--to", b, "--fail-on", "median:25%"]) == 0
    capsys.readouterr()
    assert main(["compare", a, "--to", b, "--format", "json", "--only-changed", "--fail-on", "median:10%"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["failed"] == 1 and doc["judged"] == 3
    assert doc["counts"] == {"slower": 1, "faster": 1, "same": 1, "set aside": 2}
    assert sorted(c["case_id"] for c in doc["cases"]) == ["b1", "c1", "n1", "r1"]         # "same" left out
    assert {f["family"]: round(f["geomean_ratio"], 6) for f in doc["families"]} == {"conv": 1.1, "relu": 0.5}
    assert doc["stability"]["b"] == {"stable": 3, "noisy": 1, "bimodal": 1}
    assert doc["set_aside"] == {"a": {}, "b": {"bimodal": 1, "noisy": 1}}
    assert main(["compare", a, "--to", b, "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert md.lstrip().startswith("| family") and "| conv" in md and "Geometric mean of B/A per family" in md
    assert main(["compare", a, "--to", b, "--fail-on", "median:ten"]) == 2
    assert "--fail-on" in capsys.readouterr().err


def test_cli_never_mixes_machines(runs, capsys):
    other = [dict(r, machine_id="n" * 12, machine_name="Y (64 CPUs)", row_id="n" * 12 + ":cpu:" + r["case_id"])
             for r in B]
    (runs / "other").mkdir()
    write_parquet(pd.DataFrame(other, columns=list(R.COLUMN_NAMES)), runs / "other" / "part-1of1.parquet")
    assert main(["compare", str(runs / "nightly-a-*"), "--to", str(runs / "other")]) == 2
    assert "--across-machines" in capsys.readouterr().err
    assert main(["compare", str(runs / "nightly-a-*"), "--to", str(runs / "other"), "--across-machines"]) == 0
    assert "cross-device comparison" in capsys.readouterr().out


def test_export_carries_derived_columns(runs, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    assert main(["export", str(runs / "nightly-a-1"), "--format", "csv", "-o", str(out)]) == 0
    df = pd.read_csv(out)
    # 2e6 FLOP in 100 us = 20 GFLOP/s; 1e6 bytes in 100 us = 10 GB/s
    assert df["achieved_flops_s"].tolist() == [2e10] * 3 and df["achieved_bytes_s"].tolist() == [1e10] * 3
    pq_out = tmp_path / "rows.parquet"
    assert main(["export", str(runs / "nightly-a-1"), "--format", "parquet", "-o", str(pq_out)]) == 0
    assert "achieved_flops_s" in pd.read_parquet(pq_out).columns


def test_export_never_imports_matplotlib(runs, tmp_path):
    import subprocess
    import sys
    code = ("import sys; from harness.cli import main; "
            f"main(['export', {str(runs / 'nightly-a-1')!r}, '--format', 'csv', '-o', {str(tmp_path / 'r.csv')!r}]); "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_fail_on_that_judges_nothing_fails_unless_allowed(runs, tmp_path, capsys):
    """--fail-on over two sets with no case judged on both sides (nothing in common, or only set-aside
    rows) exits 3, not 0: a CI gate that compared nothing has not passed."""
    (tmp_path / "renamed").mkdir()
    renamed = [dict(r, case_id="z" + r["case_id"], row_id=r["row_id"] + "z", run_id="z") for r in B]
    write_parquet(pd.DataFrame(renamed, columns=list(R.COLUMN_NAMES)), tmp_path / "renamed" / "part-1of1.parquet")
    a, aside = str(runs / "nightly-a-*"), str(runs / "nightly-b-2")       # nightly-b-2: a noisy and a bimodal row
    for b in (str(tmp_path / "renamed"), aside):
        assert main(["compare", a, "--to", b]) == 0                                 # no gate asked for
        assert main(["compare", a, "--to", b, "--fail-on", "median:10%"]) == 3
        assert "--fail-on median:10%: nothing judged" in capsys.readouterr().err
        assert main(["compare", a, "--to", b, "--fail-on", "median:10%", "--allow-empty"]) == 0
    assert main(["compare", a, "--to", str(runs / "nightly-b-1"), "--fail-on", "median:25%"]) == 0


def test_util_is_of_the_roof_on_the_row_s_side_of_the_ridge():
    """A relu (1 MFLOP, 64 MB moved in DRAM) is judged by its bytes against the 20 GB/s main-memory
    roof, said as B/s; a GEMM-like conv (20 GFLOP, 1 MB) by its FLOP/s against the 100 GFLOP/s
    ceiling: never the relu's FLOP/s share, which reads near 0 % of a roof it is not under."""
    from harness.analysis import derive
    from harness.report.compare import CompareModel, _view
    roofs = dict(ceiling_flops_s=100e9, ceiling_bytes_s=20e9, peak_flops_s=200e9, peak_source="formula",
                 launch_overhead_s=1e-9, kernel_launches=1)
    rows = [row(case_id="relu", family="mem", layer="relu", flops=1e6, bytes_read=32e6, bytes_written=32e6,
                time_median_s=8e-3, **roofs),                     # 64e6 / 8 ms = 8 GB/s: 40 % of 20 GB/s
            row(case_id="gemm", family="conv", flops=20e9, bytes_read=5e5, bytes_written=5e5,
                time_median_s=0.4, **roofs)]                      # 20e9 / 0.4 s = 50 GFLOP/s: 50 %
    a = derive(pd.DataFrame([dict(r, run_id="a") for r in rows], columns=list(R.COLUMN_NAMES)))
    b = derive(pd.DataFrame([dict(r, run_id="b", time_median_s=r["time_median_s"] * 2) for r in rows],
                            columns=list(R.COLUMN_NAMES)))
    view = _view(CompareModel.of(compare(a, b), 0.1)).set_index("case")
    relu = next(k for k in view.index if k.startswith("relu"))
    gemm = next(k for k in view.index if k.startswith("conv2d"))
    assert (view.loc[relu, "util_a"], view.loc[relu, "util_b"]) == ("B/s 40.0 %", "B/s 20.0 %")
    assert (view.loc[gemm, "util_a"], view.loc[gemm, "util_b"]) == ("50.0 %", "25.0 %")
