"""calibrate: FLOP/s and bytes/s from the timer's median, stored per machine and versions, reused."""

import json

import pytest

import harness.calibrate as ce
from harness.backends.base import CalibrationSizes
from harness.backends.cpu import CpuBackend
from harness.errors import SpecError
from harness.timing import Measurement


def fake_measure(median):
    calls = []

    def m(fn, **kw):
        calls.append(kw)
        return Measurement(device="cpu", timer="fake", mode="hot", samples_s=(median,) * 10, number=1, warmup_calls=0,
                           warmup_s=0.0, estimate_s=median, sampling_s=10 * median, threads=1, gc_paused=True,
                           rotation=1, stop_reason="converged", target_rel_ci=0.01)
    return m, calls


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(CpuBackend, "calibration", CalibrationSizes(64, 128, 2**20))
    monkeypatch.setattr(CpuBackend, "last_level_cache", lambda self, device: 0)


def test_calibrate_values(small, tmp_path):
    m, calls = fake_measure(1e-3)
    c = ce.calibrate("cpu", ["fp32", "bf16"], threads=1, store=tmp_path, measure_fn=m)
    fp32 = next(e for e in c.entries if e.dtype == "fp32" and e.kind == "compute")
    # a 64x64 mm is far under GEMM_TARGET_S, so n doubles to the cap 128: 2 * 128^3 / 1 ms
    assert fp32.size == 128 and c.compute("fp32") == pytest.approx(2 * 128**3 / 1e-3)
    assert c.compute("bf16") == pytest.approx(2 * 128**3 / 1e-3)
    assert c.bandwidth == pytest.approx(2 * 2**20 / 1e-3)              # 1 MiB read + 1 MiB written per ms
    assert c.compute("fp16") is None
    assert len(calls) == 3 and all(k["threads"] == 1 for k in calls)
    assert c.key["threads"] == 1 and c.key["torch"] and len(c.key["machine_id"]) == 12


def test_calibrate_stores_and_reuses(small, tmp_path):
    m, calls = fake_measure(1e-3)
    first = ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=m)
    (path,) = tmp_path.glob("*.json")
    assert json.loads(path.read_text())[0]["key"] == first.key
    m2, calls2 = fake_measure(2e-3)
    again = ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=m2)
    assert calls2 == [] and again == first                               # reused, nothing measured
    other = ce.calibrate("cpu", ["fp32"], threads=2, store=tmp_path, measure_fn=m2)   # another key: measured
    assert len(calls2) == 2 and other.compute("fp32") == pytest.approx(2 * 128**3 / 2e-3)
    assert len(json.loads(path.read_text())) == 2                        # both kept, per key
    forced = ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, force=True, measure_fn=m2)
    assert forced.compute("fp32") == pytest.approx(first.compute("fp32") / 2)
    assert ce.load_ceilings(first.key, tmp_path).compute("fp32") == forced.compute("fp32")
    more = ce.calibrate("cpu", ["fp32", "fp16"], threads=1, store=tmp_path, measure_fn=m2)   # a dtype not stored
    assert more.compute("fp16") is not None


def test_calibrate_key_tracks_versions(small, tmp_path, monkeypatch):
    m, _ = fake_measure(1e-3)
    c = ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=m)
    monkeypatch.setattr(ce.torch, "__version__", "9.9.9")
    assert ce.load_ceilings(ce.machine_key("cpu", 1), tmp_path) is None
    assert ce.load_ceilings(c.key, tmp_path) is not None


def test_calibrate_rejects():
    with pytest.raises(SpecError, match="dtype='int8'"):
        ce.calibrate("cpu", ["int8"], persist=False)
    with pytest.raises(SpecError, match="tf32"):
        ce.calibrate("cpu", ["tf32"], persist=False, measure_fn=fake_measure(1e-3)[0])


def test_calibrate_real_small(monkeypatch, tmp_path):
    monkeypatch.setattr(CpuBackend, "calibration", CalibrationSizes(128, 256, 8 * 2**20))
    monkeypatch.setattr(CpuBackend, "last_level_cache", lambda self, device: 0)
    c = ce.calibrate("cpu", ["fp32"], budget_s=0.2, store=tmp_path)
    # anything that runs torch: between 10 MFLOP/s and 100 TFLOP/s, 10 MB/s and 10 TB/s
    assert 1e7 < c.compute("fp32") < 1e14 and 1e7 < c.bandwidth < 1e13
