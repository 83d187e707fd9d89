"""``run_suite(processes=N)``: real worker processes (``harness.runner.workers``), fake timers that
are module-level functions (a worker imports them by name)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from harness.runner import run_suite
from harness.store import load_results
from harness.suite import parse_suite
from harness.timing import Measurement

SUITE = {"name": "procs", "budget_s": 0.05,
         "sweep": [{"family": "relu", "layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2, 3, 4]}}]}


def _process_index() -> int:
    """0, 1, 2, ... in the order worker processes first call the fake (files created exclusively)."""
    d = os.environ["LB_FAKE_DIR"]
    if "i" not in _STATE:
        for i in range(100):
            try:
                os.close(os.open(os.path.join(d, f"p{i}"), os.O_CREAT | os.O_EXCL))
                _STATE["i"] = i
                break
            except FileExistsError:
                continue
    return _STATE["i"]


_STATE: dict[str, int] = {}


def slow_second_process(fn, *, inputs, **kw):
    """1 ms per call, but 4 ms for batch 3 in the second process; the second process dies (SIGKILL)
    on batch 4 when LB_FAKE_KILL is set."""
    i, batch = _process_index(), inputs[0][0].shape[0]
    if batch == 4 and i == 1 and os.environ.get("LB_FAKE_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    median = 4e-3 if (batch == 3 and i == 1) else 1e-3
    samples = tuple(median * (1 + 0.001 * k) for k in range(10))
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=samples, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=median, sampling_s=0.2, threads=1, gc_paused=True,
                       rotation=len(inputs), stop_reason="converged", target_rel_ci=0.01)


def _run(tmp_path, monkeypatch, **kw):
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    monkeypatch.setenv("LB_FAKE_DIR", str(fake_dir))
    return run_suite(parse_suite(SUITE), out=tmp_path / "out", measure_fn=slow_second_process, progress=False,
                     profile=False, **kw)


def test_three_processes_keep_every_median_and_find_the_split(tmp_path, monkeypatch):
    import tempfile
    jobs = set(Path(tempfile.gettempdir()).glob("*.job"))
    r = _run(tmp_path, monkeypatch, processes=3)
    assert set(Path(tempfile.gettempdir()).glob("*.job")) <= jobs          # job files removed
    assert r.statuses == {"ok": 4}
    f = load_results(r.run_dir)
    f["batch"] = [json.loads(a)["b"] for a in f["axes"]]
    f = f.set_index("batch").sort_index()
    assert (f["processes"] == 3).all() and (f["time_median_s"] == f["process_median_s"]).all()
    split = f.loc[3]
    m = 1.0045                                            # the median of samples m * (1 + 0.001 k), k < 10
    assert sorted(split["process_medians_s"]) == pytest.approx([m * 1e-3, m * 1e-3, m * 4e-3])
    assert split["time_median_s"] == pytest.approx(m * 1e-3) and split["process_spread"] == pytest.approx(3.0)
    assert split["stability"] in ("bimodal", "contended")
    calm = f.loc[[1, 2, 4]]
    assert (calm["process_spread"] == 0).all()
    # every process took the cases in a different order; the journals are gone once rows are stored
    assert not list(r.run_dir.glob("proc-*.jsonl"))
    assert sorted(p.name for p in (tmp_path / "fake").iterdir()) == ["p0", "p1", "p2"]


def test_a_worker_killed_mid_case_costs_that_case_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("LB_FAKE_KILL", "1")
    r = _run(tmp_path, monkeypatch, processes=2)
    f = load_results(r.run_dir)
    assert r.statuses == {"ok": 4} and len(f) == 4
    killed = f[[json.loads(a)["b"] == 4 for a in f["axes"]]].iloc[0]
    assert killed["processes"] == 1 and killed["stability"] in ("noisy", "contended")
    assert "worker process died (exit code -9)" in killed["stability_reason"] or killed["stability"] == "contended"


def test_omp_wait_runs_in_a_worker_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    r = _run(tmp_path, monkeypatch, processes=1, omp_wait="active")
    f = load_results(r.run_dir)
    assert (f["omp_wait_policy"] == "active").all() and (f["processes"] == 1).all()
    here = run_suite(parse_suite(SUITE), out=tmp_path / "here", measure_fn=slow_second_process, progress=False,
                     profile=False)
    g = load_results(here.run_dir)
    assert g["omp_wait_policy"].isna().all()
    assert set(f["settings_id"]) != set(g["settings_id"])          # a different threading setting
    meta = json.loads(next(r.run_dir.glob("run-*.json")).read_text())
    assert meta["repeats"] == {"processes": 1, "omp_wait": "active", "in_workers": True}
    assert ["OMP_WAIT_POLICY", "ACTIVE"] in meta["machine"]["threading"]["env"]


def test_processes_are_validated():
    from harness.errors import SpecError
    for bad in (0, 65, 2.5, True):
        with pytest.raises(SpecError):
            run_suite(parse_suite(SUITE), processes=bad, out="/nonexistent/never-written")
    with pytest.raises(SpecError):
        run_suite(parse_suite(SUITE), omp_wait="sometimes", out="/nonexistent/never-written")


def test_host_busy_is_recorded_per_row_in_process(tmp_path, monkeypatch):
    r = _run(tmp_path, monkeypatch)
    f = load_results(r.run_dir)
    assert (f["processes"] == 1).all() and f["stability"].notna().all()
    # the fake reports 0.2 s of sampling but returns at once: rows too short for the tick count as unknown
    assert pd.isna(f["host_busy"]).all() or ((f["host_busy"] >= 0) & (f["host_busy"] <= 1)).all()


def recording_fake(fn, *, inputs, **kw):
    """1 ms per call; appends the batch size it measured to LB_FAKE_DIR/measured."""
    with open(os.path.join(os.environ["LB_FAKE_DIR"], "measured"), "a") as fh:
        fh.write(f"{inputs[0][0].shape[0]}\n")
    samples = tuple(1e-3 for _ in range(10))
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=samples, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=1e-3, sampling_s=0.01, threads=1, gc_paused=True,
                       rotation=len(inputs), stop_reason="converged", target_rel_ci=0.01)


def test_an_interrupted_pass_resumes_from_its_journal(tmp_path, monkeypatch):
    """Rows complete in every pass are stored at once; a pass continues where its journal stops."""
    from harness.runner import workers as W
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    monkeypatch.setenv("LB_FAKE_DIR", str(fake_dir))
    suite = parse_suite(SUITE)
    ids = [c.case_id for c in suite.cases()]
    journal = tmp_path / "p0.jsonl"
    first = W.WorkerJob(suite=suite, device="cpu", dtypes=("fp32",), case_dtypes=None, threads=1, mode="hot",
                        shard=(1, 1), run_id="r", peaks={}, measure_fn=recording_fake, profile=False,
                        order=tuple(ids[:2]), journal=str(journal))
    seen: list[str] = []
    W.run_pass(first, W.omp_env(None), lambda cid, code: {}, lambda rec: seen.append(rec["case_id"]))
    with open(journal, "a") as fh:
        fh.write('{"record": {"case_id": "torn')                      # a kill mid-line
    W.run_pass(W._with_order(first, tuple(ids)), W.omp_env(None), lambda cid, code: {},
               lambda rec: seen.append(rec["case_id"]))
    measured = (fake_dir / "measured").read_text().split()
    assert measured == ["1", "2", "3", "4"]                            # each case once, in order
    assert seen == ids and set(W.read_journal(journal)[0]) == set(ids)
    assert [cid for cid, _ in W.iter_complete([journal], ids)] == ids


def slow_fake(fn, *, inputs, **kw):
    """0.5 s of wall per case (a worker a test can catch mid-run); appends the batch to LB_FAKE_DIR/measured."""
    import time
    time.sleep(0.5)
    return recording_fake(fn, inputs=inputs, **kw)


PARENT = r"""
import os, sys
sys.path[:0] = sys.argv[2].split(os.pathsep)
from harness.runner import run_suite
from harness.suite import parse_suite
from test_processes import SUITE, slow_fake
s = parse_suite(dict(SUITE, sweep=[dict(SUITE["sweep"][0], axes={"b": list(range(1, 21))})]))
run_suite(s, out=sys.argv[1], measure_fn=slow_fake, processes=2, progress=False, profile=False, calibrate="never")
"""


def test_a_worker_stops_when_its_parent_is_killed(tmp_path, monkeypatch):
    """SIGKILL of the run's process: its worker stops too (never measures beside a resumed run)."""
    import subprocess
    import sys
    import time
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    env = dict(os.environ, LB_FAKE_DIR=str(fake_dir))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "out"), os.pathsep.join(sys.path)],
                              env=env)
    measured = fake_dir / "measured"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not measured.exists() or len(measured.read_text().split()) < 2):
        time.sleep(0.1)
    assert measured.exists(), "the worker never measured"
    parent.kill()
    parent.wait()
    time.sleep(1.5)                                    # the worker dies with its parent (PR_SET_PDEATHSIG)
    settled = len(measured.read_text().split())
    time.sleep(2.0)                                    # 4 more cases would have been measured by now
    assert len(measured.read_text().split()) == settled < 20


def test_resume_passes_over_another_machines_run(tmp_path):
    from harness.runner.loop import _find_run
    for name, machine in [("procs-cpu-20260101T000000Z", "mine"), ("procs-cpu-20260102T000000Z", "other")]:
        d = tmp_path / name
        d.mkdir()
        (d / "run-1of1.json").write_text(json.dumps({"suite": "procs", "machine_id": machine}))
    (tmp_path / "procs-cpu-x-cpu-20260103T000000Z").mkdir()            # another suite's run: never
    (tmp_path / "procs-cpu-x-cpu-20260103T000000Z" / "run-1of1.json").write_text(json.dumps({"suite": "procs-cpu-x"}))
    assert _find_run(tmp_path, "procs", "cpu", (1, 1), "mine").name == "procs-cpu-20260101T000000Z"
    assert _find_run(tmp_path, "procs", "cpu", (1, 1), "other").name == "procs-cpu-20260102T000000Z"
    assert _find_run(tmp_path, "procs", "cpu", (1, 1), "third") is None
