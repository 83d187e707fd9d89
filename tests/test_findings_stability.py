"""One rule for which rows are judged (``harness.analysis.verdicts``), the same in findings, the report,
the summary, ``compare``, ``regress`` and the history site; set-aside rows in findings only across processes;
thread findings within one run and mode."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_analysis import frame, row

from harness.analysis import compare, derive, equal_flops_groups, findings, regressions
from harness.analysis.findings import ACROSS, MEDIANS, cross_process_findings, thread_findings
from harness.analysis.verdicts import counts, counts_text, is_set_aside, judged, set_aside, set_aside_text

RULE = ("compare and regress leave them out, findings use them only where every process of one layer took 1.1x or "
        "more of every process of the other")
NOISY_ASIDE = f"1 measured row set aside, not stable (1 noisy): {RULE}"


def conv(groups: int, t: float, **kw):
    cfg = json.dumps({"in_channels": 512, "out_channels": 512, "kernel_size": [3, 3], "groups": groups})
    return row(config=cfg, time_median_s=t, family="g", case_id=f"g{groups}", **kw)


def four(run_id: str = "new", s: float = 1.5e-3, u: float = 2e-3) -> pd.DataFrame:
    """One stable, one noisy, one null-stability ok row (no verdict recorded) and one error row, equal FLOPs."""
    at = dict(run_id=run_id, timestamp="2026-11-10T02:00:00+0000")
    return frame(row(case_id="s", time_median_s=s, stability="stable", **at),
                 row(case_id="n", time_median_s=5e-3, stability="noisy", **at),
                 row(case_id="u", time_median_s=u, stability=None, **at),
                 failed(case_id="e", **at))


def failed(**kw) -> dict:
    """An error row: no time, no verdict."""
    times = ("time_median_s", "time_q1_s", "time_q3_s", "time_ci_low_s", "time_ci_high_s")
    return row(status="error", stability=None, **kw) | dict.fromkeys(times)


def history(nights: int = 3) -> pd.DataFrame:
    """``nights`` earlier runs where every case of ``four`` took 1 ms and was stable."""
    return pd.concat([frame(*(row(case_id=c, time_median_s=1e-3, run_id=f"h{i}",
                                  timestamp=f"2026-11-0{i + 1}T02:00:00+0000") for c in "snu"))
                      for i in range(nights)], ignore_index=True)


def test_the_rule_judged_counts_and_the_one_sentence():
    f = four()
    assert list(judged(f)["case_id"]) == ["s", "u"]                  # stable, and no verdict recorded
    assert is_set_aside(f).tolist() == [False, True, False, False]   # the error row is neither
    assert counts(f) == {"stable": 1, "no verdict": 1, "noisy": 1}   # null is "no verdict", never "stable"
    assert set_aside(f) == {"noisy": 1}
    assert set_aside_text(set_aside(f)) == NOISY_ASIDE
    assert set_aside_text({"noisy": 2, "bimodal": 1}, " of B") == (
        f"3 measured rows of B set aside, not stable (2 noisy, 1 bimodal): {RULE}")
    assert set_aside_text({}) is None
    assert counts_text(f) == ("stability: 1 stable, 1 no verdict, 1 noisy (no verdict: none recorded; used, "
                              f"not called stable); {NOISY_ASIDE}")
    assert counts_text(four().assign(stability="stable")) == "stability: 3 stable"


def test_findings_compare_regress_summary_report_and_site_agree(tmp_path):
    from harness.report.format import rows_view
    from harness.report.model import build_model
    from harness.report.render import _aside_note
    from harness.report.site import build_site
    from harness.report.summary import summarize
    from harness.store import Loaded
    new = four()
    # findings: s (1.5 ms) and u (2 ms) share the FLOPs; n (5 ms, noisy) is set aside
    assert sorted(equal_flops_groups(new)["case_id"]) == ["s", "u"]
    (found,) = findings(new)
    assert found.spread == pytest.approx(2e-3 / 1.5e-3)
    # compare: u gets a verdict like s; n is set aside; the counts use the same labels
    t = compare(history(1).assign(run_id="a"), new).set_index("case_id")
    assert t["verdict"].to_dict() == {"s": "slower", "n": "set aside", "u": "slower"}
    assert t.attrs["stability"]["b"] == {"stable": 1, "no verdict": 1, "noisy": 1}
    assert t.attrs["set_aside"] == {"a": {}, "b": {"noisy": 1}}
    # regress: both judged rows regressed (no band overlap, > 15 %), the noisy one counted, not judged
    bad = regressions(history(), new)
    assert list(bad["case_id"]) == ["u", "s"] and bad.attrs["judged"] == 2 and bad.attrs["set_aside"] == {"noisy": 1}
    assert regressions(history().assign(stability=None), new).attrs["judged"] == 2    # null history is used too
    # summary: the same counts and sentence; only the noisy row is marked *
    text = summarize(new)
    lines = text.splitlines()
    assert lines[0].endswith("4 rows, 3 ok, 1 error")
    assert counts_text(derive(new)) in " ".join(line.strip() for line in lines)   # wrapped to the summary's width
    util = next(x for x in lines if x.strip().startswith("f "))
    assert "best conv2d:" in util and "worst conv2d*:" in util
    assert any("takes 1.3x as long as" in x for x in lines)
    # report: the same counts, the same set-aside rows and sentence, "no verdict" in the row table
    model = build_model(Loaded(new), with_plots=False)
    assert model.stability == {"stable": 1, "no verdict": 1, "noisy": 1}
    assert model.headline.endswith("Stability: 1 stable, 1 no verdict, 1 noisy.")
    assert list(model.unstable["case_id"]) == ["n"] and _aside_note(model) == NOISY_ASIDE + "."
    assert rows_view(model.table)["stability"].tolist() == ["stable", "noisy", "no verdict", ""]
    assert [f.spread for f in model.findings] == [found.spread]
    # the history site: the noisy night is not drawn, and the index says so
    build_site(pd.concat([history(), new], ignore_index=True), tmp_path / "site")
    assert f"<p>{NOISY_ASIDE}.</p>" in (tmp_path / "site" / "index.html").read_text()


def test_cli_compare_and_regress_print_the_one_sentence(tmp_path, capsys):
    from harness.cli import main
    from harness.store import write_parquet
    for name, rows in (("h", history()), ("a", history(1).assign(run_id="a")), ("new", four())):
        (tmp_path / name).mkdir()
        write_parquet(rows, tmp_path / name / "part-1of1.parquet")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "new")]) == 0
    out, err = capsys.readouterr()
    assert "2 slower, 0 faster, 0 same, 1 set aside" in out
    assert err.strip() == NOISY_ASIDE.replace("1 measured row", "1 measured row of B")
    assert main(["regress", str(tmp_path / "new"), "--baseline", str(tmp_path / "h")]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == NOISY_ASIDE.replace("1 measured row", "1 measured row of the new run")
    assert "2 of 2 judged case(s) slower than their baseline" in out       # the noisy one is set aside


def test_unstable_rows_give_no_verdict_and_are_counted():
    f = frame(conv(1, 1e-3, stability="stable"), conv(64, 12e-3, stability="bimodal"),
              conv(8, 2e-3, stability="stable"), conv(4, 9e-3, stability="contended"),
              row(status="error", stability=None, case_id="e"))
    found = findings(f, min_spread=1.1)
    assert len(found) == 1 and found[0].spread == pytest.approx(2.0)      # g8 vs g1 only: the 12x is set aside
    assert set_aside(f) == {"bimodal": 1, "contended": 1}
    assert set_aside_text(set_aside(f)) == f"2 measured rows set aside, not stable (1 bimodal, 1 contended): {RULE}"
    assert set_aside_text(set_aside(frame(conv(1, 1e-3, stability="stable")))) is None


SAME = dict(config_id="relu-big", layer="relu", config="{}", input_shapes="1x64x56x56", stability="stable")


def test_more_threads_slower_than_fewer_is_a_finding():
    f = frame(row(threads=1, time_median_s=100e-6, case_id="t1", **SAME),
              row(threads=2, time_median_s=140e-6, case_id="t2", **SAME),
              row(threads=1, time_median_s=1e-3, case_id="u1", config_id="other", stability="stable"),
              row(threads=2, time_median_s=0.55e-3, case_id="u2", config_id="other", stability="stable"))
    found = thread_findings(f)
    assert len(found) == 1 and found[0].spread == pytest.approx(1.4)
    assert "1.40x as long with 2 threads as with 1 (140 us vs 100 us)" in found[0].text.replace("µs", "us")
    # below the 10 % threshold, or unstable: nothing
    assert thread_findings(frame(row(threads=1, time_median_s=100e-6, case_id="a", **SAME),
                                 row(threads=2, time_median_s=105e-6, case_id="b", **SAME))) == []
    noisy = dict(SAME, stability="noisy")
    assert thread_findings(frame(row(threads=1, time_median_s=100e-6, case_id="a", **noisy),
                                 row(threads=2, time_median_s=200e-6, case_id="b", **noisy))) == []



def test_the_report_and_the_summary_tell_thread_findings():
    """A ``threads`` axis's finding reaches what a user reads: the report model holds it, the
    summary and the HTML report say it."""
    from harness.report import build_model, render_text
    from harness.store import Loaded
    f = frame(row(threads=1, time_median_s=100e-6, case_id="t1", **SAME),
              row(threads=2, time_median_s=140e-6, case_id="t2", **SAME))
    model = build_model(Loaded(f), with_plots=False)
    assert len(model.threads) == 1 and model.threads[0].spread == pytest.approx(1.4)
    text = render_text(model, "summary")
    assert "threads (slower with more of them):" in text and "1.40x as long with 2 threads as with 1" in text


def test_thread_findings_stay_within_one_run_and_one_timing_mode():
    # run r1 measured 1 thread only, run r2 2 threads only, twice as slow: two runs are not a threads axis
    assert thread_findings(frame(row(threads=1, time_median_s=100e-6, case_id="a", run_id="r1", **SAME),
                                 row(threads=2, time_median_s=200e-6, case_id="b", run_id="r2", **SAME))) == []
    # one run, but 1 thread timed hot and 2 threads timed as CUDA-graph replays: not comparable either
    assert thread_findings(frame(row(threads=1, time_median_s=100e-6, case_id="a", mode="hot", **SAME),
                                 row(threads=2, time_median_s=200e-6, case_id="b", mode="graph", **SAME))) == []
    # each of two runs with its own axis: one finding per run, each from its own rows only
    f = frame(*(row(threads=n, time_median_s=t, case_id=f"{r}{n}", run_id=r, mode="hot", **SAME)
                for r, times in (("r1", (100e-6, 150e-6)), ("r2", (100e-6, 300e-6))) for n, t in zip((1, 2), times)))
    found = thread_findings(f)
    assert [x.spread for x in found] == [pytest.approx(3.0), pytest.approx(1.5)]
    assert [sorted(f.loc[x.rows.index, "run_id"].unique()) for x in found] == [["r2"], ["r1"]]



def procs(groups: int, medians: list, stability: str, **kw):
    """A conv row measured in ``len(medians)`` processes (its stored median: their lower median)."""
    lower = sorted(m for m in medians if m == m and m is not pd.NA)[(len(medians) - 1) // 2]
    return conv(groups, lower, stability=stability, processes=len(medians), process_medians_s=medians, **kw)


def test_set_aside_rows_carry_a_finding_when_every_process_of_one_is_slower_than_every_process_of_the_other():
    # both rows moved between processes (process 2 ran slow), so both are set aside; yet g64's fastest
    # process (2.0 ms) still took 2.0 / 1.3 = 1.54x g1's slowest (1.3 ms)
    f = frame(procs(64, [2.0e-3, 2.6e-3, 2.2e-3], "bimodal"), procs(1, [1.0e-3, 1.3e-3, 1.05e-3], "noisy"))
    assert judged(f).empty
    (found,) = findings(f, min_spread=1.1)
    assert found.basis == ACROSS and found.spread == pytest.approx(2.0 / 1.3) and found.group == -1
    assert ("takes at least 1.5x as long as conv2d in=512 out=512 k=3 on 1x1 whichever of their processes are "
            "compared (its fastest of 3 processes: 2 ms; the other's slowest of 3: 1.3 ms; bimodal vs noisy): ") \
        in found.text
    assert list(found.rows["time_median_s"]) == [1.05e-3, 2.2e-3]                     # fast first
    # the same medians once process 2 slowed g64 only: 1.9 ms in g1's slowest process against 2.0 ms
    assert findings(frame(procs(64, [2.0e-3, 4.0e-3, 2.2e-3], "bimodal"),
                          procs(1, [1.0e-3, 1.9e-3, 1.05e-3], "bimodal"))) == []


def test_processes_that_overlap_give_no_finding():
    f = frame(procs(64, [2.0e-3, 1.0e-3, 2.2e-3], "bimodal"), procs(1, [1.0e-3, 1.9e-3, 1.05e-3], "noisy"))
    # by medians g64 takes 2.0/1.05 = 1.9x as long, but its fastest process (1.0 ms) beat g1's slowest (1.9 ms)
    assert findings(f, min_spread=1.1) == []


def test_findings_across_processes_need_three_valid_processes_in_one_run():
    assert findings(frame(procs(64, [2.0e-3], "noisy"), procs(1, [1.0e-3], "noisy"))) == []
    assert findings(frame(procs(64, [2.0e-3, 2.1e-3], "noisy"), procs(1, [1.0e-3, 1.0e-3], "noisy"))) == []
    runs = frame(procs(64, [2.0e-3, 2.1e-3, 2.2e-3], "bimodal", run_id="a"),
                 procs(1, [1.0e-3, 1.0e-3, 1.0e-3], "bimodal", run_id="b"))
    assert findings(runs) == []                                    # never across runs
    # a row whose medians hold a null, a NaN or a zero is left out; the group's other pair still counts
    for bad in (float("nan"), pd.NA, None, 0.0):
        f = frame(procs(64, [2.0e-3, 2.1e-3, 2.2e-3], "bimodal"), procs(1, [1.0e-3, 1.0e-3, 1.0e-3], "noisy"),
                  conv(4, 1e-3, stability="noisy", processes=3, process_medians_s=[bad, 1e-3, 1e-3]))
        (found,) = findings(f)
        assert found.spread == pytest.approx(2.0) and "g=64" in found.text and "g=4" not in found.text


def test_two_judged_rows_are_told_by_their_medians_once_and_findings_across_processes_follow():
    f = frame(procs(1, [1.0e-3, 1.0e-3, 1.0e-3], "stable"), procs(8, [1.5e-3, 1.5e-3, 1.5e-3], "stable"),
              procs(64, [4.0e-3, 8.0e-3, 4.4e-3], "bimodal", flops=2e9),
              procs(2, [1e-3, 2e-3, 1.1e-3], "noisy", flops=2e9))
    found = findings(f, min_spread=1.1)
    assert [x.basis for x in found] == [MEDIANS, ACROSS]
    assert found[0].spread == pytest.approx(1.5) and found[1].spread == pytest.approx(4.0 / 2.0)
    assert [x.text for x in findings(f, top=1)] == [found[0].text]
    # two judged rows never make a finding across processes, not even with no threshold
    assert cross_process_findings(f.iloc[:2], min_spread=0.0) == []


def test_the_same_pair_in_several_runs_is_one_finding_across_processes():
    f = frame(*(procs(g, m, "bimodal", run_id=r) for r, k in (("a", 1.0), ("b", 1.2))
                for g, m in ((64, [2.0e-3 * k, 2.1e-3 * k, 2.2e-3 * k]), (1, [1e-3, 1e-3, 1e-3]))))
    (found,) = findings(f)
    assert found.spread == pytest.approx(2.4) and found.text.endswith("Seen in 2 runs.")


def test_the_summary_shows_findings_across_processes_when_every_row_is_set_aside():
    from harness.analysis import derive
    from harness.report.summary import finding_lines
    f = derive(frame(procs(64, [2.0e-3, 2.6e-3, 2.2e-3], "bimodal"), procs(1, [1.0e-3, 1.3e-3, 1.05e-3], "noisy")))
    lines = finding_lines(f)
    assert lines[0] == "findings (equal FLOPs, slowest vs fastest):"
    assert "whichever of their processes are compared" in " ".join(lines)
    overlap = derive(frame(procs(64, [2.0e-3, 1.0e-3, 2.2e-3], "bimodal"),
                           procs(1, [1.0e-3, 1.9e-3, 1.05e-3], "noisy")))
    assert finding_lines(overlap) == ["findings: none (every measured row set aside, and no equal-FLOPs layer took "
                                      "1.1x or more of another in every process)"]
    one = derive(frame(procs(64, [2.0e-3], "bimodal"), procs(1, [1.0e-3], "noisy")))
    assert finding_lines(one) == ["findings: none (every measured row set aside; rows measured in 3 or more "
                                  "processes, --processes, may still carry one)"]


def test_a_findings_table_across_processes_shows_each_processs_median():
    from harness.analysis import derive
    from harness.report.format import rows_view
    f = derive(frame(procs(64, [2.0e-3, 2.6e-3, 2.2e-3], "bimodal"), procs(1, [1.0e-3, 1.3e-3, 1.05e-3], "noisy")))
    (found,) = findings(f)
    view = rows_view(f.loc[found.rows.index], per_process=True)
    assert list(view["per process"]) == ["1 ms / 1.3 ms / 1.05 ms", "2 ms / 2.6 ms / 2.2 ms"]
    assert "per process" not in rows_view(f)


def test_the_best_pair_is_the_one_a_search_of_every_pair_finds():
    """``_bound`` finds its pair in O(n); every ordered pair (one row set aside) searched by hand agrees."""
    import numpy as np

    from harness.analysis.findings import _bound
    rng = np.random.default_rng(7)
    for n in (2, 3, 5, 8, 40):
        for _ in range(50):
            fastest = rng.uniform(1.0, 3.0, n)
            g = pd.DataFrame({"fastest_s": fastest, "slowest_s": fastest * rng.uniform(1.0, 1.5, n),
                              "set_aside": rng.random(n) < 0.5})
            best = max(((g.fastest_s[i] / g.slowest_s[j], i, j) for i in range(n) for j in range(n)
                        if i != j and (g.set_aside[i] or g.set_aside[j])), default=None)
            b = _bound(g, 0.0)
            if best is None:
                assert b is None                       # no row set aside
                continue
            assert b is not None and b.lo == pytest.approx(best[0])
            assert b.lo == pytest.approx(b.slow["fastest_s"] / b.fast["slowest_s"])
            assert b.slow.name != b.fast.name and (b.slow["set_aside"] or b.fast["set_aside"])
