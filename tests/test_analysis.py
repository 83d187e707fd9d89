"""Analysis on synthetic tables with known answers: roofline bound and fraction from the stored
peaks, labels, equal-FLOPs grouping and ranking, compare verdicts with and without noise, machines
never mixed silently, regressions and the regress exit code, the cross-device view, the report."""

import json

import numpy as np
import pandas as pd
import pytest

from harness import record as R
from harness.analysis import compare, cross_device, derive, equal_flops_groups, findings, regressions
from harness.analysis.compare import MixedMachines, check_history, same_machine_only
from harness.store import write_parquet

#: The stored peaks of machine X: theoretical 400 GFLOP/s and 20 GB/s, measured 200 GFLOP/s and 10 GB/s.
PEAKS = dict(peak_flops_s=4e11, peak_bytes_s=2e10, peak_source="formula", ceiling_flops_s=2e11,
             ceiling_bytes_s=1e10, ceiling_source="measured", launch_overhead_s=2e-6)


def row(**kw):
    """A full record of the current schema (every column), defaults overridden by ``kw``."""
    base = dict(status="ok", device="cpu", device_type="cpu", device_name="X", machine_id="m" * 12,
                machine_name="X (2 CPUs)", settings_id="s" * 12, host="h", dtype="fp32", threads=2, flops=1e9,
                bytes_read=5e5, bytes_written=5e5, time_median_s=0.01, kernel_launches=1, layer="conv2d",
                config="{}", axes="{}", input_shapes="1x1", memory_format="nchw", family="f", run_id="r",
                suite="s", kernels="aten::k", timestamp="t", harness_version="0", torch_version="2.13",
                python_version="3.11", peak_dtype="fp32", stability="stable", **PEAKS)
    base.update(kw)
    base.setdefault("device_label", base["machine_name"])          # the host CPU: named by its machine
    base.setdefault("main_memory", "DRAM")
    base.setdefault("case_id", f"c{abs(hash(json.dumps(kw, sort_keys=True, default=str))) % 10**8}")
    base.setdefault("config_id", base["case_id"])
    base.setdefault("row_id", f"{base['machine_id']}:{base['device']}:{base['case_id']}")
    t = base["time_median_s"]
    base.setdefault("time_q1_s", t * 0.99)
    base.setdefault("time_q3_s", t * 1.01)
    base.setdefault("time_ci_low_s", t * 0.995)
    base.setdefault("time_ci_high_s", t * 1.005)
    base["intensity_flop_per_byte"] = base["flops"] / (base["bytes_read"] + base["bytes_written"])
    return {c: base.get(c) for c in R.COLUMN_NAMES}


def frame(*rows):
    return pd.DataFrame(list(rows), columns=list(R.COLUMN_NAMES))


def test_roofline_bound_fraction_and_labels():
    f = frame(
        row(case_id="compute", flops=1e9, bytes_read=5e5, bytes_written=5e5, time_median_s=0.01),
        row(case_id="memory", flops=1e6, bytes_read=5e7, bytes_written=5e7, time_median_s=0.02),
        row(case_id="under", flops=1e9, bytes_read=5e5, bytes_written=5e5, time_median_s=0.1),
        row(case_id="launch", flops=1e3, bytes_read=1e3, bytes_written=1e3, time_median_s=3e-6),
        row(case_id="failed", status="error", time_median_s=np.nan),
    )
    d = derive(f).set_index("case_id")
    c = d.loc["compute"]
    # intensity 1000 FLOP/B: 1000 x 10 GB/s = 10 TFLOP/s > 200 GFLOP/s roof -> compute-bound
    assert c.roofline_bound == "compute" and c.attainable_flops_s == 2e11
    assert c.roofline_time_s == pytest.approx(1e9 / 2e11)                 # 5 ms
    assert c.roofline_fraction == pytest.approx(0.5) and c.label == "compute-bound"
    assert c.achieved_flops_s == pytest.approx(1e11)
    assert c.util_ceiling == pytest.approx(0.5) and c.util_peak == pytest.approx(0.25)
    assert c.roof_source == "measured"
    m = d.loc["memory"]
    # 1e8 bytes / 10 GB/s = 10 ms roofline time; measured 20 ms
    assert m.roofline_bound == "memory" and m.roofline_time_s == pytest.approx(0.01)
    assert m.roofline_fraction == pytest.approx(0.5) and m.label == "memory-bound"
    assert m.bw_util_ceiling == pytest.approx(0.5) and m.bw_util_peak == pytest.approx(0.25)
    assert d.loc["under"].label == "under-utilised" and d.loc["under"].roofline_fraction == pytest.approx(0.05)
    assert d.loc["launch"].label == "launch-bound"                          # 3 us <= 2 x 1 launch x 2 us
    assert d.loc["launch"].launch_floor_s == pytest.approx(2e-6)
    assert pd.isna(d.loc["failed"].achieved_flops_s) and pd.isna(d.loc["failed"].label)


