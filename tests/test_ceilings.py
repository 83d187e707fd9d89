"""calibrate: the GEMM size sweep picks the best n and stops as stated, native verdicts, what a
call re-measures, per-level buffers and bandwidths (fake timers with a known memory hierarchy),
the store (old files without levels still load), and one real small calibration on this CPU."""

import json

import pytest
import torch
import torch.nn.functional as F

import harness.ceilings.calibrate as ce
from harness.backends import resolve_device
from harness.backends.base import CalibrationSizes, MemoryLevel
from harness.backends.cpu import CpuBackend
from harness.devices.clock import ClockReading
from harness.errors import SpecError
from harness.timing import Measurement

#: A fake machine: GEMM FLOP/s by n, and read bandwidth by the bytes a buffer holds.
GEMM_RATE = {64: 10e9, 96: 20e9, 128: 30e9, 192: 29e9, 256: 28e9, 384: 50e9}
HIERARCHY = ((64 * 2**10, 200e9), (4 * 2**20, 100e9), (32 * 2**20, 50e9), (None, 20e9))
LEVELS = (MemoryLevel("L1", 32 * 2**10, True, 32 * 2**10), MemoryLevel("L2", 2**20, True, 2**20),
          MemoryLevel("L3", 8 * 2**20, False, 480 * 2**20), MemoryLevel("DRAM", None))


def _measurement(t):
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=(t, 1.5 * t, 2 * t), number=1,
                       warmup_calls=0, warmup_s=0.0, estimate_s=t, sampling_s=3 * t, threads=1, gc_paused=True,
                       rotation=1, stop_reason="converged", target_rel_ci=0.01)


#: The speed of ``F.linear`` and the 1x1 convolution against ``torch.mm`` of the same product.
KERNEL_SPEED = {"linear": 0.9, "conv1x1": 0.8}


def fake_measure(gemm=GEMM_RATE, scale=1.0, kernels=KERNEL_SPEED):
    """Seconds per call from the inputs' shapes: 2n^3 / rate for a GEMM (``kernels`` x that rate
    through ``F.linear`` or a 1x1 convolution: 2 C^2 HW FLOP), bytes / bandwidth of the level holding
    the buffer for a read (sum) or copy (counted read + written)."""
    calls = []

    def m(fn, inputs, threads=None, **kw):
        (x, *rest) = inputs[0]
        calls.append((fn, tuple(x.shape), threads))
        if fn is torch.mm:
            n = x.shape[0]
            return _measurement(2 * n**3 / (gemm[n] * scale))
        if fn is F.linear:
            n = x.shape[0]
            return _measurement(2 * n**3 / (gemm[n] * scale * kernels["linear"]))
        if fn is F.conv2d:
            _, c, h, w = x.shape
            return _measurement(2 * c * c * h * w / (gemm[c] * scale * kernels["conv1x1"]))
        held = x.untyped_storage().nbytes()
        bw = next(b for size, b in HIERARCHY if size is None or held <= size)
        moved = x.numel() * 4 * (1 if fn is torch.sum else 2)
        return _measurement(moved / bw)
    return m, calls


@pytest.fixture
def fake_cpu(monkeypatch):
    monkeypatch.setattr(ce, "measure_clock", lambda cpus: ClockReading(tuple(3000.0 + 10 * i for i, _ in
                                                                              enumerate(cpus))))
    monkeypatch.setattr(CpuBackend, "calibration", CalibrationSizes((64, 96, 128, 192, 256, 384), 2**20,
                                                                    2**30, True))
    monkeypatch.setattr(CpuBackend, "memory_levels", lambda self, device: LEVELS)


def test_sweep_picks_the_best_n_and_stops_after_two_sizes_without_gain(fake_cpu, tmp_path):
    m, calls = fake_measure()
    c = ce.calibrate("cpu", ["fp32"], threads=2, store=tmp_path, measure_fn=m)
    fp32 = c.entry("compute", "fp32")
    # 30 GFLOP/s at n=128; 192 and 256 do not beat it by 2 %: stop, never trying 384 (50 GFLOP/s)
    assert fp32.size == 128 and fp32.value == pytest.approx(30e9)
    assert [n for n, _ in fp32.sweep] == [64, 96, 128, 192, 256] and "2 sizes without" in fp32.note
    assert fp32.sweep[1][1] == pytest.approx(20e9) and fp32.native is True
    # one-thread fp32 GEMM at the winner's n, one thread
    assert c.one_thread == pytest.approx(30e9) and c.entry("one_thread").size == 128
    assert any(shape == (128, 128) and threads == 1 for _, shape, threads in calls)


