"""The report: self-contained HTML, a model rendered by registered renderers, byte-identical on
stored data whatever the live machine or working directory, older runs saying their peaks are
not stored, machines labelled, hostile family names drawn safely."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from harness.report import ReportModel, build_report, formats
from harness.runner import run_suite
from harness.suite import parse_suite

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference" / "2026-11-24-amd-epyc-zen3-2cpu"
GROUPS = {"family": "groups", "layer": "conv2d", "input": "1x{c}x8x8", "params": {"k": 3, "p": 1},
          "axes": {"g": [1, 4]}, "solve": {"axis": "c", "keep": "c * c / g", "like": {"c": 8, "g": 1},
                                           "multiple_of": "g"}, "derive": {"in": "c", "out": "c"}}


def timed_run(tmp_path, sweeps, times, name="rep"):
    """A run timed by a fake clock (``times``, one per case), on a quiet host: the agents sharing this
    machine would otherwise make every row ``contended`` and findings would set them all aside."""
    from unittest import mock

    from test_runner import fake_measure
    it = iter(times)

    def timed(fn, **kw):
        return fake_measure(next(it))(fn, **kw)
    with mock.patch("harness.runner.loop.host_busy", return_value=0.0):
        return run_suite(parse_suite({"name": name, "sweep": sweeps}), out=tmp_path, measure_fn=timed,
                         progress=False)


def test_report_is_self_contained(tmp_path):
    run = timed_run(tmp_path, [GROUPS], [1e-4, 5e-4])
    rep = build_report([run.run_dir], tmp_path / "report", formats=("html", "markdown", "json"))
    text = rep.html.read_text()
    assert "data:image/png;base64," in text and "http://" not in text and "https://" not in text
    assert len(rep.findings) == 1 and "5.0x as long" in rep.findings[0]
    unescaped = rep.markdown.read_text().replace("\\", "")
    assert rep.findings[0] in unescaped and "rows.csv" in text
    names = {p.name for p in rep.files}
    assert {"report.html", "report.md", "report.json", "rows.csv"} <= names
    assert {p.suffix for p in rep.files} >= {".png", ".svg"}
    doc = json.loads((tmp_path / "report" / "report.json").read_text())
    assert doc["schema_version"] == 6 and len(doc["rows"]) == 2 and doc["findings"][0]["spread"] == pytest.approx(5)
    assert {"html", "markdown", "json", "csv", "parquet"} <= set(formats(ReportModel))


def test_report_is_identical_without_live_probes_and_elsewhere(tmp_path, monkeypatch):
    run = timed_run(tmp_path, [GROUPS], [1e-4, 5e-4])
    a = build_report([run.run_dir], tmp_path / "a", formats=("html", "markdown", "json"))
    import harness.devices.cpu as cpu
    import harness.devices.gpu as gpu
    import harness.devices.identity as identity

    def broken(*args, **kwargs):
        raise RuntimeError("probe unavailable")
    for mod, name in ((cpu, "describe_cpu"), (cpu, "cpuinfo"), (gpu, "describe_gpus"), (identity, "_hardware"),
                      (identity, "describe_machine_identity")):
        monkeypatch.setattr(mod, name, broken)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    b = build_report([run.run_dir], tmp_path / "b", formats=("html", "markdown", "json"))
    for pa, pb in zip(sorted(a.files), sorted(b.files)):
        assert pa.name == pb.name and pa.read_bytes() == pb.read_bytes(), pa.name


def test_older_runs_say_their_peaks_are_not_stored(tmp_path):
    rep = build_report([str(REFERENCE / "quick-cpu-*")], tmp_path / "r", formats=("markdown",))
    md = rep.markdown.read_text()
    assert "store no peaks: their utilization is unknown" in md
    rows = pd.read_csv(tmp_path / "r" / "rows.csv")
    assert rows["util_peak"].isna().all() and (rows["peak_source"] == "not stored").all()


def test_two_machines_are_labelled(tmp_path):
    run = timed_run(tmp_path, [GROUPS], [1e-4, 5e-4])
    rep = build_report([run.run_dir, str(REFERENCE / "quick-cpu-20261124T014954Z")], tmp_path / "r",
                       formats=("markdown",))
    md = rep.markdown.read_text()
    assert "rows from several machines" in md and "cross-device view" in md


def test_hostile_family_names_are_drawn_safely(tmp_path):
    sweep = dict(GROUPS, family="$\\frac{a}{ /../x {b} ^_^ $")
    run = timed_run(tmp_path, [sweep], [1e-4, 5e-4])
    rep = build_report([run.run_dir], tmp_path / "r", formats=("html", "markdown"))
    for p in rep.files:
        assert p.parent == tmp_path / "r" and all(ch.isalnum() or ch in "._-" for ch in p.name), p.name
    assert "refused" not in rep.markdown.read_text()
    assert not any("left out" in line for line in rep.markdown.read_text().splitlines())
    assert os.listdir(tmp_path / "r")


# --- numbers for people (harness.units) -----------------------------------------------------------------

def test_units_three_significant_digits_and_rounding_across_prefixes():
    from harness.units import percent3, seconds, si
    assert si(1.78e11, "FLOP/s") == "178 GFLOP/s" and si(999.7e9, "B/s") == "1 TB/s"   # rounds, then picks T
    assert si(1234, "B/s") == "1.23 kB/s" and si(None) == "-" and si(float("nan")) == "-"
    assert seconds(1.017e-4) == "102 us" and seconds(2.5) == "2.5 s" and seconds(3e-8) == "30 ns"
    assert seconds(0.99996) == "1 s" and seconds(9.996e-7) == "1 us" and seconds(0.0123) == "12.3 ms"
    assert percent3(0.1234) == "12.3 %" and percent3(0.004567) == "0.457 %" and percent3(1.234) == "123 %"


# --- at a glance: tables, plots, outliers, stability, roofs ----------------------------------------------

def loaded_run(tmp_path, sweeps, times, **columns):
    """A fake-timed run, loaded, with ``columns`` (name -> value or list) set on its rows."""
    from harness.store import Loaded, load_runs
    run = timed_run(tmp_path, sweeps, times)
    frame = load_runs([run.run_dir]).frame
    for name, value in columns.items():
        frame[name] = value
    return Loaded(frame)


def test_rows_table_shows_chosen_columns_with_units_and_peak_source(tmp_path):
    from harness.report.format import rows_view
    from harness.report.model import build_model
    from harness.units import percent3
    loaded = loaded_run(tmp_path, [GROUPS], [1e-4, 5e-4], peak_flops_s=1e9, peak_source="formula",
                        ceiling_flops_s=2e9, ceiling_bytes_s=1e15, launch_overhead_s=1e-9,
                        stability=["stable", "noisy"])
    model = build_model(loaded, with_plots=False)
    view = rows_view(model.table)
    assert list(view.columns) == ["case", "dtype", "time", "achieved", "vs ceiling", "vs formula peak", "vs roof",
                                  "bound", "stability"]
    flops = model.table["flops"].tolist()
    assert view["time"].tolist() == ["100 us", "500 us"]
    # flops / 1e-4 s against a 1 GFLOP/s formula peak and a 2 GFLOP/s measured ceiling
    assert view["vs formula peak"].tolist() == [percent3(f / t / 1e9) for f, t in zip(flops, (1e-4, 5e-4))]
    assert view["vs ceiling"].tolist() == [percent3(f / t / 2e9) for f, t in zip(flops, (1e-4, 5e-4))]
    # compute-bound (the 1 PB/s memory roof and 1 ns launch are far below): the roof is the ceiling
    assert view["vs roof"].tolist() == view["vs ceiling"].tolist()
    assert view["case"][0].startswith("groups: conv2d") and view["stability"].tolist() == ["stable", "noisy"]
    assert "datasheet" not in " ".join(view.columns)


def test_html_report_tables_glossary_download_and_set_aside_rows(tmp_path):
    from harness import record as R
    from harness.analysis.metrics import DERIVED
    from harness.report.model import build_model
    from harness.report.registry import render
    loaded = loaded_run(tmp_path, [GROUPS], [1e-4, 5e-4], stability=["stable", "bimodal"],
                        stability_reason=[None, "process medians 100/500 us split"])
    model = build_model(loaded)
    render(model, "html", tmp_path / "r")
    text = (tmp_path / "r" / "report.html").read_text()
    assert "href='rows.csv' download" in text and (tmp_path / "r" / "rows.csv").exists()
    assert "<th class='n' title='median time per call (time_median_s)'>time</th>" in text
    assert "<td class='n'>100 us</td>" in text and "<td class='n'>500 us</td>" in text       # right-aligned
    assert "Set aside: rows not stable" in text and "process medians 100/500 us split" in text
    for name in [c.name for c in R.COLUMNS] + [d.name for d in DERIVED]:
        assert f"<td class='t'>{name}</td>" in text, name                                     # glossary row


def test_outliers_are_the_extremes_of_the_roofline_fraction(tmp_path):
    from harness.report.model import build_model
    from harness.report.plots import outliers
    loaded = loaded_run(tmp_path, [dict(GROUPS, axes={"g": [1, 2, 4]})], [1e-4, 5e-4, 2e-4],
                        peak_flops_s=1e12, peak_bytes_s=1e11, peak_source="datasheet")
    model = build_model(loaded, with_plots=False)
    frac = model.table["roof_level_fraction"]
    assert outliers(model.table) == [("slowest vs roofline", frac.idxmin()), ("fastest vs roofline", frac.idxmax())]
    assert model.table.loc[frac.idxmin(), "time_median_s"] == 5e-4     # equal FLOPs: the slowest is furthest
    assert [k for k, _ in model.outliers] == ["slowest vs roofline", "fastest vs roofline"]


def test_an_outlier_in_a_cache_names_its_level_roof(tmp_path):
    import json

    from harness.report.model import build_model
    from harness.report.render import _outlier_lines
    from harness.units import percent3
    # conv2d on 1x8x8x8 (and 1x16x8x8 g=4) moves a few kB: inside a 1 MiB L2 of 1e9 B/s, whose roof
    # is far above the 1 PFLOP/s compute roof's time; main memory 1e8 B/s
    levels = json.dumps([{"level": "L2", "bytes_s": 1e9, "capacity_bytes": 2**20},
                         {"level": "DRAM", "bytes_s": 1e8, "capacity_bytes": None}])
    loaded = loaded_run(tmp_path, [GROUPS], [1e-4, 5e-4], peak_flops_s=1e15, ceiling_bytes_s=1e8,
                        peak_source="formula", ceiling_levels=levels, launch_overhead_s=1e-12)
    model = build_model(loaded, with_plots=False)
    t = model.table
    assert t["roof_level"].tolist() == ["L2", "L2"]
    moved = t["bytes_read"] + t["bytes_written"]
    lines = _outlier_lines(model)
    # judged against the L2 roof, not the DRAM one the flat roofline uses (10x further)
    for line, i in zip(lines, (t["roof_level_fraction"].idxmin(), t["roof_level_fraction"].idxmax())):
        assert line.endswith(f": its roofline's time is {percent3(moved[i] / 1e9 / t['time_median_s'][i])} of that "
                             "(bound by L2: its working set fits that cache).")


def _roof_labels(table):
    import matplotlib.pyplot as plt
    import numpy as np

    from harness.report.plots import _roofs, drawable
    fig, ax = plt.subplots()
    try:
        return [h.get_label() for h in _roofs(ax, drawable(table), np.logspace(-2, 3, 50))]
    finally:
        plt.close(fig)


def test_roofline_draws_one_roof_per_stored_level_and_names_the_peak(tmp_path):
    from harness.report.model import build_model
    cols = dict(peak_flops_s=1.5e11, peak_source="formula", ceiling_flops_s=1.7e11, ceiling_bytes_s=1e10,
                peak_bytes_s=None, ceiling_l1_bytes_s=None, ceiling_l2_bytes_s=None, ceiling_l3_bytes_s=None)
    table = build_model(loaded_run(tmp_path / "a", [GROUPS], [1e-4, 5e-4], **cols), with_plots=False).table
    assert _roof_labels(table) == ["measured DRAM: 10 GB/s", "measured GEMM: 170 GFLOP/s",
                                   "formula peak: 150 GFLOP/s (no bandwidth)"]
    levels = dict(cols, ceiling_l1_bytes_s=4e11, ceiling_l2_bytes_s=2e11, ceiling_l3_bytes_s=5e10)
    table = build_model(loaded_run(tmp_path / "b", [GROUPS], [1e-4, 5e-4], **levels), with_plots=False).table
    assert _roof_labels(table)[:4] == ["measured L1: 400 GB/s", "measured L2: 200 GB/s", "measured L3: 50 GB/s",
                                       "measured DRAM: 10 GB/s"]
    table["peak_source"] = "datasheet"
    table["peak_bytes_s"] = 2e10
    assert _roof_labels(table)[-1] == "datasheet peak: 150 GFLOP/s, 20 GB/s"


def test_log_axes_tick_labels_are_plain_si_and_times():
    """Log axes read ``1 k`` / ``10 M`` (SI) and, where they hold microseconds, ``100 us`` / ``1 ms``:
    plain text, never mathtext (``$10^{3}$``)."""
    from harness.report.plots import _figure, _finish
    fig, ax = _figure((6, 4))
    ax.plot([1e3, 1e7], [10.0, 1e4])
    _finish(ax, "FLOPs", "time", "t", us=(False, True))
    fig.canvas.draw()
    xs = {t.get_text() for t in ax.get_xticklabels() if t.get_text()}
    ys = {t.get_text() for t in ax.get_yticklabels() if t.get_text()}
    assert {"1 k", "10 k", "100 k", "1 M", "10 M"} <= xs
    assert {"10 us", "100 us", "1 ms", "10 ms"} <= ys
    assert not any("$" in t for t in xs | ys)


def test_style_colour_per_family_marker_per_dtype_and_hollow_unstable(tmp_path):
    import pandas as pd

    from harness.report.plots import Style, unstable
    t = pd.DataFrame({"family": ["a", "b", "a", "b"], "dtype": ["fp32", "fp32", "bf16", "bf16"],
                      "status": ["ok", "ok", "ok", "error"], "stability": ["stable", "contended", None, None]})
    s = Style.of(t)
    assert s.colours["a"] != s.colours["b"] and s.markers["fp32"] != s.markers["bf16"]
    assert unstable(t).tolist() == [False, True, False, False]      # no verdict recorded: drawn solid, used


def test_plot_names_are_slug_and_hash(tmp_path):
    import re

    from harness.report.plots import safe_name
    a, b = safe_name("heatmap ../(x) y"), safe_name("heatmap ../(x)_y")
    assert re.fullmatch(r"heatmap_x_y_[0-9a-f]{8}", a) and a != b


def test_report_without_ok_rows_and_with_script_text_renders_escaped(tmp_path):
    bad = dict(GROUPS, family="<script>alert(1)</script>", axes={"g": [3]},
               solve={"axis": "c", "keep": "c * c / g", "like": {"c": 8, "g": 1}, "multiple_of": "g"})
    run = run_suite(parse_suite({"name": "bad", "description": "<script>x</script>", "sweep": [bad]}),
                    out=tmp_path, progress=False)
    rep = build_report([run.run_dir], tmp_path / "r", formats=("html", "markdown", "json"))
    text = rep.html.read_text()
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "skipped" in text and "<script" not in rep.markdown.read_text()


def test_a_failing_plot_is_a_note_not_a_crash(tmp_path, monkeypatch):
    import harness.report.plots as plots

    def broken(*args, **kwargs):
        raise ValueError("cannot draw")
    monkeypatch.setattr(plots, "roofline", broken)
    run = timed_run(tmp_path, [GROUPS], [1e-4, 5e-4])
    rep = build_report([run.run_dir], tmp_path / "r", formats=("html",))
    assert "left out (ValueError: cannot draw)" in rep.html.read_text()
    assert "data:image/png;base64," in rep.html.read_text()             # the other plots are there


def test_heatmap_of_two_axes_survives_rows_without_them(tmp_path):
    """A family swept over two axes gets a heatmap; a row of the same family without those axes (a plain
    pytest-benchmark test grouped under the family's name, or a row whose axes are lost) is left out
    of it, never a crash."""
    from harness.report.model import build_model, make_plots
    sweep = {"family": "grid", "layer": "conv2d", "input": "1x8x8x8", "params": {"in": 8, "out": 8, "p": 0},
             "axes": {"k": [1, 3], "s": [1, 2]}}
    loaded = loaded_run(tmp_path, [sweep], [1e-4, 2e-4, 3e-4, 4e-4], peak_flops_s=1e9, peak_source="formula")
    stray = loaded.frame.iloc[[0]].assign(axes="{}", dtype="-", row_id="stray", case_id="stray")
    loaded.frame = pd.concat([loaded.frame, stray], ignore_index=True)
    model = build_model(loaded, with_plots=False)
    notes: list[str] = []
    heat = [p for p in make_plots(model.table, model.groups, notes) if p.name.startswith("heatmap")]
    assert [p.title for p in heat] == ["grid (fp32): utilization of the peak over s x k"] and not notes


def test_plots_drawn_side_by_side_match_those_drawn_in_turn(tmp_path, monkeypatch):
    """``draw_all`` in forked processes returns the same plots, in job order, as one after another
    here (PNG and SVG bytes included), and a failing job's note comes back from its process."""
    import harness.report.plots as plots
    from harness.report.model import build_model, make_plots
    loaded = loaded_run(tmp_path, [dict(GROUPS, axes={"g": [1, 2, 4]})], [1e-4, 5e-4, 2e-4],
                        peak_flops_s=1e12, peak_bytes_s=1e11, peak_source="datasheet")
    model = build_model(loaded, with_plots=False)
    got = {}
    for workers in (1, 4):
        monkeypatch.setattr(plots, "MAX_PLOT_WORKERS", workers)
        notes: list[str] = []
        jobs = [plots.Job(plots.heatmap, (model.table, "no_such_x", "no_such_y"), dict(name="broken", title="t"))]
        drawn = make_plots(model.table, model.groups, notes) + plots.draw_all(jobs, notes)
        got[workers] = ([(p.name, p.title, p.png, p.svg) for p in drawn], notes)
    assert len(got[1][0]) >= 2 and got[4] == got[1]
    assert len(got[4][1]) == 1 and got[4][1][0].startswith("plot t left out (KeyError")


def test_a_plot_label_is_cut_at_a_word_and_never_inside_a_parenthesis(monkeypatch):
    from harness.report import plots
    name = "conv2d in=64 out=64 k=3 p=1 on 4x64x28x28 (channels_last)"          # 57 characters
    monkeypatch.setattr(plots, "describe_row", lambda row: name)
    assert plots.short_case(pd.Series(dtype=object)) == name
    assert plots.short_case(pd.Series(dtype=object), width=50) == "conv2d in=64 out=64 k=3 p=1 on 4x64x28x28 …"
    assert plots.short_case(pd.Series(dtype=object), width=21) == "conv2d in=64 out=64 …"      # 21 characters
    assert plots.short_case(pd.Series(dtype=object), width=20) == "conv2d in=64 …"          # never past the width


def test_a_pool_names_its_stride_unless_it_is_the_kernel():
    """torch's pools stride by their kernel unless told: ``maxpool2d k=3`` is a stride-3 pool, so a
    stride-1 or stride-2 one says ``s=1``/``s=2``; a convolution's default stride is 1 and is not said."""
    import json

    from harness.analysis.findings import describe_row

    def named(layer, stride):
        cfg = {"kernel_size": [3, 3], "stride": stride, "padding": [1, 1]}
        return describe_row(pd.Series({"layer": layer, "config": json.dumps(cfg), "input_shapes": "1x8x8x8"}))
    assert named("maxpool2d", [1, 1]) == "maxpool2d k=3 s=1 p=1 on 1x8x8x8"
    assert named("avgpool2d", [2, 2]) == "avgpool2d k=3 s=2 p=1 on 1x8x8x8"
    assert named("maxpool2d", [3, 3]) == "maxpool2d k=3 p=1 on 1x8x8x8"
    assert named("conv2d", [1, 1]) == "conv2d k=3 p=1 on 1x8x8x8"
