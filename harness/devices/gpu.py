"""What GPUs this machine has: NVML (nvidia-ml-py) for name, driver, clocks, power, temperature and
clock-event reasons; torch's device properties for SM count, L2 size and compute capability.

Without pynvml, without a driver or without a CUDA build of torch, this returns what it can and
says what is missing in ``notes``; it never raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.devices.nvml import CLOCK_MEM, CLOCK_SM, TEMPERATURE_GPU, Nvml, nvml_session, reason_names
from harness.devices.peaks import Peak, datasheet_peak, gpu_formula_peak, memory_bandwidth


@dataclass(frozen=True, slots=True)
class GpuDescription:
    """One GPU. Clocks in MHz, memory in bytes, power in W, temperature in deg C; ``None``: unknown.

    ``index`` is torch's CUDA index when torch sees the device, else NVML's index.
    ``clock_reasons`` are NVML's current clock-event reasons (``sw_power_cap``, ``hw_thermal``, ...).
    """

    index: int
    name: str
    uuid: str | None
    compute_capability: tuple[int, int] | None
    sm_count: int | None
    l2_bytes: int | None
    memory_total_bytes: int | None
    memory_free_bytes: int | None
    memory_bus_width_bits: int | None
    sm_clock_mhz: int | None
    sm_clock_max_mhz: int | None
    mem_clock_mhz: int | None
    mem_clock_max_mhz: int | None
    power_limit_w: float | None
    power_draw_w: float | None
    temperature_c: int | None
    clock_reasons: tuple[str, ...]
    mig_mode: int | None
    source: str            # "nvml+torch", "torch" or "nvml"

    def peak(self, dtype: str) -> Peak | None:
        """Theoretical peak for ``dtype``: the datasheet row for this model, else the formula from
        the compute capability, SM count and maximum SM clock (an upper bound: NVIDIA rates tensor
        peaks at a boost clock below it, 1830 of 1980 MHz on H100 SXM; the source says so);
        bandwidth likewise."""
        sheet = datasheet_peak(self.name, dtype)
        if sheet is not None:
            return sheet
        bw = None
        if self.mem_clock_max_mhz and self.memory_bus_width_bits:
            bw = memory_bandwidth(self.mem_clock_max_mhz, self.memory_bus_width_bits)
        if self.compute_capability and self.sm_count and self.sm_clock_max_mhz:
            flops = gpu_formula_peak(self.compute_capability, self.sm_count, self.sm_clock_max_mhz, dtype)
            if flops is not None:
                return Peak(flops=flops, bandwidth=bw, native=True,
                            source=f"formula: {self.sm_count} SMs x CC {self.compute_capability} rate x "
                                   f"{self.sm_clock_max_mhz} MHz, the maximum SM clock (an upper bound: vendors "
                                   f"rate tensor peaks at a lower boost clock)")
        return None if bw is None else Peak(flops=None, bandwidth=bw, native=True, source="formula: memory only")


@dataclass(frozen=True, slots=True)
class GpuReport:
    """Every GPU found, the software stack, and notes on what could not be read."""

    gpus: tuple[GpuDescription, ...]
    torch_version: str
    cuda_runtime: str | None
    cudnn_version: int | None
    driver_version: str | None
    cuda_driver_version: int | None
    notes: tuple[str, ...]


def describe_gpus(nvml: Nvml | None = None, cuda: Any = None) -> GpuReport:
    """Describe the NVIDIA GPUs; ``nvml`` and ``cuda`` (``torch.cuda``) are injectable for tests."""
    nvml = nvml if nvml is not None else nvml_session()
    cuda = cuda if cuda is not None else torch.cuda
    notes: list[str] = []
    if nvml.error:
        notes.append(nvml.error)
    props: list[Any] = []
    try:
        if cuda.is_available():
            props = [cuda.get_device_properties(i) for i in range(cuda.device_count())]
        else:
            notes.append("torch sees no CUDA device" + ("" if torch.version.cuda else " (a CPU build of torch)"))
    except Exception as e:
        notes.append(f"torch.cuda failed: {type(e).__name__}: {e}")
    handles = nvml.handles() if nvml.ok else []
    gpus = []
    used: set[int] = set()
    for i, p in enumerate(props):       # matched by UUID (a MIG instance: its GPU), never by index
        uuid = getattr(p, "uuid", None)
        h = nvml.handle_for_uuid(uuid, handles) if nvml.ok and uuid is not None else None
        if h is not None:
            used.add(id(h))
        gpus.append(_describe(i, nvml, h, p))
    for j, h in enumerate(handles):          # GPUs NVML sees but torch does not (CPU torch, masked devices)
        if id(h) not in used:
            gpus.append(_describe(j, nvml, h, None))
    cudnn = None
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:
        cudnn = None
    return GpuReport(gpus=tuple(gpus), torch_version=torch.__version__, cuda_runtime=torch.version.cuda,
                     cudnn_version=cudnn, driver_version=nvml.query("nvmlSystemGetDriverVersion"),
                     cuda_driver_version=nvml.query("nvmlSystemGetCudaDriverVersion"), notes=tuple(notes))


def _describe(index: int, nvml: Nvml, h: Any, p: Any) -> GpuDescription:
    q = nvml.query if h is not None else (lambda *a: None)
    mem = q("nvmlDeviceGetMemoryInfo", h)
    cc = (p.major, p.minor) if p is not None else q("nvmlDeviceGetCudaComputeCapability", h)
    limit = q("nvmlDeviceGetEnforcedPowerLimit", h)
    draw = q("nvmlDeviceGetPowerUsage", h)
    mask = nvml.clock_reasons(h) if h is not None else None
    mem_max = q("nvmlDeviceGetMaxClockInfo", h, CLOCK_MEM)
    if mem_max is None and p is not None and getattr(p, "memory_clock_rate", None):
        mem_max = int(p.memory_clock_rate) // 1000        # kHz
    sm_max = q("nvmlDeviceGetMaxClockInfo", h, CLOCK_SM)
    if sm_max is None and p is not None and getattr(p, "clock_rate", None):
        sm_max = int(p.clock_rate) // 1000
    mig = q("nvmlDeviceGetMigMode", h)
    name = q("nvmlDeviceGetName", h) or (p.name if p is not None else "unknown")
    return GpuDescription(
        index=index, name=str(name), uuid=str(q("nvmlDeviceGetUUID", h) or getattr(p, "uuid", "") or "") or None,
        compute_capability=tuple(cc) if cc else None, sm_count=getattr(p, "multi_processor_count", None),
        l2_bytes=getattr(p, "L2_cache_size", None),
        memory_total_bytes=mem.total if mem is not None else getattr(p, "total_memory", None),
        memory_free_bytes=mem.free if mem is not None else None,
        memory_bus_width_bits=q("nvmlDeviceGetMemoryBusWidth", h) or getattr(p, "memory_bus_width", None),
        sm_clock_mhz=q("nvmlDeviceGetClockInfo", h, CLOCK_SM), sm_clock_max_mhz=sm_max,
        mem_clock_mhz=q("nvmlDeviceGetClockInfo", h, CLOCK_MEM), mem_clock_max_mhz=mem_max,
        power_limit_w=limit / 1e3 if limit is not None else None, power_draw_w=draw / 1e3 if draw is not None else None,
        temperature_c=q("nvmlDeviceGetTemperature", h, TEMPERATURE_GPU), clock_reasons=reason_names(mask or 0),
        mig_mode=mig[0] if isinstance(mig, (list, tuple)) else mig,
        source="nvml+torch" if h is not None and p is not None else ("torch" if p is not None else "nvml"))