def test_sweep_stops_before_a_size_whose_call_would_exceed_the_cap(fake_cpu):
    # 96^3 x 2 / 1e6 FLOP/s = 1.77 s a call > CALL_CAP_S: the sweep ends after n=64 (0.52 s projected x 3.4)
    slow = {n: 1e6 for n in GEMM_RATE}
    m, _ = fake_measure(slow)
    e = ce._gemm(resolve_device("cpu"), "bf16", 0.3, 12.0, 1, m)
    assert e.size == 64 and [n for n, _ in e.sweep] == [64] and "n=96 would take over" in e.note


def test_sweep_stops_when_the_dtype_budget_is_spent(fake_cpu):
    ticks = iter(range(100))
    m, _ = fake_measure({n: 1e12 * n for n in GEMM_RATE})       # always improving
    e = ce._gemm(resolve_device("cpu"), "fp32", 0.3, 2.5, 1, m, clock=lambda: float(next(ticks)))
    assert [n for n, _ in e.sweep] == [64, 96, 128] and "2.5 s spent" in e.note      # clock 1, 2, 3 >= 2.5


def test_native_verdict_needs_the_margin_over_fp32():
    def gemm(dtype, v):
        return ce.Ceiling("compute", dtype, v, 1024, 0.01, 0.0, 10)
    out = ce.with_verdicts([gemm("fp32", 100e9), gemm("bf16", 131e9), gemm("fp16", 129e9)])
    assert [e.native for e in out] == [True, True, False]              # 1.31x and 1.29x against 1.3x
    assert ce.with_verdicts([gemm("bf16", 5e12)])[0].native is None    # no fp32 to compare with


def test_plan_measures_what_is_missing():
    assert ce.plan(["bf16"], None, False, True) == ce.Plan(("fp32", "bf16"), True, True)   # fp32: the reference
    assert ce.plan(["bf16"], None, False, True, clock=True).clock                        # host: the clock too
    stored = ce.Ceilings({"k": 1}, "t", (ce.Ceiling("compute", "fp32", 1.0, 8, 1, 0, 1),
                                         ce.Ceiling("one_thread", "fp32", 1.0, 8, 1, 0, 1),
                                         ce.Ceiling("memory", "fp32", 1.0, 8, 1, 0, 1)))
    assert ce.plan(["fp32"], stored, False, True) == ce.Plan((), False, True)        # a file without levels
    lv = ce.LevelCeiling("DRAM", 1.0, 8, None, None, None, "copy", 1, 1.0, 0.0, 1)
    full = ce.Ceilings(stored.key, "t", stored.entries, (lv,))
    assert ce.plan(["fp32"], full, False, True).empty
    assert ce.plan(["fp16"], full, False, True) == ce.Plan(("fp16",), False, False)
    assert ce.plan(["fp32"], full, True, False) == ce.Plan(("fp32",), False, True)


def test_level_buffers_from_capped_caches():
    out = {lv.name: (buf, rep) for lv, buf, rep in ce.level_buffers(LEVELS, 2, 2**30, 256 * 2**20)}
    assert out["L1"] == (16 * 2**10, 4096)            # half of 32 KiB; 64 MiB / 16 KiB reads a call
    assert out["L2"] == (512 * 2**10, 128)
    assert out["L3"] == (4 * 2**20, 16)                # half of the 8 MiB used, not of the 480 MiB reported
    # DRAM: 4 x (2 x 32 KiB + 2 x 1 MiB + 8 MiB) = 40.25 MiB
    assert out["DRAM"] == (4 * (2 * 32 * 2**10 + 2 * 2**20 + 8 * 2**20), 1)
    huge = (MemoryLevel("L3", 480 * 2**20, False), MemoryLevel("DRAM", None))
    assert ce.level_buffers(huge, 2, 2**30, 1)[-1][1] == 2**30              # 4 x 480 MiB, capped at 1 GiB
    assert ce.level_buffers((MemoryLevel("DRAM", None),), 2, 2**30, 256 * 2**20)[0][1] == 256 * 2**20


def test_levels_measured_on_a_known_hierarchy_and_stored(fake_cpu, tmp_path):
    m, _ = fake_measure()
    c = ce.calibrate("cpu", ["fp32"], threads=2, store=tmp_path, measure_fn=m)
    bw = {lv.level: lv.value for lv in c.levels}
    # 16 KiB, 512 KiB and 4 MiB buffers sit in the fake 64 KiB / 4 MiB / 32 MiB levels; the copy in DRAM
    assert bw == pytest.approx({"L1": 200e9, "L2": 100e9, "L3": 100e9, "DRAM": 20e9})
    assert c.bandwidth == pytest.approx(20e9) and c.entry("memory").size == c.level("DRAM").buffer_bytes
    assert c.level("L3").cache_bytes == 8 * 2**20 and c.level("L3").reported_bytes == 480 * 2**20
    assert c.level("L1").capacity_bytes == 64 * 2**10            # private: 2 threads x 32 KiB
    row = json.loads(c.levels_json())
    assert [d["level"] for d in row] == ["L1", "L2", "L3", "DRAM"] and row[2]["buffer_bytes"] == 4 * 2**20
    again = ce.load_ceilings(c.key, tmp_path)
    assert again == c                                             # sweep and levels survive the JSON


