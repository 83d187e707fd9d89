"""The end-of-run summary: utilization per family against hand-computed figures, roofline labels and
levels, stability verdicts with the rows set aside, findings from judged rows, and a report or
summary failure that never fails the run."""

import time

import pandas as pd
import pytest

from harness.cli import main
from harness.report.summary import finish_run, label_line, summarize, summarize_run
from harness.runner import run_suite
from harness.store import load_runs
from harness.suite import parse_suite
from harness.timing import Measurement

# conv2d k=3 p=1 on 1xcx8x8: FLOPs = 2 * c * (c / g) * 9 * 64; c=8 g=1 and c=16 g=4 both 73,728
SUITE = {
    "name": "sumtest", "budget_s": 0.1,
    "sweep": [
        {"family": "groups", "layer": "conv2d", "input": "1x{c}x8x8", "params": {"k": 3, "p": 1},
         "zip": {"c": [8, 16], "g": [1, 4]}, "derive": {"in": "c", "out": "c"}},
        {"family": "relu", "layer": "relu", "input": "1x{c}", "axes": {"c": [8, 16]}},
    ],
}


def by_channels(fn, *, inputs, **kw):
    """1 ms per call at 8 channels, 4 ms at 16 (the layer really runs once)."""
    fn(*inputs[0])
    median = 1e-3 if inputs[0][0].shape[1] == 8 else 4e-3
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=(median,) * 10, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=median, sampling_s=0.01, threads=1, gc_paused=True, rotation=1,
                       stop_reason="converged", target_rel_ci=0.01)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    r = run_suite(parse_suite(SUITE, "sumtest.toml"), out=out, measure_fn=by_channels, progress=False,
                  calibrate="never", profile=False)
    return r.run_dir


def with_peaks(frame: pd.DataFrame) -> pd.DataFrame:
    f = frame.copy()
    f["peak_flops_s"], f["peak_source"], f["ceiling_flops_s"] = 1e9, "formula", 5e8
    f["peak_bytes_s"], f["ceiling_bytes_s"], f["launch_overhead_s"] = 1e12, 1e12, 1e-9
    f["stability"] = ["noisy" if (lay == "relu" and "16" in ax) else "stable" for lay, ax in zip(f["layer"], f["axes"])]
    return f


def reflowed(text: str) -> str:
    """The summary's lines joined as one paragraph (its long sentences are wrapped, indented)."""
    return " ".join(line.strip() for line in text.splitlines())


def test_summary_figures(stored):
    text = summarize(with_peaks(load_runs([stored]).frame), "r/report.html")
    lines = text.splitlines()
    assert lines[0].startswith("sumtest on cpu") and lines[0].endswith("4 rows, 4 ok")
    # 73,728 FLOP / 1 ms = 73.7 MFLOP/s: 14.7 % of the 500 MFLOP/s ceiling, 7.4 % of the 1 GFLOP/s formula peak;
    # at 4 ms: 3.7 % and 1.8 %
    groups = next(x for x in lines if x.strip().startswith("groups"))
    assert "best c=8 g=1: 15 % / 7 %" in groups and "worst c=16 g=4: 4 % / 2 %" in groups
    assert "measured ceiling / formula peak" in text
    # relu c=16 is noisy: shown, marked * (utilization is a figure, not a verdict), with the footnote
    relu = next(x for x in lines if x.strip().startswith("relu"))
    assert "best c=8: 0.0 % / 0.0 %" in relu and "worst c=16*: 0.0 % / 0.0 %" in relu   # under 1 %: a decimal
    assert any(x.strip().startswith("(* a row set aside, not stable") for x in lines)
    assert ("stability: 3 stable, 1 noisy (each case in one process: stable within it, never checked in another; "
            "--processes 3 measures each case in three fresh ones); 1 measured row set aside, not stable (1 noisy): "
            "compare and regress leave them out, findings use them only where every process of one layer took 1.1x "
            "or more of every process of the other") in reflowed(text)               # wrapped to the summary's width
    # at most 15 % of the compute roof, whose side of the ridge they fall on (intensity >= 5e8 / 1e12 FLOP/B)
    assert any(x.startswith("roofline: 4 under-utilised") for x in lines)
    assert any("takes 4.0x as long as" in x for x in lines)   # the equal-FLOPs pair, one sentence
    assert lines[-1] == "report: r/report.html"


