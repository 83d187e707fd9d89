"""The CUDA backend: CUDA events (hot), an L2 flush before each call (cold), CUDA-graph replays
(graph), the SM clock measured over each trial, NVML clock-event reasons, datasheet or formula peaks.

The device operations the timer uses sit behind ``CudaApi`` (``TorchCuda`` is the real one, over a
``torch.cuda``-like module), so tests drive the same loop, capture and clock code with a fake GPU
(``tests/fake_cuda.py``) on a machine without one. Sources of each choice: docs/gpu-timing.md.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
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
from harness.devices.nvml import CLOCK_SM, GPU_IDLE, Nvml, nvml_session, reason_names
from harness.devices.peaks import Peak
from harness.errors import SpecError
from harness.layers.dtypes import parse_dtype

#: A trial whose SM clock, measured over it, is below this fraction of the rated clock is throttled
#: (NVBench: ``m_throttle_threshold{0.75f}`` in nvbench/benchmark_base.cuh, applied by
#: ``gpu_frequency::has_throttled`` in nvbench/detail/gpu_frequency.cxx).
THROTTLE_CLOCK_FRACTION = 0.75
#: Resolution of CUDA event times ("around 0.5 microseconds": cudaEventElapsedTime).
EVENT_TICK_S = 0.5e-6
#: The clock probe after each chunk: a spin kernel of this many seconds between two events (one
#: event tick is then 1 % of it), behind a spin of ``PROBE_LEAD_S`` that keeps the device busy while
#: the host launches it (the launch gap would otherwise sit inside the probe's events).
PROBE_S, PROBE_LEAD_S = 50e-6, 20e-6
#: Before the first start event of a chunk (and after each flush in cold mode) a spin kernel holds
#: the queue while the host enqueues the sample, so the device never waits on the host inside a
#: timed interval (NVBench's blocking kernel, nvbench/detail/measure_hot.cuh and
#: measure_cold_launch_timer_core.cuh). It lasts ``LEAD_UNITS`` host enqueue times of a call (or a
#: replay), within ``[LEAD_MIN_S, LEAD_MAX_S]`` (NVBench blocks the stream for 2 launches).
LEAD_UNITS, LEAD_MIN_S, LEAD_MAX_S = 2, 20e-6, 2e-3
#: Graph mode: one replay lasts at least this long, sized from a timed one-call replay
#: (triton/testing.py ``do_bench_cudagraph`` sizes its graph to ~``rep`` ms the same way).
GRAPH_REPLAY_S = 2e-3
#: Most calls captured in one graph; replays of one call timed to size it (median taken).
MAX_GRAPH_CALLS, GRAPH_TRIAL_REPLAYS = 5000, 3
#: SM clock used to turn seconds into spin cycles when the device reports none (MHz).
DEFAULT_SM_MHZ = 1500.0
#: Longest exception text a timing note keeps.
NOTE_CHARS = 200


class Event(Protocol):
    def record(self) -> None: ...
    def elapsed_time(self, end: Any) -> float: ...  # milliseconds


class CudaApi(Protocol):
    """The few device operations the CUDA timer uses (``TorchCuda`` is the real one).

    ``rated_mhz``: the rated SM clock (cudaDevAttrClockRate), ``None`` when unknown."""

    device: str
    rated_mhz: float | None

    def event(self) -> Event: ...
    def synchronize(self) -> None: ...
    def sleep(self, cycles: int) -> None: ...       # a kernel spinning ``cycles`` SM clocks
    def make_flush(self) -> tuple[Call, int]: ...    # (flush, bytes it writes)
    def capture(self, call: Call, number: int) -> Call: ...   # a replay of `number` calls
    def settings(self) -> dict[str, Any]: ...
    def scope(self, autotune: bool) -> contextlib.AbstractContextManager[None]: ...


def is_oom(error: BaseException) -> bool:
    """An out-of-memory error (torch.cuda.OutOfMemoryError, or a RuntimeError saying so)."""
    return isinstance(error, getattr(torch.cuda, "OutOfMemoryError", ())) or "out of memory" in str(error).lower()


class CaptureFailed(RuntimeError):
    """A graph capture failed for a reason other than memory: the timer falls back to hot."""


@dataclass(frozen=True, slots=True)
class _Probe:
    """A spin kernel of ``cycles`` SM clocks between two events."""

    start: Event
    end: Event
    cycles: int


def clock_mhz(probes: Iterable[_Probe]) -> float | None:
    """The SM clock over some probes: cycles spun / event seconds (NVBench's
    ``gpu_frequency::get_clock_frequency``: elapsed clocks / elapsed ns). Read after a sync."""
    cycles = seconds = 0.0
    for p in probes:
        cycles += p.cycles
        seconds += p.start.elapsed_time(p.end) * 1e-3
    return cycles / seconds / 1e6 if seconds > 0 else None


class CudaEventTimer:
    """CUDA: an event pair around each sample; device time, read after one synchronisation per chunk.

    Modes:
        ``hot``: ``number`` back-to-back launches per event pair (warm L2).
        ``cold``: before every sample (``number`` = 1) the L2 is flushed by writing a buffer of
            twice its size; the flush is enqueued before the start event, so it is not timed.
        ``graph``: calls captured once into a CUDA graph sized so that a replay lasts
            ``GRAPH_REPLAY_S``; each sample is an event pair around one replay (never the first,
            which uploads the graph). A capture that fails falls back to hot, noted in ``notes``.

    Once ``prepare`` ran, each chunk starts behind a lead spin kernel (cold: each sample) and ends
    with a clock probe whose clock goes to the monitor (``Monitor.trial``).
    """

    tick_s = EVENT_TICK_S

    def __init__(self, api: CudaApi, mode: str = "hot", monitor: Monitor | None = None,
                 host_clock: Callable[[], float] = time.perf_counter, notes: list[str] | None = None) -> None:
        self.api, self.monitor, self.host_clock = api, monitor, host_clock
        self.notes: list[str] = notes if notes is not None else []
        self._flush: Call | None = None
        self.flush_bytes = 0
        self._replay: Call | None = None
        self._one_call_s: float | None = None
        self._graph_failed = False
        self.prepared = False
        #: Host seconds to enqueue one call (one replay in graph mode), from the last chunk.
        self.host_unit_s = 0.0
        self.mode = self.name = ""
        self.use_mode(mode)

    def use_mode(self, mode: str) -> None:
        self.mode = mode
        self.name = "cuda_graph" if mode == "graph" else "cuda_event"
        if mode == "cold" and self._flush is None:
            self._flush, self.flush_bytes = self.api.make_flush()

    def now(self) -> float:
        return self.host_clock()

    def sync(self) -> None:
        self.api.synchronize()

    def prepare(self, call: Call, number: int) -> int:
        """Graph mode: capture the sample's graph, sized from a one-call replay (``number``, sized
        from the eager estimate, is kept only when the capture fails and hot mode takes over)."""
        if self.mode == "graph":
            number = self._prepare_graph(call, number)
        self.prepared = True
        return number

    def _prepare_graph(self, call: Call, number: int) -> int:
        one = self.graph_call_s(call)
        if one is None:
            self.use_mode("hot")
            return number
        n = max(1, min(MAX_GRAPH_CALLS, math.ceil(GRAPH_REPLAY_S / one) if one > 0 else MAX_GRAPH_CALLS))
        try:
            self._replay = self._capture(call, n)
        except CaptureFailed as e:
            self.notes.append(str(e))
            self.use_mode("hot")
            return number
        return n

    def graph_call_s(self, call: Call) -> float | None:
        """Device seconds of one call replayed from a graph: captured alone, replayed once untimed
        (the first replay uploads the graph), then the median of ``GRAPH_TRIAL_REPLAYS`` replays,
        each behind a lead kernel. ``None`` when the capture fails (the reason goes to ``notes``)."""
        if self._one_call_s is None and not self._graph_failed:
            try:
                replay = self._capture(call, 1)
            except CaptureFailed as e:
                self._graph_failed = True
                self.notes.append(str(e))
                return None
            saved = self._replay, self.prepared, self._flush, self.host_unit_s
            self._replay, self.prepared, self._flush = replay, True, None
            try:
                times = sorted(self.samples(call, 1, GRAPH_TRIAL_REPLAYS))
            finally:
                self._replay, self.prepared, self._flush, self.host_unit_s = saved
            self._one_call_s = times[len(times) // 2]
        return self._one_call_s

    def _capture(self, call: Call, number: int) -> Call:
        """A replay of ``number`` calls, replayed once untimed (the upload; do_bench_cudagraph and
        Inductor's benchmarker synchronise before they time a replay). An out-of-memory error is
        raised as it is; any other capture error becomes ``CaptureFailed`` (Inductor,
        torch/_inductor/runtime/benchmarking.py, falls back to eager timing on a failed capture)."""
        try:
            replay = self.api.capture(call, number)
        except Exception as e:
            if is_oom(e):
                raise
            why = f"{type(e).__name__}: {e}"[:NOTE_CHARS]
            raise CaptureFailed(f"graph capture failed ({why}); timed hot") from e
        t0 = self.host_clock()
        replay()
        self.host_unit_s = self.host_clock() - t0
        self.api.synchronize()
        return replay

    def samples(self, call: Call, number: int, count: int) -> list[float]:
        pairs = []
        host = 0.0
        for i in range(count):
            if self._flush is not None:
                self._flush()
            if self.prepared and (i == 0 or self._flush is not None):
                self._spin(self._lead_s())
            start, end = self.api.event(), self.api.event()
            t0 = self.host_clock()
            start.record()
            self._launch(call, number)
            end.record()
            host += self.host_clock() - t0
            pairs.append((start, end))
        probe = self._probe() if self.prepared else None
        if self.monitor is not None:
            self.monitor.sample()       # while the chunk is still queued on the device
        self.api.synchronize()
        self.host_unit_s = host / (count * (1 if self._replay is not None else number))
        mhz = clock_mhz([probe]) if probe is not None else None
        if mhz is not None and self.monitor is not None:
            self.monitor.trial(mhz)
        return [s.elapsed_time(e) * 1e-3 for s, e in pairs]

    def _launch(self, call: Call, number: int) -> None:
        if self._replay is not None:
            self._replay()
        else:
            for _ in range(number):
                call()

    def _lead_s(self) -> float:
        return min(LEAD_MAX_S, max(LEAD_MIN_S, LEAD_UNITS * self.host_unit_s))

    def _cycles(self, seconds: float) -> int:
        return max(1, round(seconds * (self.api.rated_mhz or DEFAULT_SM_MHZ) * 1e6))

    def _spin(self, seconds: float) -> None:
        """A kernel spinning about ``seconds`` at the rated clock (``torch.cuda._sleep``)."""
        self.api.sleep(self._cycles(seconds))

    def _probe(self) -> _Probe:
        """The clock probe: a spin of ``PROBE_S`` between two events, queued behind a spin of
        ``PROBE_LEAD_S`` so that the device is busy from its start event on."""
        self._spin(PROBE_LEAD_S)
        start, end = self.api.event(), self.api.event()
        cycles = self._cycles(PROBE_S)
        start.record()
        self.api.sleep(cycles)
        end.record()
        return _Probe(start, end, cycles)


class TorchCuda:
    """``CudaApi`` over ``torch.cuda`` (or a module like it: ``cuda``) for one device; ``empty`` makes
    the flush buffer (``torch.empty``)."""

    def __init__(self, device: str | torch.device = "cuda", cuda: Any = None,
                 empty: Callable[..., Any] | None = None) -> None:
        self.cuda = cuda if cuda is not None else torch.cuda
        self.empty = empty if empty is not None else torch.empty
        dev = torch.device(device)
        self.index = dev.index if dev.index is not None else self.cuda.current_device()
        self.device = f"cuda:{self.index}"
        self.props = self.cuda.get_device_properties(self.index)
        # kHz: cudaDevAttrClockRate, the default SM clock NVBench judges throttling by (nvbench/device_info.cu)
        rate = getattr(self.props, "clock_rate", 0) or 0
        self.rated_mhz: float | None = rate / 1000 if rate else None

    def event(self) -> Event:
        return self.cuda.Event(enable_timing=True)

    def synchronize(self) -> None:
        self.cuda.synchronize(self.index)

    def sleep(self, cycles: int) -> None:
        self.cuda._sleep(cycles)

    def l2_bytes(self) -> int:
        """L2 size from the device properties (torch >= 2.5); 50 MiB (H100's) when unknown."""
        return int(getattr(self.props, "L2_cache_size", 0) or 50 * 2**20)

    def make_flush(self) -> tuple[Call, int]:
        nbytes = 2 * self.l2_bytes()
        buf = self.empty(nbytes // 4, dtype=torch.int32, device=self.device)
        return buf.zero_, nbytes

    def capture(self, call: Call, number: int) -> Call:
        """``number`` calls captured in one graph after a warm-up on a side stream (torch/cuda/graphs.py).
        On a stream of a pass's own (``CudaBackend.pass_scope``: a backward whose forward ran there)
        the warm-up and the capture use that stream: autograd runs each backward op on the stream its
        forward op ran on, and a capture records only the capturing stream's work (the legacy default
        stream cannot join one), as ``torch.cuda.make_graphed_callables`` captures a backward on the
        stream of its forward. The body's own error is raised, not the one ending an invalidated
        capture raises over it (an out-of-memory inside capture is then reported as out of memory)."""
        current = self.cuda.current_stream(self.index)
        own = current != self.cuda.default_stream(self.index)
        side = current if own else self.cuda.Stream(self.index)
        side.wait_stream(current)
        with self.cuda.stream(side):
            for _ in range(3):
                call()
        current.wait_stream(side)
        graph = self.cuda.CUDAGraph()
        first: list[BaseException] = []
        try:
            with self.cuda.graph(graph, **({"stream": side} if own else {})):
                try:
                    for _ in range(number):
                        call()
                except BaseException as e:
                    first.append(e)
                    raise
        except Exception as e:
            if first and first[0] is not e:
                raise first[0] from e
            raise
        return graph.replay

    def settings(self) -> dict[str, Any]:
        return cuda_settings()

    @contextlib.contextmanager
    def scope(self, autotune: bool) -> Iterator[None]:
        """This device current, and ``cudnn.benchmark = autotune`` (restored on exit)."""
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = autotune
        try:
            with self.cuda.device(self.index):
                yield
        finally:
            torch.backends.cudnn.benchmark = before


# --- TF32 switches ------------------------------------------------------------------------------------

def _inherit(*levels: str | None) -> str:
    """The first precision set along a chain of ``fp32_precision`` levels ("none" inherits)."""
    return next((v for v in levels if v and v != "none"), "ieee")


def fp32_precisions() -> tuple[str, str] | None:
    """(cuBLAS matmul, cuDNN conv) fp32 precision (``ieee``, ``tf32``) through the
    ``fp32_precision`` API of torch 2.9+, or ``None`` on a torch without it. Once anything set that
    API, reading the legacy ``allow_tf32`` flags or ``get_float32_matmul_precision`` raises."""
    b = torch.backends
    matmul = getattr(b.cuda.matmul, "fp32_precision", None)
    cudnn = getattr(b.cudnn, "conv", None)
    if matmul is None or cudnn is None:
        return None
    root = getattr(b, "fp32_precision", "none")
    return _inherit(matmul, root), _inherit(cudnn.fp32_precision, getattr(b.cudnn, "fp32_precision", "none"), root)


def cuda_settings() -> dict[str, Any]:
    """The process-wide CUDA math settings a row is timed under."""
    new = fp32_precisions()
    if new is None:
        return {"cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
                "allow_tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                "allow_tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
                "float32_matmul_precision": torch.get_float32_matmul_precision()}
    matmul, conv = new
    return {"cudnn_benchmark": bool(torch.backends.cudnn.benchmark), "allow_tf32_matmul": matmul == "tf32",
            "allow_tf32_cudnn": conv == "tf32",
            "float32_matmul_precision": {"tf32": "high", "bf16": "medium"}.get(matmul, "highest")}


@contextlib.contextmanager
def matmul_tf32(allowed: bool) -> Iterator[None]:
    """cuBLAS TF32 allowed or not inside the block, through the API the running torch has."""
    m = torch.backends.cuda.matmul
    new = fp32_precisions() is not None
    before = m.fp32_precision if new else m.allow_tf32
    if new:
        m.fp32_precision = "tf32" if allowed else "ieee"
    else:
        m.allow_tf32 = allowed
    try:
        yield
    finally:
        if new:
            m.fp32_precision = before
        else:
            m.allow_tf32 = before


# --- clocks (a probe per trial) and clock-event reasons (NVML) -------------------------------------------

class NvmlClockMonitor:
    """The SM clock measured over each trial (``trial``), and NVML's clock and clock-event reasons
    sampled while timed work was queued (``sample``).

    The verdict follows NVBench: a row is throttled when a trial's clock is under
    ``THROTTLE_CLOCK_FRACTION`` of the rated clock. Reasons (the software power cap a Hopper board
    sits at under tensor work, thermal slowdown) are recorded, not judged; an NVML sample taken while
    the GPU idled (``gpu_idle``) says nothing of a trial's clock and is not used as one.

    Args:
        nvml, handle: the NVML session and device, or ``None`` (no NVML data: reasons stay empty).
        rated_mhz: the rated SM clock when NVML reports no maximum.
    """

    def __init__(self, nvml: Nvml | None, handle: Any, rated_mhz: float | None = None) -> None:
        self.nvml, self.handle = (nvml, handle) if handle is not None else (None, None)
        limit = self.nvml.query("nvmlDeviceGetMaxClockInfo", handle, CLOCK_SM) if self.nvml is not None else None
        self.limit_mhz: int | None = int(limit) if limit else (round(rated_mhz) if rated_mhz else None)
        self.busy_clocks: list[int] = []
        self.trials: list[float] = []
        self.mask = 0
        self.count = 0

    def sample(self) -> None:
        self.count += 1
        if self.nvml is None:
            return
        clock = self.nvml.query("nvmlDeviceGetClockInfo", self.handle, CLOCK_SM)
        mask = self.nvml.clock_reasons(self.handle)
        if mask is not None:
            self.mask |= mask & ~GPU_IDLE
        if clock is not None and not (mask or 0) & GPU_IDLE:
            self.busy_clocks.append(int(clock))

    def trial(self, mhz: float) -> None:
        self.trials.append(mhz)

    def summary(self) -> ClockSummary | None:
        if self.count == 0 and not self.trials:
            return None
        clocks, source = ([round(c) for c in self.trials], "trial") if self.trials else (self.busy_clocks, "nvml")
        lo = min(clocks, default=None)
        slow = lo is not None and self.limit_mhz is not None and lo < THROTTLE_CLOCK_FRACTION * self.limit_mhz
        return ClockSummary(samples=max(self.count, len(self.trials)), sm_clock_min_mhz=lo,
                            sm_clock_max_mhz=max(clocks, default=None), sm_clock_limit_mhz=self.limit_mhz,
                            reasons_mask=self.mask, reasons=reason_names(self.mask), throttled=slow, source=source)


def nvml_handle(nvml: Nvml, uuid: object | None) -> Any:
    """The NVML handle of the GPU torch's device is on: the GPU with that UUID, or the GPU a MIG
    instance with that UUID lives on. ``None`` when nothing matches: NVML's order ignores
    CUDA_VISIBLE_DEVICES and MIG, so an index would be a guess and its clocks another GPU's."""
    return nvml.handle_for_uuid(uuid) if uuid is not None else None


def clock_monitor(uuid: object | None, rated_mhz: float | None, nvml: Nvml | None = None) -> NvmlClockMonitor:
    """The monitor of the device with ``uuid``: NVML reasons when NVML finds it, trial clocks always."""
    nvml = nvml if nvml is not None else nvml_session()
    handle = nvml_handle(nvml, uuid) if nvml.ok else None
    return NvmlClockMonitor(nvml if handle is not None else None, handle, rated_mhz)


def gpu_memory_levels(l2_bytes: int, main_memory: str = "HBM") -> tuple[MemoryLevel, ...]:
    """The levels calibration measures on a GPU: L2 (when its size is known) and device memory."""
    l2 = (MemoryLevel("L2", l2_bytes, False, l2_bytes),) if l2_bytes > 0 else ()
    return l2 + (MemoryLevel(main_memory, None),)


# --- the backend ----------------------------------------------------------------------------------------

class CudaBackend:
    """``Backend`` for ``cuda``.

    Args:
        cuda: the ``torch.cuda`` module or a fake of it (tests); default ``torch.cuda``.
        empty: ``torch.empty`` or a fake's (the cold-mode flush buffer).
        nvml: an NVML session (tests pass a fake); default the process's.
    """

    type = "cuda"
    modes = ("hot", "cold", "graph")
    #: Host cost of one kernel launch (cudaLaunchKernel through torch: about 5 us).
    launch_overhead_s = 5e-6
    #: Seconds per sample block in hot mode (event resolution about 0.5 us).
    block_s = 2e-4
    calibration = CalibrationSizes(gemm_sizes=(1024, 2048, 3072, 4096, 6144, 8192), copy_fallback_bytes=2**30,
                                   buffer_cap_bytes=2**30, one_thread_gemm=False)
    main_memory = "HBM"
    host = False
    accelerator = True
    traces_onednn = False
    variants: dict[str, tuple[str, ...]] = {"fp32": ("tf32",)}

    def __init__(self, cuda: Any = None, empty: Callable[..., Any] | None = None, nvml: Nvml | None = None) -> None:
        self._cuda, self.empty, self.nvml = cuda, empty, nvml      # None: the real ones (picklable)

    @property
    def cuda(self) -> Any:
        return self._cuda if self._cuda is not None else torch.cuda

    def available(self) -> bool:
        return self.cuda.is_available()

    def resolve(self, spec: str) -> Device:
        """``cuda`` (the current device) or ``cuda:N``: its name and L2 size from torch."""
        if not self.available():
            raise SpecError("--device", spec, "a CUDA device, but torch sees none on this machine")
        try:
            dev = torch.device(spec)
        except (RuntimeError, TypeError):
            raise SpecError("--device", spec, "cuda or cuda:N") from None
        cuda = self.cuda
        index = dev.index if dev.index is not None else cuda.current_device()
        if not 0 <= index < cuda.device_count():
            raise SpecError("--device", spec, f"cuda:0 to cuda:{cuda.device_count() - 1}")
        props = cuda.get_device_properties(index)
        return Device(type=self.type, index=index, name=cuda.get_device_name(index),
                      main_memory=self.main_memory, modes=self.modes, host=self.host, tensors=f"cuda:{index}",
                      llc_bytes=int(getattr(props, "L2_cache_size", 0) or 0), backend=self)

    @contextlib.contextmanager
    def timing(self, device: Device, mode: str, autotune: bool, *, timer: SampleTimer | None = None,
               api: Any = None, monitor: Monitor | None = None) -> Iterator[TimingContext]:
        if mode not in self.modes + ("auto",):
            raise SpecError("mode", mode, "one of " + ", ".join(self.modes + ("auto",)))
        api = api if api is not None else TorchCuda(device.tensors, self._cuda, self.empty)
        if monitor is None:
            monitor = clock_monitor(getattr(getattr(api, "props", None), "uuid", None),
                                    getattr(api, "rated_mhz", None), self.nvml)
        with api.scope(autotune):
            t = timer or CudaEventTimer(api, "hot" if mode == "auto" else mode, monitor)
            settings = dict(api.settings())
            settings["l2_flush_bytes"] = getattr(t, "flush_bytes", 0)
            yield TimingContext(timer=t, device=api.device, block_s=self.block_s, chunked=True, settings=settings,
                                monitor=monitor, tick_s=getattr(t, "tick_s", EVENT_TICK_S),
                                notes=getattr(t, "notes", []))

    def synchronize(self, device: Device) -> None:
        self.cuda.synchronize(device.index)

    def is_oom(self, error: BaseException) -> bool:
        return is_oom(error)

    def after_oom(self, device: Device) -> None:
        self.cuda.empty_cache()

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
        return next((g for g in describe_gpus(self.nvml, self._cuda).gpus if g.index == device.index), None)

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
        """bf16 needs compute capability 8.0 on the measured device (``is_bf16_supported`` asks the
        current device and counts emulation, which would time a software bf16)."""
        if dtype == "bf16" and tuple(self.cuda.get_device_capability(device.index)) < (8, 0):
            return "a dtype this GPU runs (no bf16 before compute capability 8.0)"
        return None

    def settings(self, device: Device) -> dict[str, Any]:
        return cuda_settings()

    @contextlib.contextmanager
    def gemm_dtype(self, dtype: str) -> Iterator[Any]:
        """The torch dtype of a calibration GEMM of ``dtype``, with cuBLAS TF32 allowed for
        ``tf32`` alone (fp32 operands, tensor-core math) and restored after."""
        with matmul_tf32(dtype == "tf32"):
            yield torch.float32 if dtype == "tf32" else parse_dtype(dtype)

    def ceiling_key(self, device: Device, threads: int, software: Any) -> dict[str, Any]:
        """A GPU's ceilings depend on its cuDNN and driver, not on host threads."""
        return {"cudnn": software.cudnn, "driver": software.driver}

    @contextlib.contextmanager
    def pass_scope(self, device: Device, pass_: str) -> Iterator[None]:
        """A pass with a backward runs on a stream of its own, from its forward graphs to its timing, so
        that graph mode captures the backward (``TorchCuda.capture``); the forward as it always ran."""
        if pass_ == "forward":
            yield
            return
        cuda = self.cuda
        with cuda.device(device.index):
            stream = cuda.Stream(device.index)
            stream.wait_stream(cuda.current_stream(device.index))
            with cuda.stream(stream):
                yield
            cuda.current_stream(device.index).wait_stream(stream)

    def peak_memory(self, device: Device, call: Call) -> int | None:
        """``max_memory_allocated`` over one ``call`` less what was allocated before it (bytes)."""
        cuda, index = self.cuda, device.index
        cuda.synchronize(index)
        before = cuda.memory_allocated(index)
        cuda.reset_peak_memory_stats(index)
        call()
        cuda.synchronize(index)
        return max(0, int(cuda.max_memory_allocated(index)) - int(before))
