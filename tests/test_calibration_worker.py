"""CUDA calibration runs in a worker process: the run's own process never opens the device for it
(no context, no cached memory while its workers measure; an EXCLUSIVE_PROCESS GPU stays free)."""

import pytest
from fake_cuda import FakeGpu, constant_measure, fake_device

import harness.ceilings.calibrate as calibrate_module
from harness.backends import resolve_device
from harness.ceilings.calibrate import calibrate, calibrate_in_worker
from harness.errors import SpecError


def test_cuda_calibration_never_touches_the_device_in_this_process(monkeypatch):
    gpu = FakeGpu()
    device = fake_device(gpu)
    stored = calibrate(resolve_device("cpu"), ["fp32"], persist=False, measure_fn=constant_measure,
                       budget_s=0.01, dtype_budget_s=0.01).to_json()
    jobs = []

    def worker(job):
        jobs.append(job)
        return stored
    monkeypatch.setattr(calibrate_module, "run_worker", worker)
    got = calibrate(device, ["bf16"], persist=False)
    assert jobs and jobs[0]["device"] == "cuda:0" and jobs[0]["measure_fn"] == "harness.timing.measure:measure"
    assert got.to_json() == stored
    assert gpu.launches == 0 and gpu.syncs == 0 and gpu.allocated == 0


def test_a_calibration_worker_round_trip():
    got = calibrate_in_worker(resolve_device("cpu"), ["fp32"], persist=False, measure_fn=constant_measure,
                              budget_s=0.01, dtype_budget_s=0.01)
    e = got.entry("compute", "fp32")
    side = round(e.size ** 0.5)                # a 1x1 conv over side x side pixels: 2 n^2 side^2 FLOP
    flops = {"mm": 2 * e.size**3, "linear": 2 * e.size**3, "conv1x1": 2 * e.size**2 * side**2}
    assert e is not None and e.value == pytest.approx(max(flops.values()) / 1e-3)   # constant_measure's 1 ms
    assert got.key["device"] == "cpu" and got.levels
    with pytest.raises(SpecError, match="module-level function"):
        calibrate_in_worker(resolve_device("cpu"), ["fp32"], measure_fn=lambda fn, **kw: None)
