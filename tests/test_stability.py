"""The stability verdict (harness.timing.stability) and host load (harness.timing.hostload) on
hand-made samples; the cross-process merge (harness.runner.repeats) on hand-made rows."""

from __future__ import annotations

import json

import pytest

from harness.record import Row, Stability
from harness.runner.repeats import merge
from harness.timing import stability as S
from harness.timing.hostload import CpuSample, host_busy


def tight(center: float, n: int = 20, rel: float = 0.01) -> list[float]:
    """n samples spread evenly over center * (1 +- rel)."""
    return [center * (1 - rel + 2 * rel * i / (n - 1)) for i in range(n)]


def test_stable_when_processes_agree_and_samples_are_tight():
    v, why = S.verdict([tight(1e-3), tight(1.01e-3), tight(0.995e-3)], 0.01)
    assert v is Stability.STABLE and "3 process(es) within 1.5 %" in why and "host_busy 0.01" in why


def test_contended_wins_over_everything():
    v, why = S.verdict([tight(1e-3)], 0.45)
    assert v is Stability.CONTENDED and why == "host_busy 0.45 > 0.20"
    assert S.verdict([tight(1e-3)], S.BUSY_LIMIT)[0] is Stability.STABLE      # the limit itself is not over it


def test_separated_process_medians_are_bimodal():
    # the ShuffleNet G2 case: 0.6 ms in one process, 2.8 ms in two others, each within 1-2 %
    v, why = S.verdict([tight(0.6e-3), tight(2.8e-3), tight(2.9e-3)], 0.0)
    assert v is Stability.BIMODAL and "600/2800/2900 us" in why


def test_spread_processes_without_a_gap_are_noisy():
    wide = [tight(1e-3, rel=0.2), tight(1.1e-3, rel=0.2)]   # 10 % apart, each +-20 %: no separation
    v, why = S.verdict(wide, 0.0)
    assert v is Stability.NOISY and "spread 10 %" in why


def test_samples_split_in_one_process_are_bimodal():
    xs = [1e-3] * 10 + [1.5e-3] * 10
    v, why = S.verdict([xs], None)
    assert v is Stability.BIMODAL and "samples split 10/10" in why and "host_busy unknown" in why
    # too few samples to call clusters: a wide IQR makes it noisy instead
    v, _ = S.verdict([[1e-3, 1e-3, 1.5e-3, 1.5e-3]], None)
    assert v is Stability.NOISY


def test_wide_iqr_is_noisy_and_few_samples_are_noisy():
    assert S.verdict([tight(1e-3, rel=0.3)], 0.0)[0] is Stability.NOISY
    assert S.verdict([[1e-3, 1e-3]], 0.0)[0] is Stability.NOISY


def test_median_low_is_a_measured_value():
    assert S.median_low([3.0, 1.0, 2.0, 4.0]) == 2.0 and S.median_low([5.0]) == 5.0


def test_host_busy_subtracts_own_time_and_scales_by_cpus():
    a = CpuSample(wall_s=0.0, busy_s=100.0, own_s=10.0, cpus=2)
    b = CpuSample(wall_s=1.0, busy_s=101.5, own_s=10.9, cpus=2)      # 1.5 CPU-s busy, 0.9 of them ours
    assert host_busy(a, b) == pytest.approx(0.3)
    assert host_busy(a, CpuSample(0.05, 100.1, 10.0, 2)) is None        # shorter than the tick can carry
    assert host_busy(a, CpuSample(1.0, 100.5, 11.0, 2)) == 0.0          # clamped (ticks land unevenly)


def _rec(median: float, busy: float | None, samples: list[float], status: str = "ok", **extra) -> Row:
    return Row.from_record(extra | {
            "run_id": "r", "row_id": "m:cpu:c", "case_id": "c", "config_id": "c", "suite": "s", "family": "f",
            "machine_id": "m", "machine_name": "m", "settings_id": "s", "host": "h", "layer": "relu",
            "config": "{}", "axes": "{}", "memory_format": "nchw", "dtype": "fp32", "device": "cpu",
            "device_type": "cpu", "device_name": "cpu", "status": status, "peak_source": "none",
            "ceiling_source": "none", "timestamp": "t", "harness_version": "0", "torch_version": "0",
            "python_version": "3", "time_median_s": median if status == "ok" else None,
            "samples_s": samples if status == "ok" else None, "host_busy": busy,
            "error": None if status == "ok" else "boom"})


