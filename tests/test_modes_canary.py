"""A row at two speeds told as its modes (medians, shares, which holds the row's time); the modes
that follow the host's canary; the canary's block rejection (injected slow blocks)."""

import json

import pytest

import harness.timing.canary as C
import harness.timing.modes as M


def test_process_modes_two_of_three():
    a, b = M.process_modes([[0.75e-3] * 10, [1.08e-3] * 12, [0.76e-3] * 10])
    assert (a.median_s, a.processes, a.samples, a.holds_row) == (pytest.approx(0.755e-3), 2, 20, True)
    assert (b.median_s, b.processes, b.samples, b.holds_row) == (pytest.approx(1.08e-3), 1, 12, False)
    text = M.describe((a, b), 3)
    assert text == "two speeds: 755 us (2 of 3 processes) and 1.08 ms (1 of 3); the row's time is the first"
    # the row's time is the lower median of the process medians, 0.76 ms: in the first mode, not its median
    assert M.describe((a, b), 3, 0.76e-3).endswith("the row's time, 760 us, falls in the first")
    assert M.describe((a, b), 3, 0.755e-3).endswith("the row's time is the first")
    assert json.loads(M.to_json((a, b)))[1] == {"median_s": 1.08e-3, "samples": 12, "processes": 1,
                                                 "holds_row": False}


def test_row_time_in_the_slow_mode():
    a, b = M.process_modes([[1.0e-3] * 5, [2.0e-3] * 5, [2.1e-3] * 5])
    assert not a.holds_row and b.holds_row and M.describe((a, b), 3).endswith("is the second")


def test_sample_modes_shares():
    xs = [1.0e-3] * 13 + [1.5e-3] * 7
    a, b = M.sample_modes(xs, 1.0e-3)
    assert (a.samples, b.samples, a.holds_row) == (13, 7, True)
    assert M.describe((a, b), 1, samples=True) == ("two speeds: 1 ms (65 % of samples) and 1.5 ms (35 %); the row's "
                                                   "time is the first")
    assert M.sample_modes([1.0] * 3, 1.0) is None                  # too few for two sides of 2
    assert M.sample_modes([1.0, 2.0], 1.0) is None


def test_modes_that_follow_the_canary_are_the_host():
    # process 2 ran 1.44x slower and its canary ran 1.45x slower: the host, not the layer
    why = M.follows_host([1.0e-3, 1.44e-3, 1.01e-3], [30e-6, 43.5e-6, 30.2e-6])
    assert why is not None and "follow their canaries" in why and "1.45x" in why
    # the same split with canaries that agree: the layer itself runs at two speeds
    assert M.follows_host([1.0e-3, 1.44e-3, 1.01e-3], [30e-6, 30.3e-6, 30.2e-6]) is None
    assert M.follows_host([1.0e-3, 1.44e-3], [30e-6, None]) is None            # a process without a canary
    assert M.follows_host([1.0e-3, 1.01e-3], [30e-6, 45e-6]) is None            # no split to explain


def test_judge_rejects_blocks_beside_a_slow_canary():
    samples = [1.0, 1.0, 1.3, 1.3, 1.0, 1.0]
    # readings around each block: blocks 2 and 3 sit between slow readings (the host slowed 20 %)
    readings = [10.0, 10.1, 12.0, 12.0, 12.0, 10.0, 10.2]
    kept, report = C.judge(samples, readings, burst=[10.0] * 3)
    assert kept == [1.0, 1.0, 1.0, 1.0] and report.rejected == 2
    # the reference is the median block canary (10, 10.1, 12, 12, 10, 10): 10.05; its deviations are
    # small (median 0.05), so the band is REJECT
    assert report.reference_s == pytest.approx(10.05) and report.band == C.REJECT
    assert report.kept_s == (10.0, 10.1, 10.0, 10.0) and report.slowdown == pytest.approx(12.0 / 10.05 - 1)
    # one slow reading beside a block is not enough: the faster neighbour counts
    kept, report = C.judge([1.0, 1.0], [10.0, 13.0, 10.0], burst=[10.0])
    assert report.rejected == 0 and kept == [1.0, 1.0] and report.slowdown == 0.0


