"""History on synthetic nights with known answers: a step injected at a known night is found there and
nowhere else; a steady series and a single noisy night give no change point; the baseline is the
segment since the last change point; ``regress`` on that model (one noisy night does not loosen it);
the static site (one page per case, inline SVG, no network) and ``layerbench history``."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from harness import record as R
from harness.analysis import regressions
from harness.analysis.changepoints import baseline, change_points, noise
from harness.cli import main
from harness.report.site import build_site
from harness.store import write_parquet


def row(**kw):
    base = dict(status="ok", device="cpu", device_type="cpu", device_name="X", machine_id="m" * 12,
                machine_name="X (2 CPUs)", settings_id="s" * 12, host="h", dtype="fp32", threads=2, flops=1e9,
                bytes_read=5e5, bytes_written=5e5, layer="relu", config="{}", axes="{}", input_shapes="8x8",
                memory_format="nchw", family="f", suite="s", harness_version="0", torch_version="2.13",
                python_version="3.11", peak_source="none", ceiling_source="none", stability="stable")
    base.update(kw)
    base.setdefault("config_id", base["case_id"])
    base.setdefault("row_id", f"{base['machine_id']}:{base['device']}:{base['case_id']}")
    t = base["time_median_s"]
    for col, f in (("time_q1_s", 0.99), ("time_q3_s", 1.01), ("time_ci_low_s", 0.995), ("time_ci_high_s", 1.005)):
        base.setdefault(col, t * f)
    return {c: base.get(c) for c in R.COLUMN_NAMES}


def nights(series: dict[str, list[float]], start: str = "2026-11-01") -> pd.DataFrame:
    """One run per night: ``series[case]`` holds the case's median each night."""
    days = pd.date_range(start, periods=len(next(iter(series.values()))), freq="D")
    rows = [row(case_id=case, run_id=f"n{i:03d}", timestamp=f"{d:%Y-%m-%d}T02:00:00+0000", git_commit=f"c{i:03d}",
                time_median_s=ts[i])
            for case, ts in series.items() for i, d in enumerate(days)]
    return pd.DataFrame(rows, columns=list(R.COLUMN_NAMES))


def noisy(n, sigma=0.02, seed=0, level=1e-3):
    return list(level * np.exp(np.random.default_rng(seed).normal(0, sigma, n)))


def test_step_found_at_its_night_and_nowhere_else():
    v = noisy(30, seed=1)
    stepped = v[:18] + [x * 1.15 for x in v[18:]]                  # 15 % slower from night 18 on
    assert change_points(stepped) == [18]
    assert change_points(v) == []                                  # the same noise without the step: none
    b = baseline(stepped)
    assert b.since == 18 and b.nights == 12 and b.reference_s == pytest.approx(np.median(stepped[18:]))


def test_single_noisy_night_is_not_a_change_and_does_not_move_the_baseline():
    v = noisy(20, seed=2)
    spiked = v[:12] + [v[12] * 1.6] + v[13:]                       # one night 60 % slow (a busy host)
    assert change_points(spiked) == []
    assert baseline(spiked).reference_s == pytest.approx(np.median(spiked))
    assert abs(baseline(spiked).reference_s / np.median(v) - 1) < 0.01
    # the robust noise estimate barely moves with the spike: 2 of 19 differences
    assert noise(spiked) < 1.5 * noise(v)


def test_regress_uses_the_segment_since_the_last_change_point():
    hist = nights({"p": noisy(10, seed=3) + [x * 1.3 for x in noisy(10, seed=4)],    # p got slower at night 10
                   "q": noisy(20, seed=5)})
    spike = (hist.case_id == "q") & (hist.run_id == "n015")                 # one noisy night of q: 60 % slow
    hist.loc[spike, ["time_median_s", "time_q1_s", "time_q3_s", "time_ci_low_s", "time_ci_high_s"]] *= 1.6
    # night 20: p as slow as since night 10 (its new normal: no regression); q 20 % slower (regression)
    new = nights({"p": [1.3e-3], "q": [1.2e-3]}, start="2026-11-21").assign(run_id="new")
    bad = regressions(hist, new, threshold=0.15)
    assert list(bad["case_id"]) == ["q"]
    q = bad.iloc[0]
    assert q["segment_runs"] == 20 and q["history_runs"] == 20 and q["judged_by"] == "noise"
    assert q["z"] > q["z_limit"] == pytest.approx(4.2, abs=0.1)       # Student's t, 9.5 degrees of freedom
    assert q["reference_s"] == pytest.approx(np.median(hist[hist.case_id == "q"]["time_median_s"]))
    # the old model took the highest band any history night reached: q's noisy night (1.6 ms) hid this
    assert q["time_median_s"] < hist[hist.case_id == "q"]["time_q3_s"].max()


