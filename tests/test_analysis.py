"""Analysis on synthetic tables with known answers: roofline bound and fraction, labels,
equal-FLOPs grouping and ranking, compare verdicts with and without noise, regressions and the
regress exit code, the cross-device view, and the report."""

import json

import numpy as np
import pandas as pd
import pytest

from harness.analysis import compare, cross_device, derive, equal_flops_groups, findings, regressions
from harness.analysis.metrics import peak_dtype
from harness.store import write_parquet


def row(**kw):
    base = dict(status="ok", device="cpu", device_name="X", dtype="fp32", threads=2, flops=1e9, bytes_read=5e5,
                bytes_written=5e5, time_median_s=0.01, kernel_launches=1, layer="conv2d", params="{}",
                input_shapes="1x1", memory_format="nchw", family="f", run_id="r", kernels="aten::k")
    base.update(kw)
    base.setdefault("row_id", f"id{abs(hash(json.dumps(kw, sort_keys=True, default=str))) % 10**8}")
    t = base["time_median_s"]
    base.setdefault("time_q1_s", t * 0.99)
    base.setdefault("time_q3_s", t * 1.01)
    base.setdefault("time_ci_low_s", t * 0.995)
    base.setdefault("time_ci_high_s", t * 1.005)
    base["intensity"] = base["flops"] / (base["bytes_read"] + base["bytes_written"])
    return base


PEAKS = pd.DataFrame([{"device": "cpu", "device_name": "X", "dtype": "fp32", "threads": 2,
                       "datasheet_flops_s": 4e11, "datasheet_bytes_s": 2e10, "ceiling_flops_s": 2e11,
                       "ceiling_bytes_s": 1e10}])


def test_roofline_bound_fraction_and_labels():
    f = pd.DataFrame([
        row(row_id="compute", flops=1e9, bytes_read=5e5, bytes_written=5e5, time_median_s=0.01),
        row(row_id="memory", flops=1e6, bytes_read=5e7, bytes_written=5e7, time_median_s=0.02),
        row(row_id="under", flops=1e9, bytes_read=5e5, bytes_written=5e5, time_median_s=0.1),
        row(row_id="launch", flops=1e3, bytes_read=1e3, bytes_written=1e3, time_median_s=3e-6),
        row(row_id="failed", status="error", time_median_s=np.nan),
    ])
    d = derive(f, peaks=PEAKS).set_index("row_id")
    c = d.loc["compute"]
    # intensity 1000 FLOP/B: 1000 x 10 GB/s = 10 TFLOP/s > 200 GFLOP/s roof -> compute-bound
    assert c.roofline_bound == "compute" and c.attainable_flops_s == 2e11
    assert c.roofline_time_s == pytest.approx(1e9 / 2e11)                 # 5 ms
    assert c.roofline_fraction == pytest.approx(0.5) and c.label == "compute-bound"
    assert c.achieved_flops_s == pytest.approx(1e11)
    assert c.util_ceiling == pytest.approx(0.5) and c.util_datasheet == pytest.approx(0.25)
    assert c.roof_source == "measured"
    m = d.loc["memory"]
    # 1e8 bytes / 10 GB/s = 10 ms roofline time; measured 20 ms
    assert m.roofline_bound == "memory" and m.roofline_time_s == pytest.approx(0.01)
    assert m.roofline_fraction == pytest.approx(0.5) and m.label == "memory-bound"
    assert m.bw_util_ceiling == pytest.approx(0.5) and m.bw_util_datasheet == pytest.approx(0.25)
    assert d.loc["under"].label == "under-utilised" and d.loc["under"].roofline_fraction == pytest.approx(0.05)
    assert d.loc["launch"].label == "launch-bound"                          # 3 us <= 2 x 1 launch x 2 us
    assert pd.isna(d.loc["failed"].achieved_flops_s) and pd.isna(d.loc["failed"].label)


def test_datasheet_roof_when_nothing_measured():
    peaks = PEAKS.assign(ceiling_flops_s=np.nan, ceiling_bytes_s=np.nan)
    d = derive(pd.DataFrame([row()]), peaks=peaks).iloc[0]
    assert d.roof_source == "datasheet" and d.roofline_time_s == pytest.approx(1e9 / 4e11)
    assert pd.isna(d.util_ceiling) and d.util_datasheet == pytest.approx(0.25)


def test_peak_dtype_tf32():
    f = pd.DataFrame([row(device="cuda:0", layer="conv2d", allow_tf32_cudnn=True, allow_tf32_matmul=False),
                      row(device="cuda:0", layer="linear", allow_tf32_cudnn=True, allow_tf32_matmul=False),
                      row(device="cuda:0", layer="mm", allow_tf32_cudnn=True, allow_tf32_matmul=True),
                      row(device="cuda:0", layer="conv2d", dtype="bf16", allow_tf32_cudnn=True),
                      row(device="cpu", layer="conv2d", allow_tf32_cudnn=np.nan)])
    assert list(peak_dtype(f)) == ["tf32", "fp32", "tf32", "bf16", "fp32"]


def test_equal_flops_grouping_and_ranking():
    f = pd.DataFrame([row(row_id=f"r{i}", flops=fl, time_median_s=t) for i, (fl, t) in enumerate(
        [(100, 1.0), (101, 3.0), (150, 2.0), (151, 1.0), (152, 4.0), (300, 1.0)])]
        + [row(row_id="bf", flops=100, dtype="bf16", time_median_s=9.0)])
    g = equal_flops_groups(f, tol=0.02).set_index("row_id")
    assert set(g.index) == {"r0", "r1", "r2", "r3", "r4"}          # 300 alone, bf16 alone: no group
    assert g.loc["r0", "group"] == g.loc["r1", "group"] != g.loc["r2", "group"] == g.loc["r4", "group"]
    assert g.loc["r1", "group_spread"] == 3.0 and g.loc["r4", "group_spread"] == 4.0
    assert (g.loc["r3", "speed_rank"], g.loc["r2", "speed_rank"], g.loc["r4", "speed_rank"]) == (1, 2, 3)
    top = findings(f, tol=0.02)
    assert [round(x.spread, 1) for x in top] == [4.0, 3.0]          # ranked by spread