def test_summary_without_peaks_or_verdicts(stored):
    text = summarize(load_runs([stored]).frame.assign(peak_flops_s=None, ceiling_flops_s=None, stability=None))
    # no verdict recorded: the rows are used (the findings below), counted as "no verdict", never as stable
    assert "stability: 4 no verdict (no verdict: none recorded; used, not called stable)" in text.splitlines()
    assert "takes 4.0x as long as" in text
    assert "utilization: no peak or ceiling stored with these rows" in text
    assert text.splitlines()[-1] == "report: not written"


def test_label_line_names_memory_levels():
    f = pd.DataFrame({"label": ["memory-bound", "memory-bound", "memory-bound", "compute-bound", None],
                      "roof_level": ["L2", "DRAM", "L2", None, None]})
    assert label_line(f) == "roofline: 3 memory-bound (2 L2, 1 DRAM), 1 compute-bound"
    assert label_line(f.drop(columns="roof_level")) == "roofline: 3 memory-bound, 1 compute-bound"


def test_report_failure_is_one_line_and_summary_still_prints(stored, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    finish_run(stored, blocker / "report")
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("layerbench run: report not written: ")
    assert out.splitlines()[-1] == "report: not written"
    finish_run(stored / "missing-run", None)            # nothing stored there: no traceback
    out, err = capsys.readouterr()
    assert (out, err) == ("no rows stored\n", "")


def test_cli_writes_report_by_default(tmp_path, capsys):
    suite = tmp_path / "one.toml"
    suite.write_text('name = "one"\nbudget_s = 0.01\nwarmup_s = 0.001\nmin_reps = 3\n'
                     '[[sweep]]\nfamily = "relu"\nlayer = "relu"\ninput = "1x8"\n')
    t = time.perf_counter()
    assert main(["run", str(suite), "--out", str(tmp_path), "--calibrate", "never", "--quiet"]) == 0
    out = capsys.readouterr().out
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert f"report: {run_dir / 'report' / 'report.html'}" in out and (run_dir / "report" / "report.html").exists()
    assert main(["run", str(suite), "--out", str(tmp_path / "b"), "--calibrate", "never", "--quiet",
                 "--no-report"]) == 0
    assert "report: not written" in capsys.readouterr().out
    assert time.perf_counter() - t < 120


def test_the_end_of_a_run_reads_and_derives_the_run_once(stored, tmp_path, monkeypatch, capsys):
    import harness.analysis as analysis
    import harness.analysis.metrics as metrics
    import harness.store as store
    calls = {"load": 0, "derive": 0}
    real_load, real_derive = store.load_runs, metrics.derive

    def load(paths):  # noqa: ANN001, ANN202
        calls["load"] += 1
        return real_load(paths)

    def derive(frame):  # noqa: ANN001, ANN202
        calls["derive"] += 1
        return real_derive(frame)

    monkeypatch.setattr(store, "load_runs", load)
    monkeypatch.setattr(analysis, "derive", derive)
    monkeypatch.setattr("harness.report.model.derive", derive)
    rows = finish_run(stored, tmp_path / "report")
    assert calls == {"load": 1, "derive": 1}
    assert (tmp_path / "report" / "report.html").exists() and len(rows) == len(real_load([stored]).frame)
    assert capsys.readouterr().out.splitlines()[-1] == f"report: {tmp_path / 'report' / 'report.html'}"


def test_readme_first_screen_is_the_reference_runs_summary():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    start = readme.index("```text\n") + len("```text\n")
    block = readme[start:readme.index("```", start)].strip()
    run = root / "results" / "reference" / "2026-12-03-amd-epyc-zen3-2cpu-v6" / "quick-cpu-20261203T144611Z"
    report = block.splitlines()[-1].removeprefix("report: ")
    assert summarize_run(run, report) == block
    assert "confirmed interleaved" in block and "largest residuals" in block     # what the end of a run prints


def test_memory_bound_rows_are_judged_by_bandwidth_and_their_cache_level():
    """A memory-side row's utilization is of bandwidth (a FLOP/s figure near 0 % says nothing);
    a working set that fits a cache adds that level's roof fraction."""
    import json

    from harness.analysis import derive
    from harness.report.summary import utilization_lines
    levels = json.dumps([{"level": "L2", "bytes_s": 100e9, "capacity_bytes": 2**20},
                         {"level": "DRAM", "bytes_s": 20e9, "capacity_bytes": None}])
    base = dict(status="ok", family="mem", layer="relu", bytes_written=0, ceiling_flops_s=100e9,
                ceiling_bytes_s=20e9, peak_flops_s=200e9, peak_bytes_s=40e9, peak_source="datasheet",
                kernel_launches=1, launch_overhead_s=1e-9, ceiling_levels=levels, stability="stable")
    rows = [dict(base, axes='{"c": 8}', flops=1e3, bytes_read=512 * 2**10, time_median_s=10e-6),   # L2
            dict(base, axes='{"c": 16}', flops=1e3, bytes_read=100 * 2**20, time_median_s=20e-3),  # DRAM
            dict(base, family="gemm", layer="linear", axes='{"c": 8}', flops=1e9, bytes_read=1e6,
                 time_median_s=20e-3)]                                                           # compute side
    lines = utilization_lines(derive(pd.DataFrame(rows)))
    assert lines[0].endswith("measured ceiling / datasheet peak (FLOP/s; B/s if memory-bound)")
    # 512 KiB in 10 us = 52.4 GB/s fits L2, whose roof (512 KiB / 100 GB/s = 5.24 us) is 52 % of the time
    # (it outruns the 20 GB/s DRAM copy 2.6x: never shown as 262 % of it; L2 has no datasheet figure).
    # 100 MiB in 20 ms = 5.24 GB/s: 26 % of the 20 GB/s copy, 13 % of the 40 GB/s datasheet (main memory)
    mem = next(x for x in lines if x.strip().startswith("mem"))
    assert mem.strip() == "mem   best c=8: B/s 52 % of its L2 roof;  worst c=16: B/s 26 % / 13 %"
    # 1e9 FLOP in 20 ms = 50 GFLOP/s: 50 % of the ceiling, 25 % of the datasheet peak
    assert next(x for x in lines if x.strip().startswith("gemm")).strip() == "gemm  best linear: 50 % / 25 %"


def test_a_launch_bound_cache_row_is_judged_by_its_bandwidth_not_its_launch_floor():
    """A row inside L1 whose 19 dispatches take longer than its bytes: its launch floor's share of
    its time (above 100 %) is no bandwidth figure; the summary shows its B/s against the L1 roof."""
    import json

    from harness.analysis import derive
    from harness.report.summary import utilization_lines
    levels = json.dumps([{"level": "L1", "bytes_s": 300e9, "capacity_bytes": 2**16},
                         {"level": "DRAM", "bytes_s": 20e9, "capacity_bytes": None}])
    row = dict(status="ok", family="attention", layer="sdpa", axes='{"seq": 16}', flops=1e3, bytes_read=24_576,
               bytes_written=8_320, time_median_s=21e-6, ceiling_flops_s=100e9, ceiling_bytes_s=20e9,
               peak_flops_s=200e9, peak_bytes_s=40e9, peak_source="datasheet", kernel_launches=19,
               launch_overhead_s=1.3e-6, ceiling_levels=levels, stability="stable")
    t = derive(pd.DataFrame([row]))
    assert t["roof_level"][0] == "launch" and t["roof_level_fraction"][0] == pytest.approx(19 * 1.3e-6 / 21e-6)
    # 32,896 B in 21 us = 1.57 GB/s: 0.52 % of the 300 GB/s L1 roof (never 118 %, the launch floor's share)
    line = next(x for x in utilization_lines(t) if x.strip().startswith("attention"))
    assert line.strip() == "attention  best sdpa: B/s 0.5 % of its L1 roof"


# --- a run of several passes: one utilization block per pass, the backward against its forward --------------

def by_pass(fn, *, inputs, **kw):
    """The forward 1 ms, a backward 6 ms, forward+backward 8 ms (the timed call really runs once)."""
    fn(*inputs[0])
    median = {"_grad": 6e-3, "step": 8e-3}.get(getattr(fn, "__name__", ""), 1e-3)
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=(median,) * 10, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=median, sampling_s=0.01, threads=1, gc_paused=True, rotation=1,
                       stop_reason="converged", target_rel_ci=0.01)