def test_old_file_without_levels_loads_and_gets_levels(fake_cpu, tmp_path):
    m, calls = fake_measure()
    key = ce.machine_key("cpu", 1)
    old = [{"key": key, "measured_at": "2026-11-24T00:00:00+0000",
            "entries": [{"kind": "compute", "dtype": "fp32", "value": 1.5e11, "size": 128, "median_s": 0.1,
                         "rel_iqr": 0.01, "reps": 10, "note": ""},
                        {"kind": "memory", "dtype": "fp32", "value": 2e10, "size": 2**28, "median_s": 0.02,
                         "rel_iqr": 0.01, "reps": 10, "note": "copy"}]}]
    (tmp_path / f"{key['machine_id']}-cpu.json").write_text(json.dumps(old))
    loaded = ce.load_ceilings(key, tmp_path)
    assert loaded.levels == () and loaded.compute("fp32") == 1.5e11 and loaded.entry("compute").sweep == ()
    c = ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=m)
    assert c.compute("fp32") == 1.5e11 and len(c.levels) == 4       # GEMM kept; levels and 1-thread measured
    assert not any(shape == (64, 64) for _, shape, _ in calls)     # no sweep ran


def test_calibrate_stores_and_reuses(fake_cpu, tmp_path):
    m, _ = fake_measure()
    first = ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=m)
    m2, calls2 = fake_measure(scale=0.5)
    assert ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=m2) == first and calls2 == []
    other = ce.calibrate("cpu", ["fp32"], threads=2, store=tmp_path, measure_fn=m2)   # another key: measured
    assert other.compute("fp32") == pytest.approx(15e9)
    (path,) = tmp_path.glob("*.json")
    assert len(json.loads(path.read_text())) == 2
    forced = ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, force=True, measure_fn=m2)
    assert forced.compute("fp32") == pytest.approx(first.compute("fp32") / 2)
    more = ce.calibrate("cpu", ["fp32", "fp16"], threads=1, store=tmp_path, measure_fn=m2)
    assert more.compute("fp16") == pytest.approx(15e9) and more.entry("compute", "fp16").native is False


def test_calibrate_key_tracks_versions(fake_cpu, tmp_path, monkeypatch):
    c = ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=fake_measure()[0])
    monkeypatch.setattr(ce.torch, "__version__", "9.9.9")
    assert ce.load_ceilings(ce.machine_key("cpu", 1), tmp_path) is None
    assert ce.load_ceilings(c.key, tmp_path) is not None


def test_calibrate_rejects():
    with pytest.raises(SpecError, match="dtype='int8'"):
        ce.calibrate("cpu", ["int8"], persist=False)
    with pytest.raises(SpecError, match="tf32"):
        ce.calibrate("cpu", ["tf32"], persist=False, measure_fn=fake_measure()[0])


def test_calibrate_real_small(monkeypatch, tmp_path):
    """A real calibration on this CPU, one thread (the least disturbed by other processes): small
    GEMMs, the real (capped) cache levels, a DRAM buffer of at most 64 MiB."""
    from harness.devices.cpu import describe_cpu
    monkeypatch.setattr(CpuBackend, "calibration", CalibrationSizes((128, 256), 8 * 2**20, 64 * 2**20, True))
    c = ce.calibrate("cpu", ["fp32"], threads=1, budget_s=0.2, store=tmp_path)
    formula = describe_cpu(check_load=False).peak("fp32", cores=1, one_thread_flops_s=c.one_thread)
    assert 0 < c.compute("fp32") < 10 * formula.flops
    names = [lv.level for lv in c.levels]
    assert names[-1] == "DRAM" and names[0] in ("L1", "L2")
    assert c.levels[0].value > c.level("DRAM").value                 # the innermost cache beats main memory
    assert all(lv.buffer_bytes <= 64 * 2**20 for lv in c.levels)