def test_merge_keeps_the_lower_median_process_and_every_median():
    recs = [_rec(2.8e-3, 0.01, tight(2.8e-3)), _rec(0.6e-3, 0.03, tight(0.6e-3)), _rec(2.9e-3, 0.02, tight(2.9e-3))]
    row = merge(recs)
    t, h = row.timing, row.health
    assert t.time_median_s == 2.8e-3 and t.process_median_s == 2.8e-3 and t.processes == 3
    assert t.process_medians_s == [2.8e-3, 0.6e-3, 2.9e-3]
    assert t.process_spread == pytest.approx((2.9 - 0.6) / 2.8)
    assert h.host_busy == 0.03 and h.stability == "bimodal"


def test_merge_tells_a_bimodal_row_as_its_two_speeds():
    row = merge([_rec(2.8e-3, 0.0, tight(2.8e-3)), _rec(0.6e-3, 0.0, tight(0.6e-3)), _rec(2.9e-3, 0.0, tight(2.9e-3))])
    h = row.health
    assert h.stability == "bimodal"
    # the row's time is the lower median of the process medians, 2.8 ms: in the second mode, whose median is 2.85 ms
    assert h.stability_reason.startswith("two speeds: 600 us (1 of 3 processes) and 2.85 ms (2 of 3); the row's "
                                         "time, 2.8 ms, falls in the second")
    modes = json.loads(h.modes)
    assert [(m["processes"], m["holds_row"]) for m in modes] == [(1, False), (2, True)]


def _canary_rec(median, canary):
    return _rec(median, 0.0, tight(median), canary_s=canary, process_canaries_s=[canary], samples_rejected=2)


def test_merge_calls_modes_that_follow_the_canary_host_slowed():
    """Two processes, the second 1.45x slower and so was its canary: the host, not the layer."""
    row = merge([_canary_rec(1.0e-3, 30e-6), _canary_rec(1.45e-3, 43.5e-6)])
    h, t = row.health, row.timing
    assert h.stability == "host-slowed" and "follow their canaries" in h.stability_reason
    assert h.stability_reason.startswith("two speeds: ")
    assert t.samples_rejected == 4 and t.process_canaries_s == [30e-6, 43.5e-6]
    assert h.canary_slowdown == pytest.approx(0.45)
    # the same split with quiet canaries stays bimodal: the layer runs at two speeds
    same = merge([_canary_rec(1.0e-3, 30e-6), _canary_rec(1.45e-3, 30.1e-6), _canary_rec(1.01e-3, 30.3e-6)])
    assert same.health.stability == "bimodal" and same.timing.processes == 3


def test_a_process_beside_a_slow_canary_is_set_aside_and_the_others_judge_the_row():
    """Three processes, the second run while the host was 1.45x slower (its canary says so): it is set
    aside as a block beside a slow canary is, and processes 1 and 3 (1.00 and 1.01 ms) judge the row."""
    row = merge([_canary_rec(1.0e-3, 30e-6), _canary_rec(1.45e-3, 43.5e-6), _canary_rec(1.01e-3, 30.3e-6)])
    h, t = row.health, row.timing
    assert h.stability == "stable" and t.processes == 2
    assert t.process_medians_s == [1.0e-3, 1.01e-3] and t.time_median_s == 1.0e-3
    assert h.stability_reason.startswith("1 of 3 processes set aside: the host canary beside them ran 1.45x the "
                                         "fastest process's (over 10 %); their medians 1450 us")
    assert h.canary_slowdown == pytest.approx(0.45)            # the host's swing over every process
    assert t.process_canaries_s == [30e-6, 30.3e-6] and t.samples_rejected == 4
    # a canary 9 % slower stays (within the band), and two processes are never cut to one
    close = merge([_canary_rec(1.0e-3, 30e-6), _canary_rec(1.45e-3, 32.7e-6), _canary_rec(1.01e-3, 30.3e-6)])
    assert close.timing.processes == 3 and close.health.stability == "bimodal"
    both_slow = merge([_canary_rec(1.0e-3, 30e-6), _canary_rec(1.45e-3, 43.5e-6), _canary_rec(1.5e-3, 45e-6)])
    assert both_slow.timing.processes == 2 and both_slow.timing.process_medians_s == [1.0e-3, 1.45e-3]