def test_a_noisy_canary_widens_the_band_to_three_deviations():
    # block canaries 10.5 +- 1 (median 10.5, median absolute deviation 1): the band is 3/10.5, not 5 %
    ref, band = C.reference([9.0, 11.0, 10.0, 9.0, 11.0, 10.0, 12.5, 14.0])
    assert ref == pytest.approx(10.5) and band == pytest.approx(3 * 1.0 / 10.5)
    assert C.reference([10.0, 10.0, 10.1, 10.0]) == (10.0, C.REJECT)      # a quiet canary: 5 %
    # in judge: block canaries 9 .. 14, median 10, deviation 1: the one beside 14 (over 13) is rejected,
    # the two beside 12.5 are not
    readings = [9.0, 9.0, 11.0, 11.0, 10.0, 10.0, 12.5, 12.5, 14.0, 14.0, 9.5, 9.5]
    kept, report = C.judge([1.0] * 11, readings, burst=[])
    assert report.band == pytest.approx(0.3) and report.rejected == 1 and report.rejected_s == 14.0


def test_a_host_slow_through_the_whole_measurement_is_not_told_within_it():
    # every block beside a canary 30 % over the warm-up burst: the median moves with the host; nothing
    # is rejected (the processes of a row compare their canaries instead: follows_host)
    kept, report = C.judge([1.0] * 5, [13.0] * 6, burst=[10.0])
    assert kept == [1.0] * 5 and report.rejected == 0 and report.reference_s == 13.0
    assert C.judge([], [13.0], burst=[10.0, 10.0])[1].reference_s == 10.0      # no block: the burst
    with pytest.raises(ValueError, match="5 blocks need 6 canary readings"):
        C.judge([1.0] * 5, [10.0] * 5, burst=[])


def test_the_online_reference_waits_for_three_blocks_and_follows_the_median():
    online = C.OnlineReference()
    for c in (10.0, 10.0):
        online.add(c)
    assert not online.slow(50.0)                       # no reference yet
    online.add(10.0)
    assert online.slow(10.6) and not online.slow(10.4)


def test_canary_sizes_itself_to_the_target():
    ticks = iter(range(0, 10**12, 5_000))          # every clock read: +5 us; one step costs one interval
    can = C.Canary(clock=lambda: next(ticks), step=lambda: None)
    can.size()
    assert can.steps == round(C.TARGET_S / 5e-6)
    assert can.read() == pytest.approx(5e-6 / can.steps)   # the fake clock advances once per reading


def test_a_reading_is_per_step_so_processes_sized_differently_read_alike():
    """A step of 13.0 us sizes to 2 steps (20 / 13 = 1.54), one of 13.4 us to 1 (1.49): per reading
    the two would read 26 vs 13.4 us, a 1.9x "host slowdown" between two processes of one speed."""
    readings = []
    for step_s in (13.0e-6, 13.4e-6):
        now = [0]                                      # a nanosecond clock that moves only with the steps
        can = C.Canary(clock=lambda n=now: n[0], step=lambda s=step_s, n=now: n.__setitem__(0, n[0] + round(s * 1e9)))
        can.size()
        readings.append((can.steps, can.read()))
    assert [s for s, _ in readings] == [2, 1]
    assert readings[0][1] == pytest.approx(13.0e-6) and readings[1][1] == pytest.approx(13.4e-6)


def test_the_canary_gives_every_thread_a_share():
    """One thread: a 48x48 GEMM and 32,768 elements copied. More: 65,536 elements per thread (ATen
    splits elementwise work in chunks of 32,768) and a GEMM side of 48 x ceil(sqrt(threads))."""
    assert C.shape(1) == (48, 32_768)
    assert C.shape(2) == (96, 131_072) and C.shape(4) == (96, 262_144)
    assert C.shape(8) == (144, 524_288) and C.shape(16) == (192, 1_048_576)


def test_a_canary_made_under_two_threads_holds_the_larger_step():
    import torch
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        can = C.Canary("cpu")
    finally:
        torch.set_num_threads(before)
    assert tuple(can._a.shape) == (96, 96) and can._src.numel() == 131_072


