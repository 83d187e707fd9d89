"""A worker exits after a sticky CUDA error (its device no longer answers), so that a fresh worker
measures the cases left instead of filing each as the same error; an ordinary error does not stop it."""

import dataclasses

import pytest
from fake_cuda import STICKY, FakeCudaError, FakeGpu, constant_measure, fake_device

from harness.runner.context import make_context
from harness.runner.worker import DEVICE_LOST, WorkerJob, worker_main
from harness.runner.workers import read_journal
from harness.suite import parse_suite


def test_a_worker_exits_after_a_sticky_error_and_not_after_others(tmp_path):
    gpu = FakeGpu()
    device = dataclasses.replace(fake_device(gpu), tensors="cpu")     # layers on the CPU, the fake answers syncs
    suite = parse_suite({"name": "sticky", "sweep": [{"layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2, 3, 4]}}]})
    cases = tuple(suite.cases())
    calls = []

    def measure_fn(fn, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a shape the kernel refuses")     # an ordinary error: the worker goes on
        if len(calls) == 3:
            gpu.poison()                                        # an illegal memory access: sticky
            raise FakeCudaError(STICKY)
        return constant_measure(fn, **kw)
    ctx = make_context(suite, device, ["fp32"], 1, "hot", (1, 1), "sticky-run")
    journal = tmp_path / "journal.jsonl"
    job = WorkerJob(ctx=ctx, cases=cases, measure_fn=measure_fn, profile=False, journal=str(journal))
    with pytest.raises(SystemExit) as exit_:
        worker_main(job)
    assert exit_.value.code == DEVICE_LOST
    rows, started = read_journal(journal)
    assert started == [c.case_id for c in cases[:3]]           # the fourth is left to a fresh worker
    assert [rows[c.case_id].health.status.value for c in cases[:3]] == ["error", "ok", "error"]
    assert "illegal memory access" in rows[cases[2].case_id].health.error


def test_a_run_in_this_process_stops_after_a_sticky_error_with_its_rows_stored(tmp_path, monkeypatch):
    """Without workers there is no fresh process to go on in: the run stops with one line saying what
    is stored and how to continue, instead of filing every later case as the same error."""
    from harness.errors import DeviceLost
    from harness.runner import run_suite
    from harness.store import load_runs
    gpu = FakeGpu()
    device = dataclasses.replace(fake_device(gpu), tensors="cpu")
    suite = parse_suite({"name": "sticky", "sweep": [{"layer": "relu", "input": "{b}x8", "axes": {"b": [1, 2, 3, 4]}}]})
    calls = []

    def measure_fn(fn, **kw):
        calls.append(1)
        if len(calls) == 2:
            gpu.poison()
            raise FakeCudaError(STICKY)
        return constant_measure(fn, **kw)
    with pytest.raises(DeviceLost, match=r"no longer answers .* --resume` continues in a fresh process"):
        run_suite(suite, device=device, out=tmp_path, measure_fn=measure_fn, processes=1, progress=False,
                  profile=False)
    frame = load_runs([next(tmp_path.iterdir())]).frame
    assert sorted(frame["status"]) == ["error", "ok"] and len(calls) == 2