def test_merge_with_a_failed_process_is_noisy_and_says_why():
    row = merge([_rec(1e-3, 0.0, tight(1e-3)), _rec(0, None, [], status="error")])
    assert row.health.stability == "noisy" and "1 of 2 processes failed (boom)" in row.health.stability_reason
    assert row.timing.processes == 1
    only_failed = merge([_rec(0, None, [], status="error")])
    assert only_failed.health.status == "error" and only_failed.timing is None


def test_a_sample_split_is_found_before_a_gapless_process_spread():
    split = [1e-3] * 10 + [1.1e-3] * 10          # one process: two clusters 10 % apart
    v, why = S.verdict([split, [1e-3] * 20], None)
    assert v is Stability.BIMODAL and "samples split 10/10" in why


def test_merge_takes_what_ran_from_the_process_that_profiled():
    # only the first process profiles (harness.runner.workers._pass); the row kept is the lower median's
    ran = {"kernels": "aten::mkldnn_convolution", "kernel_launches": 4}
    row = merge([_rec(2.9e-3, 0.0, tight(2.9e-3), **ran), _rec(2.8e-3, 0.0, tight(2.8e-3)),
                 _rec(2.7e-3, 0.0, tight(2.7e-3))])
    assert row.timing.time_median_s == 2.8e-3
    assert row.ran is not None and row.ran.kernels == "aten::mkldnn_convolution" and row.ran.kernel_launches == 4
    assert merge([_rec(2.8e-3, 0.0, tight(2.8e-3)), _rec(2.7e-3, 0.0, tight(2.7e-3))]).ran is None


def test_a_row_at_two_speeds_tells_them_first_and_the_process_set_aside_after():
    """Four processes: the third beside a 1.45x slow canary is set aside; of the other three, two ran
    at 1.0 ms and one at 2.0 ms with the same canary: bimodal, its speeds first in the reason."""
    row = merge([_canary_rec(1.0e-3, 30e-6), _canary_rec(2.0e-3, 30.2e-6), _canary_rec(1.45e-3, 43.5e-6),
                 _canary_rec(1.01e-3, 30.1e-6)])
    why = row.health.stability_reason
    assert row.health.stability == "bimodal" and row.timing.processes == 3
    assert why.startswith("two speeds: 1.01 ms (2 of 3 processes) and 2 ms (1 of 3); the row's time is the first; "
                          "1 of 4 processes set aside: the host canary beside them ran 1.45x")


def test_medians_in_a_reason_are_plain_microseconds():
    v, why = S.verdict([tight(7.949e-3), tight(16.03e-3)], 0.0)
    assert v is Stability.BIMODAL and "7949/16030 us" in why and "e+" not in why


def test_a_split_within_one_of_two_processes_is_told_as_that_process_s_samples():
    split = [1.0e-3] * 8 + [1.1e-3] * 12                        # process 1: median 1.1 ms, samples split
    row = merge([_rec(1.1e-3, 0.0, split), _rec(1.09e-3, 0.0, tight(1.09e-3))])
    why = row.health.stability_reason
    assert row.health.stability == "bimodal" and row.timing.time_median_s == 1.09e-3
    assert why.startswith("two speeds in one of 2 processes: 1 ms (40 % of its samples) and 1.1 ms (60 %); the "
                          "row's time, 1.09 ms, is another process's median")