def test_the_heap_is_held_steady_in_a_fresh_process_and_left_alone_on_request():
    """In a fresh interpreter ``steady`` sets glibc's thresholds (mallopt answers 1 for both): a 4 MiB
    tensor then comes from the heap, below the program break (glibc's initial threshold is 128 KiB:
    it would be mapped on its own), and a 64 MiB one, above the fixed 32 MiB, is still mapped. With
    LAYERBENCH_HEAP=default nothing is set."""
    import os
    import subprocess
    import sys
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt is Linux-only")
    code = ("import ctypes\nfrom harness.timing import heap\np = heap.steady()\nimport torch\n"
            "libc = ctypes.CDLL(None); libc.sbrk.restype = ctypes.c_void_p\n"
            "small, big = torch.empty(2**20), torch.empty(2**24)\nbrk = libc.sbrk(0)\n"
            "print(p, '|', small.data_ptr() < brk, big.data_ptr() < brk)")
    out = {}
    for mode in ("steady", "default"):
        env = dict(os.environ, LAYERBENCH_HEAP=mode)
        out[mode] = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout.strip()
    from harness.timing import heap
    assert out["steady"] == f"{heap.STEADY} | True False"
    assert out["default"] == f"{heap.DEFAULT} | False False"     # glibc's own 128 KiB threshold: both mapped