def test_theoretical_roof_when_nothing_measured_and_unknown_when_not_stored():
    d = derive(frame(row(ceiling_flops_s=None, ceiling_bytes_s=None, ceiling_source="none"))).iloc[0]
    assert d.roof_source == "formula" and d.roofline_time_s == pytest.approx(1e9 / 4e11)
    assert pd.isna(d.util_ceiling) and d.util_peak == pytest.approx(0.25)
    mixed = derive(frame(row(ceiling_flops_s=None, ceiling_source="measured"))).iloc[0]
    assert mixed.roof_source == "mixed" and mixed.roofline_time_s == pytest.approx(1e9 / 4e11)
    old = derive(frame(row(peak_flops_s=None, peak_bytes_s=None, ceiling_flops_s=None, ceiling_bytes_s=None,
                           peak_source="not stored", ceiling_source="not stored", launch_overhead_s=None))).iloc[0]
    assert pd.isna(old.roof_source) and pd.isna(old.util_peak) and pd.isna(old.label)     # unknown, never guessed


def test_derive_reads_only_stored_columns(monkeypatch):
    """Two machines' rows in one table: each row is measured against its own stored peaks."""
    import harness.devices.cpu as cpu

    def broken(*a, **k):
        raise AssertionError("analysis probed the live machine")
    monkeypatch.setattr(cpu, "describe_cpu", broken)
    monkeypatch.setattr(cpu, "cpuinfo", broken)
    f = frame(row(case_id="a"), row(case_id="a", machine_id="n" * 12, ceiling_flops_s=1e12))
    d = derive(f)
    assert list(d["util_ceiling"]) == pytest.approx([0.5, 0.1])


def test_equal_flops_grouping_and_ranking():
    f = frame(*[row(case_id=f"r{i}", flops=fl, time_median_s=t) for i, (fl, t) in enumerate(
        [(100, 1.0), (101, 3.0), (150, 2.0), (151, 1.0), (152, 4.0), (300, 1.0)])],
        row(case_id="bf", flops=100, dtype="bf16", time_median_s=9.0),
        row(case_id="other", flops=100, machine_id="n" * 12, time_median_s=50.0))     # another machine: apart
    g = equal_flops_groups(f, tol=0.02).set_index("case_id")
    assert set(g.index) == {"r0", "r1", "r2", "r3", "r4"}          # 300 alone, bf16 alone, other machine alone
    assert g.loc["r0", "group"] == g.loc["r1", "group"] != g.loc["r2", "group"] == g.loc["r4", "group"]
    assert g.loc["r1", "group_spread"] == 3.0 and g.loc["r4", "group_spread"] == 4.0
    assert (g.loc["r3", "speed_rank"], g.loc["r2", "speed_rank"], g.loc["r4", "speed_rank"]) == (1, 2, 3)
    top = findings(f, tol=0.02)
    assert [round(x.spread, 1) for x in top] == [4.0, 3.0]          # ranked by spread