def test_a_slowdown_the_host_canary_explains_is_not_a_regression():
    """Night 20: p and q both 25 % slower. p's canary ran 1.22x its segment's median (40 vs 32.8 us;
    1.25 / 1.22 = 1.02: the host's); q's canary is as usual: a regression. With another torch the
    nights' canaries are another kernel's: p regresses too; so it does beside an outlier canary."""
    hist = nights({"p": noisy(12, seed=10), "q": noisy(12, seed=11)})
    hist["canary_s"] = 32.8e-6
    new = nights({"p": [1.25e-3], "q": [1.25e-3]}, start="2026-11-21").assign(run_id="new")
    new["canary_s"] = [40e-6, 33e-6]
    bad = regressions(hist, new, threshold=0.15)
    assert list(bad["case_id"]) == ["q"]
    host = bad.attrs["host"]
    assert list(host["case_id"]) == ["p"] and host["host_ratio"].iloc[0] == pytest.approx(40 / 32.8)
    from harness.report.compare import RegressModel
    from harness.report.registry import render_text
    text = render_text(RegressModel(bad, runs=12, threshold=0.15, budget=0.001), "text")
    assert "1 case(s) slower by no more than the host canary beside them (one torch version and settings): the " \
           "host's, not regressions: relu on 8x8 " in text and "with its canary 1.22x" in text
    other = regressions(hist, new.assign(torch_version="2.14"), threshold=0.15)
    assert sorted(other["case_id"]) == ["p", "q"] and other.attrs["host"].empty
    # a canary far past the slowdown (3x against 1.25x: 0.42 once divided) is an outlier, not the host
    outlier = regressions(hist, new.assign(canary_s=[98.4e-6, 33e-6]), threshold=0.15)
    assert sorted(outlier["case_id"]) == ["p", "q"] and outlier.attrs["host"].empty
    # nights of other threading settings (accepted into the history) give no reference canary
    mixed = regressions(hist.assign(settings_id="t" * 12), new, threshold=0.15)
    assert mixed.attrs["host"].empty


def test_regress_sets_aside_rows_that_are_not_stable():
    hist = nights({"p": noisy(8, seed=6), "q": noisy(8, seed=7)})
    new = pd.DataFrame([row(case_id="p", run_id="new", time_median_s=2e-3, stability="noisy"),
                        row(case_id="q", run_id="new", time_median_s=2e-3, stability="bimodal")],
                       columns=list(R.COLUMN_NAMES))
    bad = regressions(hist, new)
    assert bad.empty and bad.attrs["set_aside"] == {"noisy": 1, "bimodal": 1} and bad.attrs["judged"] == 0


def test_site_and_cli(tmp_path, capsys):
    v = noisy(16, seed=8)
    frame = nights({"p": v[:10] + [x * 1.25 for x in v[10:]], "q": noisy(16, seed=9)})
    summaries = build_site(frame, tmp_path / "site")
    assert [s.regressed for s in summaries] == [True, False]         # regressed first
    # the step of 1.25x starts at night 10 (2026-11-11, commit c010); the ratio of segment medians is near it
    assert re.fullmatch(r"slower 1\.2[2-8]x at 2026-11-11 c010", summaries[0].change)
    index = (tmp_path / "site" / "index.html").read_text()
    assert f'href={summaries[0].page}' in index and "1 regressed" in index
    assert summaries[0].machine.endswith("], 2 thread(s)")          # series of another thread count tell apart
    page = (tmp_path / "site" / summaries[0].page).read_text()
    assert "<svg" in page and page.count("change point") == 1
    for html in (tmp_path / "site").glob("*.html"):                    # opens offline: nothing fetched
        text = html.read_text()
        assert not re.search(r"""(src|href)=["']?https?:""", text) and "<script" not in text and "<link" not in text
    (tmp_path / "runs").mkdir()
    write_parquet(frame, tmp_path / "runs" / "part-1of1.parquet")
    assert main(["history", str(tmp_path / "runs"), "--out", str(tmp_path / "cli"), "--all-machines"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 series, 1 regressed ->") and "regressed: f: relu on 8x8 fp32 on cpu" in out


def test_cases_are_told_apart_pages_name_their_machine_and_nights_of_one_day_have_distinct_labels(tmp_path):
    """k=1, 3, 5 of one family are three titles; a page names its machine; two runs on one day get
    their times (or run ids) in their labels."""
    rows = []
    for k in (1, 3, 5):
        cfg = json.dumps({"in_channels": 64, "out_channels": 64, "kernel_size": [k, k], "padding": [k // 2] * 2})
        for night, hour in enumerate((1, 9, 17)):
            rows.append(row(case_id=f"k{k}", family="conv-kernel", layer="conv2d", config=cfg,
                            input_shapes="1x64x28x28", run_id=f"r{night}", time_median_s=1e-3,
                            timestamp=f"2026-11-10T{hour:02d}:00:00+0000"))
    summaries = build_site(pd.DataFrame(rows), tmp_path / "site")
    titles = sorted(s.title for s in summaries)
    assert titles == ["conv-kernel: conv2d in=64 out=64 k=1 on 1x64x28x28 fp32 on cpu",      # p=0 is the default
                      "conv-kernel: conv2d in=64 out=64 k=3 p=1 on 1x64x28x28 fp32 on cpu",
                      "conv-kernel: conv2d in=64 out=64 k=5 p=2 on 1x64x28x28 fp32 on cpu"]
    page = (tmp_path / "site" / summaries[0].page).read_text()
    assert "Machine: X (2 CPUs) [mmmmmmmmmmmm]" in page
    assert all(t in page for t in ("2026-11-10 01:00", "2026-11-10 09:00", "2026-11-10 17:00"))



def test_the_index_says_how_many_cases_had_no_judged_night(tmp_path):
    """A case every night of which was set aside has no series; the index counts it, not silently."""
    frame = nights({"p": noisy(3, seed=1), "q": noisy(3, seed=2), "r": noisy(3, seed=3)})
    frame.loc[frame[R.CASE_ID].isin(["q", "r"]), R.STABILITY] = "bimodal"
    frame.loc[(frame[R.CASE_ID] == "r") & (frame[R.RUN_ID] == "n002"), R.STABILITY] = "stable"
    summaries = build_site(frame, tmp_path / "site")
    assert len(summaries) == 2                                       # p, and r's one stable night
    index = (tmp_path / "site" / "index.html").read_text()
    assert "1 case(s) not listed: every night of theirs was set aside" in index
