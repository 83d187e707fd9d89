"""Device backends: one protocol, implemented whole by cpu and cuda; device facts come from them;
no import cycle between timing and devices; the peaks a run stores."""

import inspect
import subprocess
import sys

import pytest

from harness.backends import backend_types, get_backend
from harness.backends.base import Backend, CalibrationSizes
from harness.calibrate import Ceiling, Ceilings
from harness.devices.peaks import Peak
from harness.errors import SpecError
from harness.runner.context import peak_dtype, resolve_peaks


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
    assert cpu.resolve("cpu") == "cpu" and cpu.device_kernels([]) is None
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
    assert peak_dtype("conv2d", "fp32", "cuda", on) == "tf32"
    assert peak_dtype("linear", "fp32", "cuda", on) == "fp32"
    assert peak_dtype("mm", "fp32", "cuda", {"allow_tf32_matmul": True}) == "tf32"
    assert peak_dtype("conv2d", "bf16", "cuda", on) == "bf16"
    assert peak_dtype("conv2d", "fp32", "cpu", on) == "fp32"


class FakeGpuBackend:
    type = "cuda"
    launch_overhead_s = 5e-6

    def peak(self, device, dtype, threads):
        if dtype == "fp16":
            raise RuntimeError("NVML exploded")
        return Peak(flops={"fp32": 67e12, "tf32": 495e12}[dtype], bandwidth=3.35e12, native=True,
                    source="datasheet H100 SXM5", kind="datasheet")


def test_resolve_peaks_stores_source_and_ceiling():
    ceil = Ceilings(key={"machine_id": "m"}, measured_at="2026-11-24T00:00:00+0000",
                    entries=(Ceiling("compute", "tf32", 400e12, 8192, 0.0027, 0.01, 30),
                             Ceiling("memory", "fp32", 2.9e12, 2**31, 0.0015, 0.02, 40)))
    p = resolve_peaks(FakeGpuBackend(), "cuda:0", ["fp32", "fp16"], 1, ceil)
    assert set(p) == {"fp32", "tf32", "fp16"}                     # tf32 resolved beside fp32 on CUDA
    assert p["tf32"].peak_flops_s == 495e12 and p["tf32"].peak_source == "datasheet"
    assert p["tf32"].ceiling_flops_s == 400e12 and p["tf32"].ceiling_gemm_n == 8192
    assert p["tf32"].ceiling_id == ceil.ceiling_id and p["tf32"].ceiling_source == "measured"
    assert p["fp32"].ceiling_flops_s is None and p["fp32"].ceiling_bytes_s == 2.9e12   # no fp32 GEMM measured
    assert p["fp16"].peak_source == "none" and p["fp16"].peak_flops_s is None       # a failing probe: unknown
    assert p["fp32"].launch_overhead_s == 5e-6