def conv_config(cin, groups):
    return json.dumps({"in_channels": cin, "out_channels": cin, "kernel_size": [3, 3], "stride": [1, 1],
                       "padding": [1, 1], "dilation": [1, 1], "groups": groups, "bias": True,
                       "output_padding": [0, 0]})


def test_finding_explains_depthwise():
    dense = row(case_id="dense", config=conv_config(64, 1), input_shapes="1x64x28x28", flops=57802752,
                bytes_read=350000, bytes_written=200704, time_median_s=440e-6)
    dw = row(case_id="dw", config=conv_config(512, 64), input_shapes="1x512x28x28", flops=57802752,
             bytes_read=1740000, bytes_written=1605632, time_median_s=2.67e-3, kernels="aten::dw")
    (f,) = findings(frame(dense, dw))
    assert f.spread == pytest.approx(2.67e-3 / 440e-6)
    assert "X (2 CPUs) fp32, 57.8 MFLOPs: conv2d in=512 out=512 k=3 p=1 g=64 on 1x512x28x28 takes 6.1x" in f.text
    assert "as long as conv2d in=64 out=64 k=3 p=1 on 1x64x28x28 (2.67 ms vs 440 us)" in f.text
    assert "moves 6.1x the bytes" in f.text and "64 channel groups against 1" in f.text
    assert "8 input channels instead of 64" in f.text and "aten::dw vs aten::k" in f.text
    assert list(f.rows["time_median_s"]) == [440e-6, 2.67e-3]


def test_compare_verdicts_respect_noise():
    a = frame(*[row(case_id=i, run_id="a", time_median_s=1.0) for i in "wxyzv"])
    b = frame(
        row(case_id="w", run_id="b", time_median_s=1.5),                                      # clearly slower
        row(case_id="x", run_id="b", time_median_s=1.03),                                     # under threshold
        row(case_id="y", run_id="b", time_median_s=0.5),                                      # clearly faster
        row(case_id="z", run_id="b", time_median_s=1.5, time_q1_s=0.9, time_q3_s=2.0),        # noisy: no verdict
        row(case_id="v", run_id="b", status="error", time_median_s=np.nan),                   # not comparable
    )
    c = compare(a, b, threshold=0.05).set_index("case_id")
    assert c.loc["w", "verdict"] == "slower" and c.loc["w", "ratio"] == 1.5
    assert c.loc["x", "verdict"] == "same" and c.loc["y", "verdict"] == "faster" and c.loc["z", "verdict"] == "same"
    assert "v" not in c.index and not c.attrs["cross_device"]


def test_compare_refuses_or_labels_two_machines():
    a = frame(row(case_id="w", run_id="a", time_median_s=1.0))
    b = frame(row(case_id="w", run_id="b", machine_id="n" * 12, machine_name="Y (64 CPUs)", time_median_s=0.5))
    with pytest.raises(MixedMachines, match=r"X \(2 CPUs\) \[mmmm.*Y \(64 CPUs\).*--across-machines"):
        compare(a, b)
    c = compare(a, b, across_machines=True)
    assert c.attrs["cross_device"] and c.iloc[0]["ratio"] == 0.5 and c.iloc[0]["verdict"] == "faster"
    assert "Y (64 CPUs)" in c.attrs["b"]
    # one machine, other threading settings: compared, with a note
    s = compare(a, frame(row(case_id="w", run_id="b", settings_id="t" * 12, time_median_s=1.0)))
    assert not s.attrs["cross_device"] and "threading settings differ" in s.attrs["notes"][0]


def test_regress_refuses_history_of_another_machine_or_setting():
    new = frame(row(case_id="p", run_id="n", time_median_s=1.3))
    mine = row(case_id="p", run_id="h1", time_median_s=1.0)
    theirs = row(case_id="p", run_id="h2", machine_id="n" * 12, machine_name="Xeon (2 CPUs)", time_median_s=2.0)
    other_threads = row(case_id="p", run_id="h3", settings_id="t" * 12, time_median_s=0.5)
    with pytest.raises(MixedMachines, match="h2 .Xeon.*--accept-other-machines"):
        check_history(frame(mine, theirs), new)
    with pytest.raises(MixedMachines, match="h3.*--accept-other-settings"):
        check_history(frame(mine, other_threads), new)
    assert len(check_history(frame(mine, theirs), new, accept_machines=True)) == 2
    kept, dropped = same_machine_only(frame(mine, theirs, other_threads), new)
    assert list(kept["run_id"]) == ["h1"] and dropped == 2