def test_finding_explains_depthwise():
    dense = row(row_id="dense", params=json.dumps({"in": 64, "out": 64, "k": 3, "g": 1}), input_shapes="1x64x28x28",
                flops=57802752, bytes_read=350000, bytes_written=200704, time_median_s=440e-6)
    dw = row(row_id="dw", params=json.dumps({"in": 512, "out": 512, "k": 3, "g": 64}), input_shapes="1x512x28x28",
             flops=57802752, bytes_read=1740000, bytes_written=1605632, time_median_s=2.67e-3, kernels="aten::dw")
    (f,) = findings(pd.DataFrame([dense, dw]))
    assert f.spread == pytest.approx(2.67e-3 / 440e-6)
    assert "takes 6.1x as long as conv2d in=64 out=64 k=3 g=1 on 1x64x28x28" in f.text
    assert "moves 6.1x the bytes" in f.text and "64 channel groups against 1" in f.text
    assert "8 input channels instead of 64" in f.text and "aten::dw vs aten::k" in f.text
    assert list(f.rows["time_median_s"]) == [440e-6, 2.67e-3]


def test_compare_verdicts_respect_noise():
    a = pd.DataFrame([row(row_id=i, run_id="a", time_median_s=1.0) for i in "wxyzv"])
    b = pd.DataFrame([
        row(row_id="w", run_id="b", time_median_s=1.5),                                      # clearly slower
        row(row_id="x", run_id="b", time_median_s=1.03),                                     # under threshold
        row(row_id="y", run_id="b", time_median_s=0.5),                                      # clearly faster
        row(row_id="z", run_id="b", time_median_s=1.5, time_q1_s=0.9, time_q3_s=2.0),        # noisy: no verdict
        row(row_id="v", run_id="b", status="error", time_median_s=np.nan),                   # not comparable
    ])
    c = compare(a, b, threshold=0.05).set_index("row_id")
    assert c.loc["w", "verdict"] == "slower" and c.loc["w", "ratio"] == 1.5
    assert c.loc["x", "verdict"] == "same" and c.loc["y", "verdict"] == "faster" and c.loc["z", "verdict"] == "same"
    assert "v" not in c.index


def test_regressions_against_history(tmp_path, capsys):
    runs = (("h1", (1.0, 1.0)), ("h2", (1.02, 0.98)))
    hist = pd.DataFrame([row(row_id=i, run_id=r, time_median_s=t) for r, ts in runs for i, t in zip("pq", ts)])
    new = pd.DataFrame([row(row_id="p", run_id="n", time_median_s=1.3),
                        row(row_id="q", run_id="n", time_median_s=1.05)])
    bad = regressions(hist, new, threshold=0.10)
    assert list(bad["row_id"]) == ["p"]
    assert bad.iloc[0]["reference_s"] == pytest.approx(1.01) and bad.iloc[0]["history_runs"] == 2
    assert bad.iloc[0]["slowdown"] == pytest.approx(1.3 / 1.01)
    from harness.cli import main
    for name, frame in (("h", hist), ("n", new), ("same", hist[hist.run_id == "h1"].assign(run_id="s"))):
        (tmp_path / name).mkdir()
        write_parquet(frame, tmp_path / name / "part-1of1.parquet")
    assert main(["regress", str(tmp_path / "n"), "--baseline", str(tmp_path / "h"), "--threshold", "0.1"]) == 1
    assert "1 case(s) slower" in capsys.readouterr().out
    assert main(["regress", str(tmp_path / "same"), "--baseline", str(tmp_path / "h")]) == 0
    assert main(["compare", str(tmp_path / "h"), str(tmp_path / "n")]) == 0


def test_cross_device_view():
    f = derive(pd.DataFrame([row(row_id="a", device_name="X"), row(row_id="a2", device_name="Y")]),
               peaks=pd.concat([PEAKS, PEAKS.assign(device_name="Y", ceiling_flops_s=1e12)]))
    x = cross_device(f)
    assert list(x.columns) == ["X", "Y"]
    assert x.iloc[0]["X"] == pytest.approx(0.5) and x.iloc[0]["Y"] == pytest.approx(0.1)


def test_report_is_self_contained(tmp_path):
    from test_runner import fake_measure

    from harness.report.build import build_report
    from harness.runner import run_suite
    from harness.suite import parse_suite

    suite = parse_suite({"name": "rep", "sweep": [
        {"family": "groups", "layer": "conv2d", "input": "1x{c}x8x8", "params": {"k": 3, "p": 1},
         "axes": {"g": [1, 4]}, "solve": {"axis": "c", "keep": "c * c / g", "like": {"c": 8, "g": 1},
                                        "multiple_of": "g"}, "derive": {"in": "c", "out": "c"}}]})
    times = iter([1e-4, 5e-4])

    def timed(fn, **kw):
        return fake_measure(next(times))(fn, **kw)
    run = run_suite(suite, out=tmp_path, measure_fn=timed, progress=False)
    rep = build_report([run.run_dir], tmp_path / "report")
    text = rep.html.read_text()
    assert "data:image/png;base64," in text and "http://" not in text and "https://" not in text
    assert len(rep.findings) == 1 and "5.0x as long" in rep.findings[0] and rep.findings[0] in rep.markdown.read_text()
    assert {p.suffix for p in rep.plots} == {".png", ".svg"}