def test_summary_of_a_training_run(tmp_path):
    suite = {"name": "trainsum", "sweep": [
        {"family": "conv", "layer": "conv2d", "input": "1x8x8x8", "params": {"in": 8, "out": 8, "k": 3, "p": 1},
         "passes": ["forward", "backward", "forward+backward"]},
        {"family": "relu", "layer": "relu", "input": "1x8"}]}
    r = run_suite(parse_suite(suite, "trainsum.toml"), out=tmp_path, measure_fn=by_pass, progress=False,
                  calibrate="never", profile=False)
    lines = summarize(with_peaks(load_runs([r.run_dir]).frame)).splitlines()
    blocks = [x for x in lines if x.startswith("utilization per family")]
    assert [b.split(",")[0] for b in blocks] == ["utilization per family (forward)",
                                                 "utilization per family (backward)",
                                                 "utilization per family (forward+backward)"]
    # F = 8*64 * 8*9 = 36,864 MACs: forward 73,728 FLOPs; backward 4F + 512 (bias) = 147,968: 2.0x
    i = lines.index("backward/forward (time against FLOPs, over the layer's forward; the largest gap first):")
    told = " ".join(x.strip() for x in lines[i + 1:i + 5])
    assert ("conv: conv2d in=8 out=8 k=3 p=1 on 1x8x8x8 backward [input,weight] takes 6.0x its forward's time "
            "for 2.0x its FLOPs") in told
    assert "forward+backward [input,weight] takes 8.0x its forward's time for 3.0x its FLOPs" in told