def test_regressions_against_history(tmp_path, capsys):
    runs = (("h1", (1.0, 1.0)), ("h2", (1.02, 0.98)))
    hist = frame(*[row(case_id=i, run_id=r, time_median_s=t) for r, ts in runs for i, t in zip("pq", ts)])
    new = frame(row(case_id="p", run_id="n", time_median_s=1.3), row(case_id="q", run_id="n", time_median_s=1.05))
    bad = regressions(hist, new, threshold=0.10)
    assert list(bad["case_id"]) == ["p"]
    assert bad.iloc[0]["reference_s"] == pytest.approx(1.01) and bad.iloc[0]["history_runs"] == 2
    assert bad.iloc[0]["slowdown"] == pytest.approx(1.3 / 1.01)
    # two nights: the band decides, and no z it did not use is shown beside it
    assert bad.iloc[0]["judged_by"] == "band" and pd.isna(bad.iloc[0]["z"]) and pd.isna(bad.iloc[0]["z_limit"])
    from harness.cli import main
    other = hist.assign(machine_id="n" * 12, run_id="o", row_id=lambda f: "n" * 12 + ":cpu:" + f["case_id"])
    for name, fr in (("h", hist), ("n", new), ("same", hist[hist.run_id == "h1"].assign(run_id="s")), ("o", other)):
        (tmp_path / name).mkdir()
        write_parquet(fr, tmp_path / name / "part-1of1.parquet")
    assert main(["regress", str(tmp_path / "n"), "--baseline", str(tmp_path / "h"), "--threshold", "0.1"]) == 1
    assert "1 of 2 judged case(s) slower" in capsys.readouterr().out
    assert main(["regress", str(tmp_path / "same"), "--baseline", str(tmp_path / "h")]) == 0
    assert main(["regress", str(tmp_path / "n"), "--baseline", str(tmp_path / "h"), str(tmp_path / "o")]) == 2
    assert "another machine" in capsys.readouterr().err
    assert main(["regress", str(tmp_path / "n"), "--baseline", str(tmp_path / "*"), "--same-machine-only",
                 "--threshold", "0.1"]) == 1
    assert main(["compare", str(tmp_path / "h"), str(tmp_path / "n")]) == 0
    assert main(["compare", str(tmp_path / "h"), str(tmp_path / "o")]) == 2
    assert main(["compare", str(tmp_path / "h"), str(tmp_path / "o"), "--across-machines"]) == 0
    assert "cross-device comparison" in capsys.readouterr().out


def test_cross_device_view():
    f = derive(frame(row(case_id="a"), row(case_id="a", machine_id="n" * 12, machine_name="Y (64 CPUs)",
                                           ceiling_flops_s=1e12)))
    x = cross_device(f)
    assert list(x.columns) == ["X (2 CPUs)", "Y (64 CPUs)"]
    assert x.iloc[0]["X (2 CPUs)"] == pytest.approx(0.5) and x.iloc[0]["Y (64 CPUs)"] == pytest.approx(0.1)


def test_reorders_are_a_reason_only_when_the_counts_differ():
    import pandas as pd

    from harness.analysis.findings import reasons
    base = dict(config="{}", memory_format="nchw", bytes_read=1000, bytes_written=100, intensity_flop_per_byte=1.0,
                kernels="aten::mkldnn_convolution")
    slow, fast = pd.Series(dict(base, onednn_reorders=3)), pd.Series(dict(base, onednn_reorders=1))
    assert any("oneDNN runs 3 reorders" in r and "(the fast one: 1)" in r for r in reasons(slow, fast))
    same = reasons(slow, pd.Series(dict(base, onednn_reorders=3)))
    assert not any("reorders" in r for r in same)
    assert any("oneDNN runs 3 reorders" in r for r in reasons(slow, pd.Series(dict(base, onednn_reorders=None))))


