"""The CPU backend: a monotonic nanosecond clock, torch threads, no device queue, peaks from the
ISA formula (``harness.devices.peaks.cpu_flop_per_cycle``)."""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from torch.profiler import ProfilerActivity

from harness.backends.base import CalibrationSizes, Call, Device, MemoryLevel, Monitor, SampleTimer, TimingContext
from harness.devices.cpu import cpuinfo, describe_cpu
from harness.devices.peaks import Peak
from harness.errors import SpecError
from harness.layers.dtypes import parse_dtype


class CpuTimer:
    """CPU: a monotonic nanosecond clock around each block of calls.

    Args:
        clock: returns nanoseconds, monotonic (default ``time.perf_counter_ns``; tests inject a fake).
    """

    name = "perf_counter_ns"
    mode = "hot"

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.clock = clock

    def now(self) -> float:
        return self.clock() * 1e-9

    def sync(self) -> None:
        pass

    def use_mode(self, mode: str) -> None:
        if mode != "hot":
            raise SpecError("mode", mode, "hot on cpu (cold and graph are GPU modes; rotate inputs instead)")

    def prepare(self, call: Call, number: int) -> None:
        pass

    def samples(self, call: Call, number: int, count: int) -> list[float]:
        clock, out = self.clock, []
        for _ in range(count):
            t0 = clock()
            for _ in range(number):
                call()
            out.append((clock() - t0) * 1e-9)
        return out


class CpuBackend:
    """``Backend`` for ``cpu``: the host CPU."""

    type = "cpu"
    modes = ("hot",)
    #: One dispatched ATen op costs about this much host time (torch eager dispatch, 1-3 us).
    launch_overhead_s = 2e-6
    #: Seconds per sample block (clock overhead ~50 ns is then < 1e-4 of a block).
    block_s = 1e-3
    calibration = CalibrationSizes(gemm_sizes=(256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096),
                                   copy_fallback_bytes=256 * 2**20, buffer_cap_bytes=2**30, one_thread_gemm=True)
    main_memory = "DRAM"
    host = True
    accelerator = False
    traces_onednn = True
    variants: dict[str, tuple[str, ...]] = {}

    def available(self) -> bool:
        return True

    def resolve(self, spec: str) -> Device:
        """The host CPU (``cpu`` or ``cpu:0``): its brand and last-level cache as used."""
        if spec not in ("cpu", "cpu:0"):
            raise SpecError("device", spec, "cpu")
        cpu = describe_cpu(check_load=False)
        name = str(cpuinfo().get("brand_raw") or platform.processor() or "cpu")
        caches = [c.used_bytes for c in cpu.caches if c.used_bytes]
        return Device(type=self.type, index=None, name=name, main_memory=self.main_memory, modes=self.modes,
                      host=self.host, tensors="cpu", llc_bytes=int(caches[-1]) if caches else 0, backend=self)

    @contextlib.contextmanager
    def timing(self, device: Device, mode: str, autotune: bool, *, timer: SampleTimer | None = None,
               api: Any = None, monitor: Monitor | None = None) -> Iterator[TimingContext]:
        if mode not in ("hot", "auto"):
            raise SpecError("mode", mode, "hot on cpu (cold and graph are GPU modes; rotate inputs instead)")
        yield TimingContext(timer=timer or CpuTimer(), device=device.spec, block_s=self.block_s, chunked=False,
                            settings={}, monitor=monitor)

    def synchronize(self, device: Device) -> None:
        pass

    def is_oom(self, error: BaseException) -> bool:
        text = str(error).lower()
        return isinstance(error, MemoryError) or "can't allocate memory" in text or "not enough memory" in text

    def after_oom(self, device: Device) -> None:
        pass

    def profiler_activities(self) -> list[Any]:
        return [ProfilerActivity.CPU]

    def device_kernels(self, events: Iterable[Any]) -> tuple[dict[str, float], int] | None:
        return None            # no device kernels: "what ran" reads the ATen implementations

    def peak(self, device: Device, dtype: str, threads: int | None,
             one_thread_flops_s: float | None = None, clock_mhz: float | None = None) -> Peak | None:
        """The ISA formula at the measured clock (``clock_mhz``, the dependent-add chain of
        ``harness.devices.clock``), else the higher of the reported clock and the one a measured
        one-thread fp32 GEMM (``one_thread_flops_s``) implies."""
        if dtype not in ("fp32", "fp16", "bf16", "fp64"):
            return None
        cpu = describe_cpu(check_load=False)
        cores = min(threads, cpu.cores_for_peak) if threads else None
        return cpu.peak(dtype, cores=cores, one_thread_flops_s=one_thread_flops_s, clock_mhz=clock_mhz)

    def peak_dtype(self, layer: str, dtype: str, settings: Mapping[str, Any]) -> str:
        return dtype

    def memory_levels(self, device: Device) -> tuple[MemoryLevel, ...]:
        """L1 (data), L2, L3 as checked by ``describe_cpu`` (private when one core holds an instance), then DRAM."""
        out = [MemoryLevel(c.name.rstrip("d"), c.used_bytes, c.shared_by == 1, c.reported_bytes)
               for c in describe_cpu(check_load=False).caches]
        return tuple(out) + (MemoryLevel(self.main_memory, None),)

    def dtype_problem(self, device: Device, dtype: str) -> str | None:
        return None

    @contextlib.contextmanager
    def gemm_dtype(self, dtype: str) -> Iterator[Any]:
        """The torch dtype of a calibration GEMM of ``dtype`` (no precision switches on CPU)."""
        if dtype == "tf32":
            raise SpecError("dtype", dtype, "tf32 only on cuda (it is fp32 on tensor cores)")
        yield parse_dtype(dtype)

    def settings(self, device: Device) -> dict[str, Any]:
        return {}

    def ceiling_key(self, device: Device, threads: int, software: Any) -> dict[str, Any]:
        """A CPU's ceilings depend on the threads that ran them."""
        return {"threads": threads}

    def pass_scope(self, device: Device, pass_: str) -> contextlib.AbstractContextManager[None]:
        """Nothing to set up: the host has no queue."""
        return contextlib.nullcontext()

    def peak_memory(self, device: Device, call: Call) -> int | None:
        """Not measured: the host's allocator keeps no peak a process can reset (the runner counts the
        saved activations and gradients instead)."""
        return None
