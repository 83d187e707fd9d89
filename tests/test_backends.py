"""Device backends: one protocol, implemented whole by cpu and cuda; device facts come from them;
no import cycle between timing and devices; the peaks a run stores."""

import inspect
import json
import subprocess
import sys

import pytest

from harness.backends import backend_types, get_backend
from harness.backends.base import Backend, CalibrationSizes, Device, with_variants
from harness.backends.cpu import CpuBackend
from harness.backends.cuda import CudaBackend, cuda_settings
from harness.ceilings.calibrate import Ceiling, Ceilings, LevelCeiling
from harness.devices.peaks import Peak
from harness.errors import SpecError
from harness.runner.context import resolve_peaks


def protocol_members():
    methods = {n for n, v in vars(Backend).items() if inspect.isfunction(v) and not n.startswith("_")}
    return methods | set(Backend.__annotations__)


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_backends_implement_the_whole_protocol(kind):
    b = get_backend(kind)
    assert b.type == kind and kind in backend_types()
    missing = {m for m in protocol_members() if not hasattr(b, m)}
    assert not missing
    assert isinstance(b.calibration, CalibrationSizes) and b.launch_overhead_s > 0 and "hot" in b.modes


def test_device_facts_per_backend():
    cpu, cuda = get_backend("cpu"), get_backend("cuda:1")
    assert cpu.modes == ("hot",) and set(cuda.modes) == {"hot", "cold", "graph"}
    assert cpu.is_oom(MemoryError()) and not cpu.is_oom(ValueError("x"))
    assert cuda.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert cpu.resolve("cpu").spec == "cpu" and cpu.device_kernels([]) is None
    with pytest.raises(SpecError, match="device='mps'"):
        get_backend("mps")
    with pytest.raises(SpecError, match="device='tpu'"):
        get_backend("tpu")