def test_an_unknown_heap_policy_is_refused_in_one_line(monkeypatch, capsys):
    from harness.cli import main
    monkeypatch.setenv("LAYERBENCH_HEAP", "steddy")
    assert main(["run", "quick", "--out", "/nonexistent-never-written"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("layerbench run: error: LAYERBENCH_HEAP='steddy' is invalid: expected steady (the default: "
                       "the heap held steady) or default (the allocator left alone)")


def test_a_split_in_one_process_is_told_as_that_process_s_and_the_row_time_as_another_s():
    # process 1's samples split 5/15 at 637 and 829 us; the row's time, 724 us, is process 2's median
    xs = [637e-6] * 5 + [829e-6] * 15
    a, b = M.sample_modes(xs, 724e-6)
    assert not a.holds_row and not b.holds_row
    assert M.describe((a, b), 3, 724e-6, samples=True, own=False) == (
        "two speeds in one of 3 processes: 637 us (25 % of its samples) and 829 us (75 %); the row's time, 724 us, "
        "is another process's median")
    a, b = M.sample_modes(xs, 829e-6)                 # the row's time is this process's: the second mode
    assert b.holds_row and M.describe((a, b), 3, 829e-6, samples=True).endswith("the row's time is the second")


def test_the_summary_counts_and_names_every_row_at_two_speeds():
    import pandas as pd

    from harness.report.trust import SHOWN, modes_lines
    first = "two speeds: 1 ms (2 of 3 processes) and 2 ms (1 of 3); the row's time is the first; process medians"
    aside = ("1 of 4 processes set aside: the host canary beside them ran 1.40x; two speeds: 1 ms (2 of 3 "
             "processes) and 2 ms (1 of 3); the row's time is the second; process medians")
    within = ("two speeds in one of 3 processes: 637 us (25 % of its samples) and 829 us (75 %); the row's time, "
              "724 us, is another process's median; rel_iqr 12 %")
    rows = pd.DataFrame({"family": ["f"] * 6, "layer": ["relu"] * 6, "config": ["{}"] * 6,
                         "input_shapes": [f"{b}x8" for b in range(6)], "memory_format": ["nchw"] * 6,
                         "dtype": ["fp32"] * 6, "stability": ["bimodal"] * 5 + ["stable"],
                         "stability_reason": [first, aside, within, first, first, "3 process(es) within 1 %"]})
    lines = modes_lines(rows)
    assert lines[0] == "two speeds (5 rows):" and lines[-1] == f"  and {5 - SHOWN} more (their `stability_reason`)"
    text = " ".join(x.strip() for x in lines)
    assert "1 ms (2 of 3 processes) and 2 ms (1 of 3); the row's time is the second" in text
    assert ("in one of 3 processes: 637 us (25 % of its samples) and 829 us (75 %); the row's time, 724 us, is "
            "another process's median") in text


def test_an_even_split_and_two_kept_processes_are_told_as_one_process_s_samples():
    # an even split of one process's samples: its median lies in the gap, between the two speeds
    xs = [1.0e-3] * 10 + [1.1e-3] * 10
    a, b = M.sample_modes(xs, 1.05e-3)
    assert not a.holds_row and not b.holds_row
    assert M.describe((a, b), 1, 1.05e-3, samples=True) == (
        "two speeds: 1 ms (50 % of samples) and 1.1 ms (50 %); the row's time, 1.05 ms, lies between them")
    # a row time below both speeds is held by neither (the first mode has a lower bound too)
    assert not any(m.holds_row for m in M.sample_modes(xs, 0.5e-3))
    # two processes kept, the split within one of them: never told as "1 of 2 processes"
    assert M.describe((a, b), 2, 1.09e-3, samples=True, own=False).startswith(
        "two speeds in one of 2 processes: 1 ms (50 % of its samples)")


def test_a_stored_reason_is_told_with_the_row_s_time_where_it_only_falls_in_a_mode():
    """Reasons stored before said "the row's time is the first" of a mode whose median (749 us) is not
    the row's time (756 us, the lower median of three processes): the report and summary say it falls in
    the first, with its value, and leave a reason whose mode median is the row's time as it is."""
    import pandas as pd

    from harness.analysis.verdicts import held
    why = ("two speeds: 749 us (2 of 3 processes) and 784 us (1 of 3); the row's time is the first; 1 of 4 "
           "processes set aside")
    modes = json.dumps([{"median_s": 749.35e-6, "samples": 20, "processes": 2, "holds_row": True},
                        {"median_s": 783.8e-6, "samples": 10, "processes": 1, "holds_row": False}])
    row = pd.Series({"stability_reason": why, "modes": modes, "time_median_s": 756.0e-6})
    assert held(why, row) == ("two speeds: 749 us (2 of 3 processes) and 784 us (1 of 3); the row's time, 756 us, "
                              "falls in the first; 1 of 4 processes set aside")
    assert held(why, pd.Series({**row, "time_median_s": 749.4e-6})) == why
    assert held(why, pd.Series({**row, "modes": None})) == why          # no modes stored: as it was


def test_a_run_that_measures_nothing_fails_and_processes_are_bounded(tmp_path, capsys):
    """Every case of the suite invalid (a negative channel count): the row is stored as skipped, the
    summary says nothing was measured, and the exit status is 1 (a CI job must not pass on it).
    ``--processes 0`` is refused before anything is printed."""
    from harness.cli import main
    suite = tmp_path / "bad.toml"
    suite.write_text('name = "bad"\n[[sweep]]\nlayer = "conv2d"\ninput = "1x8x8x8"\n'
                     'params = { in = 8, out = -8, k = 3 }\n')
    assert main(["run", str(suite), "--out", str(tmp_path / "r"), "--calibrate", "never", "--processes", "1"]) == 1
    captured = capsys.readouterr()
    assert "predicted vs measured: no row measured" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("nothing measured: 1 skipped (each row's reason")
    assert main(["run", str(suite), "--out", str(tmp_path / "r"), "--processes", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["layerbench run: error: --processes=0 is invalid: expected an integer from 1 to 64"]


def test_the_report_of_one_run_goes_beside_it(tmp_path, capsys, monkeypatch):
    """``layerbench report RUN`` writes RUN/report (where ``run`` put it), so reporting a second run
    never overwrites the first's; several runs go to ./report."""
    from harness.cli import main
    suite = tmp_path / "one.toml"
    suite.write_text('name = "one"\nbudget_s = 0.01\nwarmup_s = 0\n[[sweep]]\nlayer = "relu"\ninput = "1x8"\n')
    assert main(["run", str(suite), "--out", str(tmp_path / "r"), "--calibrate", "never", "--processes", "1",
                 "--no-report", "--no-confirm", "--quiet"]) == 0
    (run,) = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(run), "--format", "json"]) == 0
    assert (run / "report" / "report.json").exists() and not (tmp_path / "report").exists()
    assert main(["report", str(run), str(run), "--format", "json"]) == 0
    assert (tmp_path / "report" / "report.json").exists()
