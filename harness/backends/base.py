"""What a device backend provides, and the small protocols the measuring loop talks to.

A backend is one device type (``cpu``, ``cuda``; XPU or MPS would be more) behind one interface:
its clock and timer primitives, synchronisation, cache flush, graph capture, the exception that
means out-of-memory, the profiler activity that sees its kernels, its clock monitor, where its
theoretical peaks come from, the sizes calibration uses and its per-launch overhead. A device is
resolved once into a ``Device`` value; ``measure``, the runner, calibration and "what ran" take
every device fact from it and its backend; nothing else branches on the device type. Adding a
backend is a new module that registers an instance (``harness.backends.register``) plus, for GPUs,
datasheet rows (``harness.devices.peaks``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.devices.peaks import Peak

Call = Callable[[], object]


@dataclass(frozen=True, slots=True)
class ClockSummary:
    """Device clock over the timed work and the clock-event reasons seen while it was queued.

    ``sm_clock_min_mhz``/``sm_clock_max_mhz`` are the slowest and fastest clock measured over a
    trial (``source="trial"``: cycles of a spin kernel over event time, one per chunk of samples),
    else the clocks NVML reported while the device was busy (``source="nvml"``). ``throttled`` is
    true when a trial's clock fell below the backend's threshold of the rated clock (NVBench's
    rule, ``nvbench/detail/gpu_frequency.cxx``); reasons such as the software power cap are
    recorded in ``reasons`` without making a row throttled.
    """

    samples: int
    sm_clock_min_mhz: int | None
    sm_clock_max_mhz: int | None
    sm_clock_limit_mhz: int | None
    reasons_mask: int
    reasons: tuple[str, ...]
    throttled: bool
    source: str = "nvml"


class Monitor(Protocol):
    """Samples device clocks while timed work is queued (``sample``) and takes the clock measured
    over each trial (``trial``, MHz)."""

    def sample(self) -> None: ...
    def trial(self, mhz: float) -> None: ...
    def summary(self) -> ClockSummary | None: ...


class SampleTimer(Protocol):
    """What the measuring loop needs from a clock: ``samples`` returns the seconds of each of
    ``count`` blocks of ``number`` calls (the whole block, not yet divided)."""

    name: str
    mode: str

    def now(self) -> float: ...                     # host seconds, monotonic (budgets)
    def sync(self) -> None: ...                     # wait for queued work
    def use_mode(self, mode: str) -> None: ...      # ``auto`` settles on a mode after the estimate
    def prepare(self, call: Call, number: int) -> int | None: ...   # the calls per sample it settled on
    def samples(self, call: Call, number: int, count: int) -> list[float]: ...


@dataclass(slots=True)
class TimingContext:
    """What a backend hands the measuring loop for one measurement.

    Attributes:
        timer: the clock.
        device: the resolved device (``cpu``, ``cuda:0``).
        block_s: default seconds per sample block (clock resolution and overhead amortised).
        chunked: samples are enqueued asynchronously and read after one sync per chunk (GPUs).
        settings: backend flags in force (cudnn autotuning, TF32 switches, flush bytes, ...).
        monitor: the clock monitor, or ``None``.
        tick_s: the clock's resolution (CUDA events: 0.5 us); 0 when negligible.
        notes: what the timer had to do differently (a graph capture that failed and was timed hot).
    """

    timer: SampleTimer
    device: str
    block_s: float
    chunked: bool
    settings: dict[str, Any] = field(default_factory=dict)
    monitor: Monitor | None = None
    tick_s: float = 0.0
    notes: list[str] = field(default_factory=list)


class GraphTrial(Protocol):
    """A timer that can replay a one-call graph (``auto`` mode compares it with eager calls)."""

    def graph_call_s(self, call: Call) -> float | None: ...


@dataclass(frozen=True, slots=True)
class CalibrationSizes:
    """What calibration sweeps and sizes (``harness.ceilings.calibrate``).

    Attributes:
        gemm_sizes: GEMM sides n, small to large, swept per dtype until larger sizes stop improving.
        copy_fallback_bytes: main-memory buffer when the last-level cache is unknown.
        buffer_cap_bytes: no calibration buffer is larger (main memory: ``4 x`` the last level, capped).
        one_thread_gemm: also time a one-thread fp32 GEMM (CPU: the effective clock).
    """

    gemm_sizes: tuple[int, ...]
    copy_fallback_bytes: int
    buffer_cap_bytes: int
    one_thread_gemm: bool


@dataclass(frozen=True, slots=True)
class MemoryLevel:
    """One level of the memory hierarchy, as calibration sizes buffers for it.

    Attributes:
        name: ``L1``, ``L2``, ``L3`` (caches), ``DRAM`` or ``HBM`` (main memory, last).
        cache_bytes: one instance as used (capped, ``harness.devices.cpu.check_caches``); ``None``
            for main memory.
        private: one instance per core (CPU L1/L2): ``threads`` cores hold ``threads`` instances.
        reported_bytes: one instance as the device reports it.
    """

    name: str
    cache_bytes: int | None
    private: bool = False
    reported_bytes: int | None = None

    def capacity(self, threads: int) -> int | None:
        """Bytes a working set spread over ``threads`` threads may take and still sit in this level."""
        if self.cache_bytes is None:
            return None
        return self.cache_bytes * (max(1, threads) if self.private else 1)


@dataclass(frozen=True, slots=True)
class Device:
    """One device a run measures on, resolved once (``harness.backends.resolve_device``) and carried
    everywhere after: through the run context, the worker jobs, ``measure``, what-ran and into every
    row. Nothing downstream asks a device string what it is: it asks this value (or the row's stored
    columns, which come from it).

    Attributes:
        type: the backend's type (``cpu``, ``cuda``): the row's ``device_type``.
        index: the device's index (``cuda:1`` -> 1), ``None`` for a device of one (the host CPU).
        name: what the device calls itself (CPU brand, GPU name): the row's ``device_name``.
        main_memory: the level past its caches (``DRAM``, ``HBM``): names the main-memory roof.
        modes: timing modes its backend supports (``hot``; GPUs also ``cold`` and ``graph``).
        host: the device is the host CPU (rows then name it by the machine, whose label says more).
        tensors: where its tensors live, as torch spells it (``cpu``, ``cuda:0``).
        llc_bytes: its last-level cache as used (the input rotation spans twice this).
        backend: the backend object (kept out of equality and repr).
    """

    type: str
    index: int | None
    name: str
    main_memory: str
    modes: tuple[str, ...]
    host: bool
    tensors: str
    llc_bytes: int = 0
    backend: Any = field(default=None, compare=False, repr=False)

    @property
    def spec(self) -> str:
        """``cpu``, ``cuda:0``: the row's ``device`` column and the run's device."""
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __str__(self) -> str:
        return self.spec


class Backend(Protocol):
    """One device type. Every member is what a new backend must provide (docs/backends.md).

    Attributes:
        type: the device type it serves (``cpu``, ``cuda``): a device spec's part before ``:``.
        modes: timing modes it supports (``hot``; GPUs also ``cold`` and ``graph``).
        launch_overhead_s: host cost of one launch (CUDA kernel) or dispatched op (CPU), seconds;
            stored per row, it sets the analysis' launch floor.
        calibration: sizes ``layerbench calibrate`` uses.
        main_memory: name of the level past the caches (``DRAM``, ``HBM``).
        host: its device is the host CPU (host load matters to its rows; rows name it by the machine).
        accelerator: a device a scheduler places one task on (Ray ``num_gpus``); its tasks get the
            bare type and the device the scheduler made visible.
        traces_onednn: one profiled call also records the oneDNN primitives it executed.
        variants: peak dtypes a run of a dtype also needs (CUDA: ``tf32`` beside ``fp32``, fp32
            operands on tensor cores); ``with_variants`` applies them.

    ``pass_scope(device, pass_)`` is where a pass is prepared, timed and profiled: a backward's forward
    graphs are made inside it, so that its timer can capture the backward (CUDA: a stream of its own;
    autograd runs each backward op on its forward op's stream). ``peak_memory(device, call)`` is the
    memory ``call`` allocates at its peak beyond what was allocated before it, in bytes, or ``None``
    where the device's allocator cannot say (the host CPU: the runner counts it instead).
    """

    type: str
    modes: tuple[str, ...]
    launch_overhead_s: float
    calibration: CalibrationSizes
    main_memory: str
    host: bool
    accelerator: bool
    traces_onednn: bool
    variants: dict[str, tuple[str, ...]]

    def available(self) -> bool: ...
    def resolve(self, spec: str) -> Device: ...
    def timing(self, device: Device, mode: str, autotune: bool, *, timer: SampleTimer | None = None,
               api: Any = None, monitor: Monitor | None = None
               ) -> contextlib.AbstractContextManager[TimingContext]: ...
    def synchronize(self, device: Device) -> None: ...
    def is_oom(self, error: BaseException) -> bool: ...
    def after_oom(self, device: Device) -> None: ...
    def profiler_activities(self) -> list[Any]: ...
    def device_kernels(self, events: Iterable[Any]) -> tuple[dict[str, float], int] | None: ...
    def peak(self, device: Device, dtype: str, threads: int | None,
             one_thread_flops_s: float | None = None, clock_mhz: float | None = None) -> Peak | None: ...
    def peak_dtype(self, layer: str, dtype: str, settings: Mapping[str, Any]) -> str: ...
    def memory_levels(self, device: Device) -> tuple[MemoryLevel, ...]: ...
    def dtype_problem(self, device: Device, dtype: str) -> str | None: ...
    def settings(self, device: Device) -> dict[str, Any]: ...
    def gemm_dtype(self, dtype: str) -> contextlib.AbstractContextManager[Any]: ...
    def ceiling_key(self, device: Device, threads: int, software: Any) -> dict[str, Any]: ...
    def pass_scope(self, device: Device, pass_: str) -> contextlib.AbstractContextManager[None]: ...
    def peak_memory(self, device: Device, call: Call) -> int | None: ...


def with_variants(backend: Backend, dtypes: Iterable[str]) -> list[str]:
    """``dtypes`` and, after each, the variants the backend measures beside it, once each."""
    out: list[str] = []
    for d in dtypes:
        out += [d, *backend.variants.get(d, ())]
    return list(dict.fromkeys(out))