def test_regress_that_judges_nothing_fails_unless_allowed(tmp_path, capsys):
    """A nightly check that checked nothing (renamed cases, a baseline of another suite) is not a pass:
    exit 3 with one line, 0 with --allow-empty; cases without a baseline are counted when others are judged."""
    from harness.cli import main
    from harness.cli.results import NOTHING_JUDGED
    hist = frame(*[row(case_id=c, run_id=r, time_median_s=1.0) for r in ("h1", "h2") for c in "pq"])
    renamed = frame(row(case_id="x", run_id="n1", time_median_s=1.0), row(case_id="y", run_id="n1", time_median_s=1.0))
    partly = frame(row(case_id="p", run_id="n2", time_median_s=1.0), row(case_id="y", run_id="n2", time_median_s=1.0))
    for name, fr in (("h", hist), ("renamed", renamed), ("partly", partly)):
        (tmp_path / name).mkdir()
        write_parquet(fr, tmp_path / name / "part-1of1.parquet")
    assert regressions(hist, renamed).attrs["judged"] == 0 and regressions(hist, partly).attrs["without_baseline"] == 1
    assert main(["regress", str(tmp_path / "renamed"), "--baseline", str(tmp_path / "h")]) == NOTHING_JUDGED == 3
    out, err = capsys.readouterr()
    assert "2 case(s) of NEW have no stable baseline in 2 run(s)" in out
    assert err.strip() == ("nothing judged: no case of NEW has a stable baseline in 2 baseline run(s) "
                           "(exit 3; --allow-empty accepts it)")
    assert main(["regress", str(tmp_path / "renamed"), "--baseline", str(tmp_path / "h"), "--allow-empty"]) == 0
    assert main(["regress", str(tmp_path / "partly"), "--baseline", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert "1 case(s) of NEW have no stable baseline" in out and "1 case(s) judged against 2 baseline run(s)" in out


def test_a_nightly_check_that_judged_too_few_cases_is_not_green(tmp_path, capsys):
    """1 of NEW's 4 cases has a baseline: regress judged 25 %, under the default --min-judged 50 %:
    exit 3 with one line saying how many; --min-judged 0.25 accepts it."""
    from harness.cli import main
    hist = frame(*[row(case_id="p", run_id=r, time_median_s=1.0) for r in ("h1", "h2")])
    new = frame(*[row(case_id=c, run_id="n", time_median_s=1.0) for c in "pwxy"])
    for name, fr in (("h", hist), ("n", new)):
        (tmp_path / name).mkdir()
        write_parquet(fr, tmp_path / name / "part-1of1.parquet")
    assert main(["regress", str(tmp_path / "n"), "--baseline", str(tmp_path / "h")]) == 3
    assert capsys.readouterr().err.strip() == ("regress: 1 of 4 case(s) judged (25%), under --min-judged 50% "
                                               "(exit 3; --allow-empty accepts it)")
    assert main(["regress", str(tmp_path / "n"), "--baseline", str(tmp_path / "h"), "--min-judged", "0.25"]) == 0


# --- the backward pass: ratios to the forward, findings within a pass, tables with a pass column --------------

def pass_row(pass_, t, flops, **kw):
    grads = None if pass_ == "forward" else kw.pop("grads", "input,weight")
    return row(**{"pass": pass_, "grads": grads, "config_id": kw.pop("config_id", "L"), "time_median_s": t,
                  "flops": flops, "config": conv_config(64, 1), "input_shapes": "1x64x28x28", **kw})


def test_backward_rows_carry_their_time_and_flops_ratio_to_the_forward_of_the_same_layer():
    f = frame(
        pass_row("forward", 1e-3, 1e9, case_id="fwd"),
        pass_row("forward", 3e-3, 1e9, case_id="fwd-other-family", family="g"),   # the median of the two: 2 ms
        pass_row("backward", 6e-3, 2e9, case_id="bwd"),
        pass_row("forward+backward", 8e-3, 3e9, case_id="both"),
        pass_row("backward", 1e-3, 1e9, case_id="dw-only", grads="weight"),
        pass_row("backward", 6e-3, 2e9, case_id="other-run", run_id="r2"),        # its run has no forward
        pass_row("backward", 6e-3, 2e9, case_id="other-dtype", dtype="bf16"),
        pass_row("backward", 6e-3, 2e9, case_id="graph", mode="graph"),           # times of other modes: apart
        pass_row("backward", 6e-3, 2e9, case_id="unmeasured", status="error"),
    )
    d = derive(f).set_index("case_id")
    assert d.loc["bwd", "bwd_fwd_time_ratio"] == pytest.approx(6e-3 / 2e-3)     # 3.0x the forward's time
    assert d.loc["bwd", "bwd_fwd_flops_ratio"] == pytest.approx(2.0)            # for 2x its FLOPs
    assert d.loc["both", "bwd_fwd_time_ratio"] == pytest.approx(4.0) and d.loc["both", "bwd_fwd_flops_ratio"] == 3.0
    assert d.loc["dw-only", "bwd_fwd_time_ratio"] == pytest.approx(0.5) and d.loc["dw-only", "bwd_fwd_flops_ratio"] == 1
    for none in ("fwd", "fwd-other-family", "other-run", "other-dtype", "graph", "unmeasured"):
        assert pd.isna(d.loc[none, "bwd_fwd_time_ratio"]) and pd.isna(d.loc[none, "bwd_fwd_flops_ratio"]), none


def test_findings_pair_rows_only_within_one_pass():
    f = frame(pass_row("forward", 1e-3, 1e9, case_id="fwd"), pass_row("backward", 3e-3, 1e9, case_id="bwd-in",
                                                                       grads="input"))
    assert findings(f) == []                                  # equal FLOPs, but a forward and a backward
    f = frame(pass_row("forward", 1e-3, 1e9, case_id="fwd"),
              pass_row("backward", 1e-3, 1e9, case_id="bwd-in", grads="input"),
              pass_row("backward", 3e-3, 1e9, case_id="bwd-w", grads="weight"))
    (one,) = findings(f)
    assert set(one.rows.index) == set(f.index[1:])
    assert "conv2d in=64 out=64 k=3 p=1 on 1x64x28x28 backward [weight] takes 3.0x as long as conv2d in=64 out=64 " \
           "k=3 p=1 on 1x64x28x28 backward [input]" in one.text
    assert "it computes the weight gradient against input" in one.text


def test_comparisons_and_the_cross_device_view_keep_passes_apart():
    from harness.report.compare import CompareModel, compare_table
    a = frame(pass_row("forward", 1e-3, 1e9, case_id="f", run_id="a"),
              pass_row("backward", 2e-3, 2e9, case_id="b", run_id="a"))
    b = frame(pass_row("forward", 1e-3, 1e9, case_id="f", run_id="b"),
              pass_row("backward", 4e-3, 2e9, case_id="b", run_id="b"))
    m = CompareModel.of(compare(a, b, threshold=0.05), 0.05)
    fam = m.families.set_index("pass")
    assert list(fam["family"]) == ["f", "f"] and (fam["cases"] == 1).all()
    assert fam.loc["forward", "geomean_ratio"] == pytest.approx(1.0) and fam.loc["backward", "geomean_ratio"] == 2
    text = compare_table(m)
    assert " pass " in text.splitlines()[0] and "backward [input,weight]" in text
    x = cross_device(derive(pd.concat([a, b.assign(machine_id="n" * 12, machine_name="Y (64 CPUs)",
                                                   device_label="Y (64 CPUs)")], ignore_index=True)))
    assert len(x) == 2 and list(x.index.get_level_values("pass")) == ["backward", "forward"]