def test_no_import_cycle_between_timing_and_devices():
    code = ("import sys, harness.devices, harness.devices.identity; "
            "bad = [m for m in sys.modules if m.startswith(('harness.timing', 'harness.backends', 'harness.runner'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_peak_dtype_tf32():
    on = {"allow_tf32_cudnn": True, "allow_tf32_matmul": False}
    cuda, cpu = CudaBackend(), CpuBackend()
    assert cuda.peak_dtype("conv2d", "fp32", on) == "tf32"
    assert cuda.peak_dtype("linear", "fp32", on) == "fp32"
    assert cuda.peak_dtype("mm", "fp32", {"allow_tf32_matmul": True}) == "tf32"
    assert cuda.peak_dtype("conv2d", "bf16", on) == "bf16"
    assert cpu.peak_dtype("conv2d", "fp32", on) == "fp32"


def fake_device(backend, kind="cuda"):
    """A resolved device of ``backend`` without the hardware (tests)."""
    return Device(type=kind, index=0 if kind == "cuda" else None, name=f"fake {kind}",
                  main_memory="HBM" if kind == "cuda" else "DRAM", modes=("hot",), host=kind == "cpu",
                  tensors="cpu", backend=backend)


class FakeGpuBackend:
    type = "cuda"
    launch_overhead_s = 5e-6
    variants = CudaBackend.variants

    def peak(self, device, dtype, threads, one_thread_flops_s=None, clock_mhz=None):
        if dtype == "fp16":
            raise RuntimeError("NVML exploded")
        return Peak(flops={"fp32": 67e12, "tf32": 495e12}[dtype], bandwidth=3.35e12, native=True,
                    source="datasheet H100 SXM5", kind="datasheet")


def test_resolve_peaks_stores_source_and_ceiling():
    ceil = Ceilings(key={"machine_id": "m"}, measured_at="2026-11-24T00:00:00+0000",
                    entries=(Ceiling("compute", "tf32", 400e12, 8192, 0.0027, 0.01, 30),
                             Ceiling("memory", "fp32", 2.9e12, 2**31, 0.0015, 0.02, 40)))
    p = resolve_peaks(fake_device(FakeGpuBackend()), ["fp32", "fp16"], 1, ceil)
    assert set(p) == {"fp32", "tf32", "fp16"}                     # tf32 resolved beside fp32 on CUDA
    assert p["tf32"].peak_flops_s == 495e12 and p["tf32"].peak_source == "datasheet"
    assert p["tf32"].ceiling_flops_s == 400e12 and p["tf32"].ceiling_gemm_n == 8192
    assert p["tf32"].ceiling_id == ceil.ceiling_id and p["tf32"].ceiling_source == "measured"
    assert p["fp32"].ceiling_flops_s is None and p["fp32"].ceiling_bytes_s == 2.9e12   # no fp32 GEMM measured
    assert p["fp16"].peak_source == "none" and p["fp16"].peak_flops_s is None       # a failing probe: unknown
    assert p["fp32"].launch_overhead_s == 5e-6


class FakeCpuBackend:
    """A 2-core AVX-512 CPU (64 FLOP/cycle fp32, AVX512_FP16: 128) reported at 2.6 GHz."""

    type = "cpu"
    launch_overhead_s = 2e-6
    variants = CpuBackend.variants

    def peak(self, device, dtype, threads, one_thread_flops_s=None, clock_mhz=None):
        clock = max(2.6, (one_thread_flops_s or 0) / 64 / 1e9)
        per_cycle = {"fp32": 64, "fp16": 128, "bf16": 128}[dtype]
        return Peak(flops=2 * clock * 1e9 * per_cycle, bandwidth=None, native=True, source=f"formula {clock} GHz")


def test_resolve_peaks_levels_native_verdict_and_effective_clock():
    levels = (LevelCeiling("L1", 400e9, 24 * 2**10, 48 * 2**10, 96 * 2**10, 48 * 2**10, "sum", 2731, 1e-4, 0.0, 10),
              LevelCeiling("L2", 200e9, 2**20, 2**21, 2**22, 2**21, "sum", 64, 1e-4, 0.0, 10),
              LevelCeiling("L3", 100e9, 12 * 2**20, 24 * 2**20, 24 * 2**20, 480 * 2**20, "sum", 6, 1e-4, 0.0, 10),
              LevelCeiling("DRAM", 30e9, 112 * 2**20, None, None, None, "copy", 1, 1e-2, 0.0, 10))
    ceil = Ceilings(key={"machine_id": "m"}, measured_at="2026-11-24T00:00:00+0000",
                    entries=(Ceiling("compute", "fp32", 330e9, 2048, 0.05, 0.01, 10, native=True),
                             Ceiling("compute", "fp16", 335e9, 1536, 0.02, 0.01, 10, native=False),
                             Ceiling("one_thread", "fp32", 2.9e9 * 64, 1536, 0.04, 0.01, 10),
                             Ceiling("memory", "fp32", 30e9, 112 * 2**20, 0.01, 0.01, 10)), levels=levels)
    p = resolve_peaks(fake_device(FakeCpuBackend(), "cpu"), ["fp32", "fp16"], 2, ceil)
    # effective clock 2.9 GHz (185.6 GFLOP/s / 64) beats the reported 2.6: 2 x 2.9 x 64 = 371.2 GFLOP/s
    assert p["fp32"].peak_flops_s == pytest.approx(371.2e9) and p["fp32"].peak_native is True
    # fp16: the flag says native (128 FLOP/cycle), the GEMM is at the fp32 rate: not native, the fp32 peak
    assert p["fp16"].peak_native is False and p["fp16"].peak_flops_s == pytest.approx(371.2e9)
    assert "bounded by the fp32 peak" in p["fp16"].peak_detail
    assert (p["fp32"].ceiling_l1_bytes_s, p["fp32"].ceiling_l2_bytes_s, p["fp32"].ceiling_l3_bytes_s,
            p["fp32"].ceiling_bytes_s) == (400e9, 200e9, 100e9, 30e9)
    stored = json.loads(p["fp16"].ceiling_levels)
    assert [d["level"] for d in stored] == ["L1", "L2", "L3", "DRAM"]
    assert stored[2]["cache_bytes"] == 24 * 2**20 and stored[2]["buffer_bytes"] == 12 * 2**20
    old = Ceilings(key={"machine_id": "m"}, measured_at="t", entries=ceil.entries[:2])   # a file without levels
    q = resolve_peaks(fake_device(FakeCpuBackend(), "cpu"), ["fp32"], 2, old)
    assert q["fp32"].ceiling_levels is None and q["fp32"].ceiling_l1_bytes_s is None
    assert q["fp32"].peak_flops_s == pytest.approx(2 * 2.6e9 * 64)              # no 1-thread GEMM: reported clock


def test_memory_levels_of_the_backends(monkeypatch):
    from harness.backends.cuda import gpu_memory_levels
    device = get_backend("cpu").resolve("cpu")
    cpu = get_backend("cpu").memory_levels(device)
    assert cpu[-1].name == "DRAM" and cpu[-1].cache_bytes is None
    assert all(lv.cache_bytes for lv in cpu[:-1])
    assert device.llc_bytes == (cpu[-2].cache_bytes if len(cpu) > 1 else 0)
    assert (device.main_memory, device.host, device.tensors, device.index) == ("DRAM", True, "cpu", None)
    l2, hbm = gpu_memory_levels(50 * 2**20)                         # H100: 50 MiB L2, shared by every SM
    assert (l2.name, l2.cache_bytes, l2.capacity(8)) == ("L2", 50 * 2**20, 50 * 2**20) and hbm.name == "HBM"
    assert [lv.name for lv in gpu_memory_levels(0)] == ["HBM"]


def test_variants_and_gemm_dtype_per_backend():
    import torch
    assert with_variants(CudaBackend(), ["fp16", "fp32", "bf16"]) == ["fp16", "fp32", "tf32", "bf16"]
    assert with_variants(CpuBackend(), ["fp32", "bf16", "fp32"]) == ["fp32", "bf16"]
    with CpuBackend().gemm_dtype("bf16") as dt:
        assert dt == torch.bfloat16
    with pytest.raises(SpecError, match="tf32 only on cuda"), CpuBackend().gemm_dtype("tf32"):
        pass
    before = torch.backends.cuda.matmul.fp32_precision           # the switch exists without a GPU
    with CudaBackend().gemm_dtype("tf32") as dt:
        assert dt == torch.float32 and cuda_settings()["allow_tf32_matmul"] is True
    with CudaBackend().gemm_dtype("fp32") as dt:
        assert dt == torch.float32 and cuda_settings()["allow_tf32_matmul"] is False
    assert torch.backends.cuda.matmul.fp32_precision == before
    assert torch.backends.cuda.matmul.allow_tf32 is False          # restored: the legacy flag reads again