def test_a_number_stays_with_its_unit_and_no_line_passes_a_terminal():
    """The wrap never splits "22.3 %" or "1.01 ms" over two lines; ``fit`` re-wraps a line past
    120 columns under its own indent and leaves shorter lines (table rows) alone."""
    from harness.report.wrap import MAX_WIDTH, fit, wrap
    text = "x" * 90 + " spread 22.3 % and 1.01 ms, 549 kB, 3.22 GHz"
    lines = wrap(text, 100)
    assert lines == ["x" * 90 + " spread", "22.3 % and 1.01 ms, 549 kB, 3.22 GHz"]
    assert wrap("a" * 96 + " 12.5 %", 100) == ["a" * 96, "12.5 %"]        # not "a... 12.5" / "%"
    long = "  header " + "word " * 40
    short = "  row  " + "1 " * 50
    out = fit([long, short])
    assert all(len(line) <= MAX_WIDTH for line in out) and out[-1] == short
    assert out[0].startswith("  header") and out[1].startswith("    word")
    assert " ".join(x.strip() for x in out[:-1]) == long.strip()


def test_the_clock_line_tells_the_rows_range_apart_from_the_spread_within_a_row():
    import pandas as pd

    from harness.report.trust import clock_lines
    rows = pd.DataFrame({"clock_mhz": [2900.0, 2980.0, 3040.0], "clock_spread": [0.01, 0.258, 0.02]})
    assert " ".join(x.strip() for x in clock_lines(rows)) == (
        "CPU clock measured around the rows: 2.98 GHz (median of the rows; 2.90 to 3.04 GHz across them); the "
        "readings around one row spread up to 25.8 % (a reading the host interrupted reads low)")
    # a formula peak of a clock calibrate measured: the rows' clock said against it
    detail = ("formula: 2 cores x 3.232 GHz x 32 FLOP/cycle (zen3/zen4); clock: measured by a dependent-add chain "
              "(reported 2.445 GHz)")
    peaked = rows.assign(peak_detail=detail, ceiling_measured_at="2026-12-03T07:35:06+0000")
    assert " ".join(x.strip() for x in clock_lines(peaked)).endswith(
        "the formula peak takes 3.23 GHz, the clock `layerbench calibrate` measured with the ceilings (2026-12-03 "
        "07:35): the rows ran 7.8 % below it")                     # 2.98 / 3.232 = 0.922
    reported = peaked.assign(peak_detail="formula: 2 cores x 2.445 GHz x 32 FLOP/cycle (zen3/zen4)")
    assert "formula peak" not in " ".join(clock_lines(reported))    # the reported clock: no measured one to say
    steady = clock_lines(rows.assign(clock_spread=[0.01, 0.02, 0.01]))
    assert " ".join(x.strip() for x in steady).endswith("spread up to 2.0 %")


