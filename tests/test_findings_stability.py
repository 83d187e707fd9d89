"""Findings use only stable rows and say how many they set aside; thread findings."""

from __future__ import annotations

import json

import pytest
from test_analysis import frame, row

from harness.analysis.findings import findings, set_aside, set_aside_text, thread_findings


def conv(groups: int, t: float, **kw):
    cfg = json.dumps({"in_channels": 512, "out_channels": 512, "kernel_size": [3, 3], "groups": groups})
    return row(config=cfg, time_median_s=t, family="g", case_id=f"g{groups}", **kw)


def test_unstable_rows_give_no_verdict_and_are_counted():
    f = frame(conv(1, 1e-3, stability="stable"), conv(64, 12e-3, stability="bimodal"),
              conv(8, 2e-3, stability="stable"), conv(4, 9e-3, stability="contended"),
              row(status="error", stability=None, case_id="e"))
    found = findings(f, min_spread=1.1)
    assert len(found) == 1 and found[0].spread == pytest.approx(2.0)      # g8 vs g1 only: the 12x is set aside
    assert set_aside(f) == {"bimodal": 1, "contended": 1}
    assert set_aside_text(f) == "2 measured rows set aside, not stable (1 bimodal, 1 contended)"
    assert set_aside_text(frame(conv(1, 1e-3, stability="stable"))) is None


def test_more_threads_slower_than_fewer_is_a_finding():
    same = dict(config_id="relu-big", layer="relu", config="{}", input_shapes="1x64x56x56", stability="stable")
    f = frame(row(threads=1, time_median_s=100e-6, case_id="t1", **same),
              row(threads=2, time_median_s=140e-6, case_id="t2", **same),
              row(threads=1, time_median_s=1e-3, case_id="u1", config_id="other", stability="stable"),
              row(threads=2, time_median_s=0.55e-3, case_id="u2", config_id="other", stability="stable"))
    found = thread_findings(f)
    assert len(found) == 1 and found[0].spread == pytest.approx(1.4)
    assert "1.40x as long with 2 threads as with 1 (140 us vs 100 us)" in found[0].text.replace("µs", "us")
    # below the 10 % threshold, or unstable: nothing
    assert thread_findings(frame(row(threads=1, time_median_s=100e-6, case_id="a", **same),
                                 row(threads=2, time_median_s=105e-6, case_id="b", **same))) == []
    noisy = dict(same, stability="noisy")
    assert thread_findings(frame(row(threads=1, time_median_s=100e-6, case_id="a", **noisy),
                                 row(threads=2, time_median_s=200e-6, case_id="b", **noisy))) == []