def test_ceilings_measured_on_a_busy_host_are_used_but_not_stored(fake_cpu, tmp_path, monkeypatch, caplog):
    """Other processes took 50 % of the CPUs while calibrating: the ceilings serve this run, are not
    stored (they would understate the machine for every later run), and a warning says so."""
    monkeypatch.setattr(ce, "busy_since", lambda before: 0.5)
    m, _ = fake_measure()
    with caplog.at_level("WARNING"):
        busy = ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=m)
    assert busy.compute("fp32") == pytest.approx(30e9) and not list(tmp_path.glob("*.json"))
    assert "other processes used 50 % of the CPUs" in caplog.text and "not stored" in caplog.text
    monkeypatch.setattr(ce, "busy_since", lambda before: 0.1)      # under BUSY_LIMIT (20 %): stored
    ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=m)
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_ceiling_is_the_fastest_kernel_of_the_product(fake_cpu, tmp_path):
    """CPU fp16 ``torch.mm`` can take a slow path where ``F.linear`` does not: the ceiling is the
    fastest of the kernels at the winning n, and says which."""
    m, calls = fake_measure(kernels={"linear": 1.5, "conv1x1": 1.2})
    c = ce.calibrate("cpu", ["fp32"], threads=2, store=tmp_path, measure_fn=m)
    fp32 = c.entry("compute", "fp32")
    assert (fp32.op, fp32.size) == ("linear", 128) and fp32.value == pytest.approx(1.5 * 30e9)
    assert "the fastest of mm, linear, conv1x1 at n=128: linear" in fp32.note
    conv = [shape for fn, shape, _ in calls if fn is F.conv2d]
    assert conv == [(1, 128, 11, 11)]                     # 128 channels over ~128 pixels
    m, _ = fake_measure()
    assert ce.calibrate("cpu", ["fp32"], threads=2, store=tmp_path, measure_fn=m, force=True).entry(
        "compute", "fp32").op == "mm"


def test_clock_entry_and_the_peak_at_the_measured_clock(fake_cpu, tmp_path):
    m, _ = fake_measure()
    c = ce.calibrate("cpu", ["fp32"], threads=2, store=tmp_path, measure_fn=m)
    assert c.clock_mhz == pytest.approx(3005.0)            # median of 3000 and 3010 MHz
    tick = c.entry("clock")
    assert tick.size == 2 and tick.rel_iqr == pytest.approx(10 / 3005)
    device = resolve_device("cpu")
    p = device.backend.peak(device, "fp32", 2, None, clock_mhz=3005.0)
    q = device.backend.peak(device, "fp32", 2, None, clock_mhz=1502.5)
    assert p.flops == pytest.approx(2 * q.flops)          # the formula is linear in the clock it is given
    assert "dependent-add chain" in p.source
    assert ce.Ceilings.from_json(json.loads(json.dumps(c.to_json()))).clock_mhz == pytest.approx(3005.0)


def test_a_ceiling_above_the_theoretical_peak_is_said_not_stored_silently(fake_cpu, tmp_path, caplog):
    device = resolve_device("cpu")
    peak = device.backend.peak(device, "fp32", 2, None, clock_mhz=3005.0).flops
    fast = {n: 1.25 * peak for n in GEMM_RATE}
    m, _ = fake_measure(gemm=fast, kernels={"linear": 0.5, "conv1x1": 0.5})
    c = ce.calibrate("cpu", ["fp32"], threads=2, store=tmp_path, measure_fn=m)
    lines = ce.defects(c, device, 2)
    assert len(lines) == 1 and lines[0].startswith("fp32 mm ceiling") and "is 125% of the theoretical peak" in lines[0]
    assert "ABOVE THE THEORETICAL PEAK" in c.entry("compute", "fp32").note
    assert any("a defect of the peak" in r.message for r in caplog.records)
    m, _ = fake_measure()
    assert ce.defects(ce.calibrate("cpu", ["fp32"], threads=2, store=tmp_path, measure_fn=m, force=True),
                      device, 2) == []


def test_a_cache_level_read_slower_than_one_outside_it_is_a_defect_said():
    """L1 read at 142 GB/s below L2's 160 GB/s (a busy host, or reads that left L1): said, with both
    figures; the main-memory copy (another kernel, bytes read and written) is not compared with them."""
    from harness.ceilings.calibrate import LevelCeiling, level_defects

    def level(name, bw, kernel="sum"):
        return LevelCeiling(name, bw, 2**14, 2**15, 2**15, 2**15, kernel, 4096, 5e-4, 0.01, 10)
    bad = (level("L1", 142e9), level("L2", 160e9), level("L3", 145e9), level("DRAM", 200e9, "copy"))
    (line,) = level_defects(bad)
    assert line.startswith("L1 read 142 GB/s is below L2's 160 GB/s: the L1 reads did not stay in L1")
    good = (level("L1", 312e9), level("L2", 198e9), level("L3", 145e9), level("DRAM", 25e9, "copy"))
    assert level_defects(good) == []