def test_rows_above_a_peak_a_ceiling_or_their_level_bandwidth_are_said_with_the_numbers():
    """A row faster than its formula peak is a defect of the peak; faster than the measured GEMM, a
    ceiling to measure again; bytes faster than its level's measured roof, the roof's convention: each
    named with its figure, never only a utilization above 100 %."""
    import json

    from harness.analysis import derive
    from harness.report.trust import above_lines
    levels = json.dumps([{"level": "L2", "bytes_s": 100e9, "capacity_bytes": 2**20},
                         {"level": "DRAM", "bytes_s": 20e9, "capacity_bytes": None}])
    base = dict(status="ok", layer="linear", bytes_written=0, ceiling_flops_s=100e9, ceiling_bytes_s=20e9,
                peak_flops_s=200e9, peak_bytes_s=None, peak_source="formula", kernel_launches=1,
                launch_overhead_s=1e-9, ceiling_levels=levels, stability="stable", flops=1e9, bytes_read=1e6)
    rows = [dict(base, family="fast", config='{"in": 8}', time_median_s=4e-3),    # 250 GFLOP/s: 250 % / 125 %
            dict(base, family="mid", config='{"in": 16}', time_median_s=8e-3),    # 125 GFLOP/s: 125 % / 63 %
            dict(base, family="slow", config='{"in": 32}', time_median_s=20e-3),  # 50 GFLOP/s: below both
            # an add reading 2 x 40 MiB and writing 40 MiB (DRAM) in 5 ms: 25.2 GB/s; its roof serves 1 MiB
            # from L2 (10.49 us) and 119 MiB at the 20 GB/s copy's rate (6239.03 us): 125 % of it
            dict(base, family="add", layer="add", config='{"c": 8}', flops=1e7, bytes_read=80 * 2**20,
                 bytes_written=40 * 2**20, time_median_s=5e-3)]
    t = derive(pd.DataFrame(rows))
    assert t["bw_util_level"][3] == pytest.approx(6249.51296e-6 / 5e-3)
    text = " ".join(x.strip() for x in above_lines(t))
    assert ("above the theoretical peak (a defect of the peak: its clock or FLOP per cycle): 1 row(s): linear in=8 "
            "125 % above the measured GEMM ceiling (a kernel the calibration did not reach: calibrate --force): "
            "2 row(s): linear in=8 250 %; linear in=16 125 % above the measured bandwidth") in text
    assert text.endswith("without the line each write first reads, so a layer that reads more than it writes can "
                         "pass it; a cache's is one kernel's read rate (a sum), which another kernel may beat): "
                         "1 row(s): add c=8 125 % of DRAM")
    assert above_lines(t.iloc[[2]]) == []
    # a datasheet roof (no copy measured: an uncalibrated GPU's HBM figure) is not the copy's convention
    sheet = derive(pd.DataFrame([dict(rows[3], ceiling_bytes_s=None, ceiling_levels=None, peak_bytes_s=20e9)]))
    assert sheet["bw_util_level"][0] > 1 and "measured bandwidth" not in " ".join(above_lines(sheet))
    # no compute roof at all: no label judged on the bytes alone
    bare = derive(pd.DataFrame([dict(rows[2], ceiling_flops_s=None, peak_flops_s=None)]))
    assert pd.isna(bare["label"][0])
