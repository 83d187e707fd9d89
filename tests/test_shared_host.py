"""A shared host, said and acted on: --threads auto takes the CPUs free of other processes (and
records the choice), the summary says the host was busy at the start, and the flag's values."""

import argparse

import pytest
from test_runner import fake_measure

import harness.runner.context as context
from harness.cli.run import threads_arg
from harness.runner import run_suite
from harness.store import load_runs
from harness.suite import parse_suite
from harness.timing.hostload import CpuLoad, auto_threads


def test_auto_threads_takes_the_free_cpus():
    busy = auto_threads(2, CpuLoad({0: 0.03, 1: 0.97}))
    assert busy.threads == 1 and busy.contended
    assert "other processes are using 1 of 2 CPUs (CPU 1 97%)" in busy.text
    quiet = auto_threads(2, CpuLoad({0: 0.02, 1: 0.10}))
    assert quiet.threads == 2 and not quiet.contended and "all 2 CPUs free" in quiet.text
    assert auto_threads(4, CpuLoad({c: 0.9 for c in range(4)})).threads == 1      # never none
    assert auto_threads(2, CpuLoad({c: 0.0 for c in range(8)})).threads == 2      # at most torch's default


def test_threads_flag():
    assert threads_arg("auto") == "auto" and threads_arg("3") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"--threads='{bad}': expected auto or an integer"):
            threads_arg(bad)


SUITE = {"name": "host", "sweep": [{"layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2]}}]}


def test_a_run_with_auto_threads_on_a_busy_host_says_so_and_records_it(tmp_path, monkeypatch):
    monkeypatch.setattr(context, "cpu_load", lambda: CpuLoad({0: 0.01, 1: 0.95}))
    monkeypatch.setattr(context.torch, "get_num_threads", lambda: 2)
    r = run_suite(parse_suite(SUITE), out=tmp_path, threads="auto", measure_fn=fake_measure(1e-3), progress=False)
    loaded = load_runs([r.run_dir])
    meta = next(iter(loaded.runs.values()))
    assert meta.threads == 1 and "CPU 1 95%" in meta.threads_choice
    assert set(loaded.frame["threads"]) == {1}
    text = summarize_run(r.run_dir)
    assert "at the start: --threads auto: 1 thread(s); other processes are using 1 of 2 CPUs" in text


def summarize_run(run_dir):
    from harness.report.model import build_model
    from harness.report.registry import render_text
    return render_text(build_model(load_runs([run_dir]), with_plots=False), "summary").replace("\n  ", " ")


def test_a_suite_that_sets_threads_keeps_them_under_auto(tmp_path, monkeypatch):
    monkeypatch.setattr(context, "cpu_load", lambda: CpuLoad({0: 0.01, 1: 0.95}))
    r = run_suite(parse_suite(SUITE | {"threads": 2}), out=tmp_path, threads="auto", measure_fn=fake_measure(1e-3),
                  progress=False)
    meta = next(iter(load_runs([r.run_dir]).runs.values()))
    assert meta.threads == 2 and meta.threads_choice is None


def test_auto_threads_watches_the_cpus_only_after_the_runs_own_start_up(tmp_path, monkeypatch):
    """A run's worker fork server imports torch while the run resolves its context: watched then, it
    looks like another tenant on one CPU. ``--threads auto`` waits for it to settle first."""
    from harness.backends import resolve_device
    from harness.runner.launch import ForkServer, omp_env
    server = ForkServer(omp_env(None))
    seen = []
    monkeypatch.setattr(context, "cpu_load", lambda: seen.append(server.ready) or CpuLoad({0: 0.0, 1: 0.0}))
    try:
        assert not server.ready
        context.make_context(parse_suite(SUITE), resolve_device("cpu"), ["fp32"], "auto", "hot", (1, 1), "r",
                             settle=server.settle)
        assert seen == [True]
        handle = server.start(str(tmp_path / "missing-job.pkl"))      # settled: starts at once
        assert handle.wait() != 0
    finally:
        server.close()
