"""A `threads` axis: one case per thread count, the same config_id, timed at that count."""

from __future__ import annotations

from harness.runner import run_suite
from harness.store import load_results
from harness.suite import parse_suite
from harness.suite.model import usable_cpus


def suite(values):
    return parse_suite({"name": "th", "sweep": [{"family": "t", "layer": "relu", "input": "1x64",
                                                 "axes": {"threads": values}}]})


def test_threads_axis_sets_each_case_and_keeps_the_layer_id():
    cases = list(suite([1, 2, "all"]).cases())
    assert [c.threads for c in cases] == [1, 2, usable_cpus()]
    assert len({c.case_id for c in cases}) == 3 and len({c.config_id for c in cases}) == 1
    bad = list(suite([0, "many", 1]).cases())
    assert bad[0].skip == "threads=0: expected an integer in [1, 4096] or \"all\""
    assert bad[1].skip.startswith("threads='many'") and bad[2].skip is None


def test_rows_record_the_axis_thread_count(tmp_path):
    seen = []

    def fake(fn, *, inputs, threads, **kw):
        seen.append(threads)
        import dataclasses

        from test_runner import fake_measure
        return dataclasses.replace(fake_measure()(fn, inputs=inputs, **kw), threads=threads)

    r = run_suite(suite([1, 2]), out=tmp_path, measure_fn=fake, progress=False, profile=False)
    f = load_results(r.run_dir)
    assert seen == [1, 2] and sorted(f["threads"]) == [1, 2]
