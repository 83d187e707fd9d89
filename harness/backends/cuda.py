"""The CUDA backend: CUDA events (hot), an L2 flush before each call (cold), CUDA-graph replays
(graph), NVML clock and throttle monitoring, datasheet or formula peaks.

The device operations the timer uses sit behind ``CudaApi`` (``TorchCuda`` is the real one), so
tests drive the same loop with a fake device clock on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import torch
from torch.profiler import ProfilerActivity

from harness.backends.base import (
    CalibrationSizes,
    Call,
    ClockSummary,
    Device,
    MemoryLevel,
    Monitor,
    SampleTimer,
    TimingContext,
)
from harness.devices.gpu import describe_gpus
from harness.devices.nvml import CLOCK_SM, THROTTLE_MASK, Nvml, nvml_session, reason_names, uuid_key
from harness.devices.peaks import Peak
from harness.errors import SpecError
from harness.layers.dtypes import parse_dtype

#: A sample whose SM clock is below this fraction of the maximum SM clock counts as throttled
#: (NVBench's ``--throttle-threshold`` default, 75 %).
THROTTLE_CLOCK_FRACTION = 0.75


class Event(Protocol):
    def record(self) -> None: ...
    def elapsed_time(self, end: Any) -> float: ...  # milliseconds


class CudaApi(Protocol):
    """The few device operations the CUDA timer uses (``TorchCuda`` is the real one)."""

    device: str

    def event(self) -> Event: ...
    def synchronize(self) -> None: ...
    def make_flush(self) -> tuple[Call, int]: ...    # (flush, bytes it writes)
    def capture(self, call: Call, number: int) -> Call: ...   # a replay of `number` calls
    def settings(self) -> dict[str, Any]: ...
    def scope(self, autotune: bool) -> contextlib.AbstractContextManager[None]: ...


class CudaEventTimer:
    """CUDA: an event pair around each sample; device time, read after one synchronisation per chunk.

    Modes:
        ``hot``: ``number`` back-to-back launches per event pair (warm L2).
        ``cold``: before every sample (``number`` = 1) the L2 is flushed by writing a buffer of
            twice its size; the flush is enqueued before the start event, so it is not timed.
        ``graph``: ``number`` launches captured once into a CUDA graph; each sample is an event
            pair around one replay, so per-launch host overhead is paid once per replay.
    """

    def __init__(self, api: CudaApi, mode: str = "hot", monitor: Monitor | None = None,
                 host_clock: Callable[[], float] = time.perf_counter) -> None:
        self.api, self.monitor, self.host_clock = api, monitor, host_clock
        self._flush: Call | None = None
        self.flush_bytes = 0
        self._replay: Call | None = None
        self.mode = self.name = ""
        self.use_mode(mode)
        if mode == "cold":
            self._flush, self.flush_bytes = api.make_flush()

    def use_mode(self, mode: str) -> None:
        self.mode = mode
        self.name = "cuda_graph" if mode == "graph" else "cuda_event"

    def now(self) -> float:
        return self.host_clock()

    def sync(self) -> None:
        self.api.synchronize()

    def prepare(self, call: Call, number: int) -> None:
        if self.mode == "graph":
            self._replay = self.api.capture(call, number)
            self.api.synchronize()

    def samples(self, call: Call, number: int, count: int) -> list[float]:
        pairs = []
        for _ in range(count):
            start, end = self.api.event(), self.api.event()
            if self._flush is not None:
                self._flush()
            start.record()
            if self._replay is not None:
                self._replay()
            else:
                for _ in range(number):
                    call()
            end.record()
            pairs.append((start, end))
        if self.monitor is not None:
            self.monitor.sample()       # while the chunk is still running on the device
        self.api.synchronize()
        return [s.elapsed_time(e) * 1e-3 for s, e in pairs]


class TorchCuda:
    """``CudaApi`` over ``torch.cuda`` for one device."""

    def __init__(self, device: str | torch.device = "cuda") -> None:
        dev = torch.device(device)
        self.index = dev.index if dev.index is not None else torch.cuda.current_device()
        self.device = f"cuda:{self.index}"
        self.props = torch.cuda.get_device_properties(self.index)

    def event(self) -> Event:
        return torch.cuda.Event(enable_timing=True)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.index)

    def l2_bytes(self) -> int:
        """L2 size from the device properties (torch >= 2.5); 50 MiB (H100's) when unknown."""
        return int(getattr(self.props, "L2_cache_size", 0) or 50 * 2**20)

    def make_flush(self) -> tuple[Call, int]:
        nbytes = 2 * self.l2_bytes()
        buf = torch.empty(nbytes // 4, dtype=torch.int32, device=self.device)
        return buf.zero_, nbytes

    def capture(self, call: Call, number: int) -> Call:
        # Graph capture needs the work warmed on a side stream first (torch.cuda.graphs docs).
        side = torch.cuda.Stream(self.index)
        side.wait_stream(torch.cuda.current_stream(self.index))
        with torch.cuda.stream(side):
            for _ in range(3):
                call()
        torch.cuda.current_stream(self.index).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(number):
                call()
        return graph.replay

    def settings(self) -> dict[str, Any]:
        return cuda_settings()

    @contextlib.contextmanager
    def scope(self, autotune: bool) -> Iterator[None]:
        """This device current, and ``cudnn.benchmark = autotune`` (restored on exit)."""
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = autotune
        try:
            with torch.cuda.device(self.index):
                yield
        finally:
            torch.backends.cudnn.benchmark = before


def cuda_settings() -> dict[str, Any]:
    """The process-wide CUDA math settings a row is timed under."""
    return {
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "allow_tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "allow_tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


# --- clock and throttle monitoring (NVML) ------------------------------------------------------------

class NvmlClockMonitor:
    """Collects (SM clock, reasons mask) samples for one GPU."""

    def __init__(self, nvml: Nvml, handle: Any) -> None:
        self.nvml, self.handle = nvml, handle
        self.limit_mhz: int | None = nvml.query("nvmlDeviceGetMaxClockInfo", handle, CLOCK_SM)
        self.clocks: list[int] = []
        self.mask = 0
        self.count = 0

    def sample(self) -> None:
        self.count += 1
        clock = self.nvml.query("nvmlDeviceGetClockInfo", self.handle, CLOCK_SM)
        if clock is not None:
            self.clocks.append(int(clock))
        mask = self.nvml.clock_reasons(self.handle)
        if mask is not None:
            self.mask |= mask

    def summary(self) -> ClockSummary | None:
        if self.count == 0:
            return None
        lo = min(self.clocks) if self.clocks else None
        slow = lo is not None and self.limit_mhz is not None and lo < THROTTLE_CLOCK_FRACTION * self.limit_mhz
        return ClockSummary(samples=self.count, sm_clock_min_mhz=lo, sm_clock_max_mhz=max(self.clocks, default=None),
                            sm_clock_limit_mhz=self.limit_mhz, reasons_mask=self.mask,
                            reasons=reason_names(self.mask), throttled=bool(self.mask & THROTTLE_MASK) or slow)


def nvml_handle(nvml: Nvml, index: int, uuid: object | None = None) -> Any:
    """The NVML handle of torch's CUDA device ``index``: matched by UUID when known (NVML's order
    ignores ``CUDA_VISIBLE_DEVICES``), by index otherwise."""
    handles = nvml.handles()
    if uuid is not None:
        for h in handles:
            if uuid_key(nvml.query("nvmlDeviceGetUUID", h)) == uuid_key(uuid):
                return h
    return handles[index] if index < len(handles) else None


def clock_monitor(device: str, nvml: Nvml | None = None) -> NvmlClockMonitor | None:
    """A monitor for ``cuda:N``, or ``None`` when NVML is not available (the row then has no clocks)."""
    nvml = nvml or nvml_session()
    if not nvml.ok:
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    uuid = None
    try:
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    except Exception:
        uuid = None
    handle = nvml_handle(nvml, index, uuid)
    return NvmlClockMonitor(nvml, handle) if handle is not None else None


def gpu_memory_levels(l2_bytes: int, main_memory: str = "HBM") -> tuple[MemoryLevel, ...]:
    """The levels calibration measures on a GPU: L2 (when its size is known) and device memory."""
    l2 = (MemoryLevel("L2", l2_bytes, False, l2_bytes),) if l2_bytes > 0 else ()
    return l2 + (MemoryLevel(main_memory, None),)


# --- the backend ----------------------------------------------------------------------------------------

class CudaBackend:
    """``Backend`` for ``cuda``."""

    type = "cuda"
    modes = ("hot", "cold", "graph")
    #: Host cost of one kernel launch (cudaLaunchKernel through torch: about 5 us).
    launch_overhead_s = 5e-6
    #: Seconds per sample block in hot/graph mode (event resolution about 0.5 us).
    block_s = 2e-4
    calibration = CalibrationSizes(gemm_sizes=(1024, 2048, 3072, 4096, 6144, 8192), copy_fallback_bytes=2**30,
                                   buffer_cap_bytes=2**30, one_thread_gemm=False)
    main_memory = "HBM"
    host = False
    accelerator = True
    traces_onednn = False
    variants: dict[str, tuple[str, ...]] = {"fp32": ("tf32",)}

    def available(self) -> bool:
        return torch.cuda.is_available()

    def resolve(self, spec: str) -> Device:
        """``cuda`` (the current device) or ``cuda:N``: its name and L2 size from torch."""
        if not self.available():
            raise SpecError("--device", spec, "a CUDA device, but torch sees none on this machine")
        try:
            dev = torch.device(spec)
        except (RuntimeError, TypeError):
            raise SpecError("--device", spec, "cuda or cuda:N") from None
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if not 0 <= index < torch.cuda.device_count():
            raise SpecError("--device", spec, f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        props = torch.cuda.get_device_properties(index)
        return Device(type=self.type, index=index, name=torch.cuda.get_device_name(index),
                      main_memory=self.main_memory, modes=self.modes, host=self.host, tensors=f"cuda:{index}",
                      llc_bytes=int(getattr(props, "L2_cache_size", 0) or 0), backend=self)

    @contextlib.contextmanager
    def timing(self, device: Device, mode: str, autotune: bool, *, timer: SampleTimer | None = None,
               api: Any = None, monitor: Monitor | None = None) -> Iterator[TimingContext]:
        if mode not in self.modes + ("auto",):
            raise SpecError("mode", mode, "one of " + ", ".join(self.modes + ("auto",)))
        api = api if api is not None else TorchCuda(device.tensors)
        if monitor is None:
            monitor = clock_monitor(api.device)
        with api.scope(autotune):
            t = timer or CudaEventTimer(api, "hot" if mode == "auto" else mode, monitor)
            settings = dict(api.settings())
            settings["l2_flush_bytes"] = getattr(t, "flush_bytes", 0)
            yield TimingContext(timer=t, device=api.device, block_s=self.block_s, chunked=True, settings=settings,
                                monitor=monitor)

    def synchronize(self, device: Device) -> None:
        torch.cuda.synchronize(device.index)

    def is_oom(self, error: BaseException) -> bool:
        return isinstance(error, getattr(torch.cuda, "OutOfMemoryError", ())) or "out of memory" in str(error).lower()

    def after_oom(self, device: Device) -> None:
        torch.cuda.empty_cache()

    def profiler_activities(self) -> list[Any]:
        return [ProfilerActivity.CPU, ProfilerActivity.CUDA]

    def device_kernels(self, events: Iterable[Any]) -> tuple[dict[str, float], int] | None:
        """Device time per CUDA kernel name (us) and the number of kernels launched."""
        times: dict[str, float] = {}
        launches = 0
        for e in events:
            if e.device_type == torch.autograd.DeviceType.CUDA:
                times[e.name] = times.get(e.name, 0.0) + e.device_time_total
                launches += 1
        return times, launches

    def _gpu(self, device: Device) -> Any:
        return next((g for g in describe_gpus().gpus if g.index == device.index), None)

    def peak(self, device: Device, dtype: str, threads: int | None,
             one_thread_flops_s: float | None = None, clock_mhz: float | None = None) -> Peak | None:
        """The datasheet formula at NVML's max SM clock (``clock_mhz`` is a host CPU's: unused)."""
        if dtype not in ("fp32", "tf32", "fp16", "bf16", "fp64"):
            return None
        gpu = self._gpu(device)
        return gpu.peak(dtype) if gpu is not None else None

    def peak_dtype(self, layer: str, dtype: str, settings: Mapping[str, Any]) -> str:
        """``tf32`` for fp32 rows with TF32 allowed for that op (cuDNN for convolutions, cuBLAS
        otherwise): their peak is the tensor cores' TF32 rate."""
        if dtype != "fp32":
            return dtype
        flag = "allow_tf32_cudnn" if layer.startswith("conv") else "allow_tf32_matmul"
        return "tf32" if settings.get(flag) else dtype

    def memory_levels(self, device: Device) -> tuple[MemoryLevel, ...]:
        """L2 (one, shared by every SM; from the device properties) when known, then HBM."""
        return gpu_memory_levels(device.llc_bytes, self.main_memory)

    def dtype_problem(self, device: Device, dtype: str) -> str | None:
        if dtype == "bf16" and not torch.cuda.is_bf16_supported():
            return "a dtype this GPU runs (no bf16 before compute capability 8.0)"
        return None

    def settings(self, device: Device) -> dict[str, Any]:
        return cuda_settings()

    @contextlib.contextmanager
    def gemm_dtype(self, dtype: str) -> Iterator[Any]:
        """The torch dtype of a calibration GEMM of ``dtype``, with cuBLAS TF32 allowed for
        ``tf32`` alone (fp32 operands, tensor-core math) and restored after."""
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        try:
            yield torch.float32 if dtype == "tf32" else parse_dtype(dtype)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before

    def ceiling_key(self, device: Device, threads: int, software: Any) -> dict[str, Any]:
        """A GPU's ceilings depend on its cuDNN and driver, not on host threads."""
        return {"cudnn": software.cudnn, "driver": software.driver}
