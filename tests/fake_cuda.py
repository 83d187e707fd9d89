"""A fake GPU that behaves like one where timing depends on it, for tests on machines without one.

What it models (each a way the CUDA path went wrong on fakes that modelled none of it):

* an asynchronous queue: the host and the device have their own clocks. A launch costs the host
  ``launch_s``; the kernel starts on the device when both the host has issued it and the kernels
  before it are done. The device drains while the host waits (``synchronize``), and idles while
  the host is slower than the kernels (a launch-bound module);
* CUDA events that stamp the device time they are reached at, read in ticks of ``tick_s`` (0.5 us,
  ``cudaEventElapsedTime``'s resolution) from a per-process phase, and only once the host has
  passed them (``elapsed_time`` before a synchronisation raises, as torch does);
* graph capture: the captured function runs once per captured call and its kernels are recorded,
  not run; a synchronisation inside capture raises and invalidates the capture, an allocation the
  graph pool cannot serve (``capturable=False``) likewise, an out-of-memory inside capture
  invalidates it too, and ending an invalidated capture raises its own error (so the first error is
  masked unless the code keeps it); the first replay uploads the graph and costs ``upload_s`` more;
* SM clocks: kernels run at ``load_mhz`` (the software power cap on a Hopper board under tensor
  work); NVML reports the clock averaged like the driver does, over the last ``nvml_window_s`` of
  host time: below half busy it reports ``idle_mhz`` with the ``gpu_idle`` reason, else
  ``load_mhz`` with ``sw_power_cap`` (and ``hw_thermal`` when ``thermal``);
* ``torch.cuda._sleep(cycles)``: a kernel that spins ``cycles`` SM clocks;
* streams: kernels go to the current stream (or the stream ``launching_on`` names: autograd runs a
  backward op on the stream its forward op ran on); while a graph captures, a kernel on the capturing
  stream is recorded, one on the legacy default stream invalidates the capture (as
  ``cudaErrorStreamCaptureImplicit`` does), one on another stream runs eagerly, uncaptured;
* the caching allocator's counters: ``memory_allocated``, ``max_memory_allocated`` and its reset;
* several GPUs on a node, ``CUDA_VISIBLE_DEVICES`` masking some from torch but not from NVML, MIG
  instances with their own UUIDs;
* sticky errors: after ``poison()`` every later device call of the process raises, as after an
  illegal memory access.

``FakeTorchCuda`` stands for the ``torch.cuda`` module over a ``FakeNode``; ``fake_pynvml`` for
``pynvml``; ``FakeModule`` for a layer (kernels, host time, allocations, syncs).
"""

from __future__ import annotations

import contextlib
import math
import random
import types
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.backends.base import Device
from harness.backends.cuda import CudaBackend, CudaEventTimer, NvmlClockMonitor, TorchCuda, clock_monitor
from harness.devices.nvml import Nvml
from harness.timing import Measurement, measure

#: cudaEventElapsedTime's resolution ("around 0.5 microseconds", CUDA Runtime API).
TICK_S = 0.5e-6
GiB = 2**30


class FakeCudaError(RuntimeError):
    """A CUDA runtime error, as torch raises it (``RuntimeError: CUDA error: ...``)."""


class FakeOutOfMemoryError(RuntimeError):
    """torch.cuda.OutOfMemoryError: a RuntimeError whose text says out of memory."""


STICKY = "CUDA error: an illegal memory access was encountered"
CAPTURE_SYNC = "CUDA error: operation not permitted when stream is capturing"
CAPTURE_INVALIDATED = "CUDA error: operation failed due to a previous error during capture"


@dataclass
class FakeGpu:
    """One GPU's timeline as the host sees it (seconds; clocks in MHz).

    Attributes:
        launch_s: host time of one kernel launch (cudaLaunchKernel through torch).
        sync_s: host time a synchronisation costs after the device drained.
        replay_s: host time of one graph launch (cudaGraphLaunch).
        node_s: device time between two kernels of a replayed graph.
        upload_s: extra device time of a graph's first replay (the upload).
        rated_mhz: the rated (maximum) SM clock: cudaDevAttrClockRate, NVML's max clock.
        load_mhz: the SM clock kernels run at (1755: an H100 at its power cap).
        idle_mhz: the clock NVML reports once the GPU idles.
        thermal: NVML also reports hw_thermal under load.
        jitter: relative spread of kernel durations (seeded).
        tick_s, phase_s: event tick and this process's phase against it.
    """

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-11111111-2222-3333-4444-555555555555"
    sms: int = 132
    cc: tuple[int, int] = (9, 0)
    l2_bytes: int = 50 * 2**20
    memory_bytes: int = 80 * GiB
    launch_s: float = 5e-6
    sync_s: float = 5e-6
    replay_s: float = 8e-6
    node_s: float = 0.5e-6
    upload_s: float = 60e-6
    write_bytes_s: float = 2.5e12
    rated_mhz: int = 1980
    load_mhz: int = 1755
    idle_mhz: int = 345
    thermal: bool = False
    nvml_window_s: float = 1e-3
    jitter: float = 0.0
    tick_s: float = TICK_S
    phase_s: float = 0.0
    seed: int = 0
    mig: tuple[str, ...] = ()
    host: float = 0.0
    tail: float = 0.0
    launches: int = 0
    syncs: int = 0
    allocated: int = 0
    peak_allocated: int = 0
    sticky: str | None = None
    capturing: FakeGraph | None = None
    current: _Stream | None = None
    on: _Stream | None = None
    log: list[str] = field(default_factory=list)
    busy: deque = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.default = _Stream(self, "default")

    @property
    def stream(self) -> _Stream:
        """The stream a kernel launched now goes to."""
        return self.on or self.current or self.default

    # --- the queue ---------------------------------------------------------------------------------
    def check(self) -> None:
        if self.sticky is not None:
            raise FakeCudaError(self.sticky)

    def run(self, cost_s: float, what: str = "kernel") -> None:
        """Issue one kernel of ``cost_s`` device seconds (recorded instead while capturing)."""
        self.check()
        self.host += self.launch_s
        if self.capturing is not None and self.stream is self.capturing.stream:
            self.capturing.nodes.append((cost_s, what))
            return
        if self.capturing is not None and self.stream is self.default:
            self.capturing.invalid = CAPTURE_SYNC
            raise FakeCudaError(CAPTURE_SYNC)
        self._device(cost_s, what)

    def _device(self, cost_s: float, what: str) -> None:
        cost = cost_s * (1 + self.jitter * (2 * self.rng.random() - 1)) if self.jitter else cost_s
        start = max(self.host, self.tail)
        self.tail = start + cost
        self.busy.append((start, self.tail))
        self.launches += 1
        self.log.append(what)

    def sleep_cycles(self, cycles: int) -> None:
        """``torch.cuda._sleep``: a kernel spinning ``cycles`` clocks at the clock kernels run at."""
        self.run(cycles / (self.load_mhz * 1e6), "sleep")

    def reached(self) -> float:
        """Device time at which an event recorded now is reached."""
        return max(self.host, self.tail)

    def synchronize(self) -> None:
        self.check()
        if self.capturing is not None:
            self.capturing.invalid = CAPTURE_SYNC
            raise FakeCudaError(CAPTURE_SYNC)
        self.syncs += 1
        self.host = max(self.host, self.tail) + self.sync_s

    def alloc(self, nbytes: int, capturable: bool = True) -> None:
        """An allocation: out of memory past ``memory_bytes``; one the graph pool cannot serve
        (``capturable=False``: a fresh cudaMalloc, a host copy) inside capture is an error."""
        self.check()
        if self.allocated + nbytes > self.memory_bytes:
            if self.capturing is not None:
                self.capturing.invalid = "out of memory"
            raise FakeOutOfMemoryError(f"CUDA out of memory. Tried to allocate {nbytes / GiB:.2f} GiB")
        if self.capturing is not None and not capturable:
            self.capturing.invalid = CAPTURE_SYNC
            raise FakeCudaError(CAPTURE_SYNC)
        self.allocated += nbytes
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def free(self, nbytes: int) -> None:
        self.allocated -= nbytes

    def poison(self, message: str = STICKY) -> None:
        """A sticky error: every later device call of this process raises it."""
        self.sticky = message

    # --- clocks as NVML reports them -------------------------------------------------------------------
    def busy_fraction(self) -> float:
        """Share of the last ``nvml_window_s`` of host time the device spent running kernels."""
        hi = self.host
        lo = hi - self.nvml_window_s
        while self.busy and self.busy[0][1] < lo - 1.0:
            self.busy.popleft()
        covered = sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in self.busy)
        return covered / self.nvml_window_s

    def nvml_clock(self) -> int:
        return self.load_mhz if self.busy_fraction() >= 0.5 else self.idle_mhz

    def nvml_reasons(self) -> int:
        if self.busy_fraction() < 0.5:
            return 0x1                                  # gpu_idle
        return 0x4 | (0x40 if self.thermal else 0)      # sw_power_cap (+ hw_thermal)

    # --- events ------------------------------------------------------------------------------------------
    def stamp(self, t: float) -> float:
        """The event clock's reading of device time ``t``: whole ticks from this process's phase."""
        return math.floor((t + self.phase_s) / self.tick_s + 1e-9) * self.tick_s


class FakeEvent:
    """``torch.cuda.Event(enable_timing=True)`` on a fake GPU."""

    def __init__(self, gpu: FakeGpu, enable_timing: bool = True) -> None:
        self.gpu, self.t = gpu, None

    def record(self, stream: Any = None) -> None:
        self.gpu.check()
        self.t = self.gpu.reached()

    def elapsed_time(self, end: FakeEvent) -> float:
        """Milliseconds between two recorded events, in whole ticks; raises before the host passed them."""
        self.gpu.check()
        if self.t is None or end.t is None or self.gpu.host < max(self.t, end.t):
            raise FakeCudaError("CUDA error: device not ready")
        return (self.gpu.stamp(end.t) - self.gpu.stamp(self.t)) * 1e3


@dataclass
class FakeGraph:
    """``torch.cuda.CUDAGraph``: kernels recorded by a capture, replayed by one host call."""

    gpu: FakeGpu
    nodes: list[tuple[float, str]] = field(default_factory=list)
    invalid: str | None = None
    replays: int = 0
    stream: _Stream | None = None

    def replay(self) -> None:
        g = self.gpu
        g.check()
        g.host += g.replay_s
        extra = g.upload_s if self.replays == 0 else 0.0
        self.replays += 1
        total = extra + sum(cost + g.node_s for cost, _ in self.nodes)
        g._device(total, f"replay{len(self.nodes)}")


class _Stream:
    def __init__(self, gpu: FakeGpu, name: str = "side") -> None:
        self.gpu, self.name = gpu, name

    def wait_stream(self, other: _Stream) -> None:
        pass

    def synchronize(self) -> None:
        self.gpu.synchronize()


class FakeBuffer:
    """What ``torch.empty`` returns on the fake: ``zero_`` writes it at ``write_bytes_s``."""

    def __init__(self, gpu: FakeGpu, nbytes: int) -> None:
        self.gpu, self.nbytes = gpu, nbytes

    def zero_(self) -> FakeBuffer:
        self.gpu.run(self.nbytes / self.gpu.write_bytes_s, "flush")
        return self


@dataclass
class FakeNode:
    """The GPUs of one machine; ``visible`` is CUDA_VISIBLE_DEVICES (indices into ``gpus``), or
    ``None`` for all of them."""

    gpus: list[FakeGpu]
    visible: Sequence[int] | None = None

    @property
    def seen(self) -> list[FakeGpu]:
        return list(self.gpus) if self.visible is None else [self.gpus[i] for i in self.visible]

    def masked(self, cuda_visible_devices: str) -> FakeNode:
        """This node as torch sees it under ``CUDA_VISIBLE_DEVICES``: indices or UUIDs (a unique
        prefix will do), in that order; the first entry that names no GPU ends the list, as in CUDA."""
        picked: list[int] = []
        for item in (x.strip() for x in cuda_visible_devices.split(",")):
            found = [i for i, g in enumerate(self.gpus) if item.isdigit() and int(item) == i
                     or not item.isdigit() and item and g.uuid.startswith(item)]
            if len(found) != 1:
                break
            picked.append(found[0])
        return FakeNode(self.gpus, picked)


class FakeTorchCuda:
    """The parts of ``torch.cuda`` the harness calls, over a fake node."""

    OutOfMemoryError = FakeOutOfMemoryError

    def __init__(self, node: FakeNode | FakeGpu) -> None:
        self.node = node if isinstance(node, FakeNode) else FakeNode([node])
        self.current = 0

    def gpu(self, index: int | None = None) -> FakeGpu:
        return self.node.seen[self.current if index is None else index]

    # device queries
    def is_available(self) -> bool:
        return bool(self.node.seen)

    def device_count(self) -> int:
        return len(self.node.seen)

    def current_device(self) -> int:
        return self.current

    def get_device_properties(self, index: int = 0) -> Any:
        g = self.gpu(index)
        uuid = (g.mig[0] if g.mig else g.uuid).split("-", 1)[1]     # torch prints no GPU-/MIG- prefix
        return types.SimpleNamespace(name=g.name, major=g.cc[0], minor=g.cc[1], multi_processor_count=g.sms,
                                     L2_cache_size=g.l2_bytes, total_memory=g.memory_bytes, uuid=uuid,
                                     clock_rate=g.rated_mhz * 1000, memory_clock_rate=2_619_000,
                                     memory_bus_width=5120)

    def get_device_name(self, index: int = 0) -> str:
        return self.gpu(index).name

    def get_device_capability(self, index: int | None = None) -> tuple[int, int]:
        return self.gpu(index).cc

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        return self.gpu().cc >= (8, 0) or including_emulation       # torch's answer: emulation counts

    @contextlib.contextmanager
    def device(self, index: int) -> Iterator[None]:
        before, self.current = self.current, index
        try:
            yield
        finally:
            self.current = before

    # the queue
    def Event(self, enable_timing: bool = True) -> FakeEvent:  # noqa: N802 - torch's name
        return FakeEvent(self.gpu(), enable_timing)

    def synchronize(self, device: int | None = None) -> None:
        self.gpu(device).synchronize()

    def Stream(self, device: int | None = None) -> _Stream:  # noqa: N802
        return _Stream(self.gpu(device))

    def current_stream(self, device: int | None = None) -> _Stream:
        g = self.gpu(device)
        return g.current or g.default

    def default_stream(self, device: int | None = None) -> _Stream:
        return self.gpu(device).default

    @contextlib.contextmanager
    def stream(self, s: _Stream) -> Iterator[None]:
        g = s.gpu
        before, g.current = g.current, s
        try:
            yield
        finally:
            g.current = before

    # the caching allocator's counters
    def memory_allocated(self, device: int | None = None) -> int:
        return self.gpu(device).allocated

    def max_memory_allocated(self, device: int | None = None) -> int:
        return self.gpu(device).peak_allocated

    def reset_peak_memory_stats(self, device: int | None = None) -> None:
        g = self.gpu(device)
        g.peak_allocated = g.allocated

    def _sleep(self, cycles: int) -> None:
        self.gpu().sleep_cycles(cycles)

    def empty_cache(self) -> None:
        self.gpu().allocated = 0

    def empty(self, n: int, dtype: Any = None, device: Any = None) -> FakeBuffer:
        """``torch.empty`` of ``n`` 4-byte elements on the fake (the flush buffer)."""
        g = self.gpu()
        g.alloc(4 * n)
        return FakeBuffer(g, 4 * n)

    # graphs
    def CUDAGraph(self) -> FakeGraph:  # noqa: N802
        return FakeGraph(self.gpu())

    @contextlib.contextmanager
    def graph(self, graph: FakeGraph, pool: Any = None, stream: Any = None,
              capture_error_mode: str = "global") -> Iterator[None]:
        """``torch.cuda.graph``: capture begins on ``stream`` (default: a capture stream of its own),
        which is current inside the block; on exit ``capture_end`` raises if the capture was
        invalidated, replacing whatever the body raised (as cudaStreamEndCapture does in torch)."""
        g = graph.gpu
        g.synchronize()                      # torch syncs before capture begins
        graph.stream = stream if stream is not None else _Stream(g, "capture")
        before, g.current = g.current, graph.stream
        g.capturing = graph
        try:
            yield
        finally:
            g.capturing, g.current = None, before
            if graph.invalid is not None:
                raise FakeCudaError(CAPTURE_INVALIDATED)


@dataclass
class FakeModule:
    """A layer on the fake: ``host_s`` of Python, then its kernels (device seconds each), an
    optional allocation, an optional host sync (``.item()``), an optional sticky error."""

    gpu: FakeGpu
    kernels: Sequence[float] = (10e-6,)
    host_s: float = 0.0
    alloc_bytes: int = 0
    capturable: bool = True
    capture_alloc_bytes: int = 0
    syncs: bool = False
    poisons: bool = False
    calls: int = 0

    def __call__(self, *args: Any) -> None:
        self.calls += 1
        self.gpu.check()
        self.gpu.host += self.host_s
        if self.alloc_bytes:
            self.gpu.alloc(self.alloc_bytes, self.capturable)
            self.gpu.allocated -= self.alloc_bytes      # freed to the caching allocator at once
        if self.capture_alloc_bytes and self.gpu.capturing is not None:
            self.gpu.alloc(self.capture_alloc_bytes)    # the graph's private pool cannot reuse the eager cache
        for cost in self.kernels:
            self.gpu.run(cost)
        if self.poisons:
            self.gpu.poison()
        if self.syncs:
            self.gpu.synchronize()


@dataclass
class FakeAutograd:
    """A layer and its backward on the fake, with autograd's stream rule: ``forward()`` runs its
    kernels on the current stream, keeps ``saved_bytes`` allocated and returns a graph that remembers
    that stream; ``grad(graph)`` runs the backward's kernels on it (whatever stream is current),
    allocating ``grad_bytes`` for the gradients it returns, freed when the call ends."""

    gpu: FakeGpu
    forward_kernels: Sequence[float] = (10e-6,)
    backward_kernels: Sequence[float] = (20e-6, 20e-6)
    saved_bytes: int = 0
    grad_bytes: int = 0
    forwards: int = 0
    backwards: int = 0

    def forward(self) -> _Stream:
        self.forwards += 1
        for cost in self.forward_kernels:
            self.gpu.run(cost, "forward")
        self.gpu.alloc(self.saved_bytes)
        return self.gpu.stream

    def grad(self, graph: _Stream) -> None:
        self.backwards += 1
        before, self.gpu.on = self.gpu.on, graph
        try:
            self.gpu.alloc(self.grad_bytes)
            for cost in self.backward_kernels:
                self.gpu.run(cost, "backward")
            self.gpu.free(self.grad_bytes)
        finally:
            self.gpu.on = before


# --- NVML ---------------------------------------------------------------------------------------------

class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
    pass


@dataclass
class _MigHandle:
    parent: FakeGpu
    uuid: str


def fake_pynvml(node: FakeNode | FakeGpu) -> Any:
    """A ``pynvml`` over every GPU of ``node`` (CUDA_VISIBLE_DEVICES does not hide GPUs from NVML);
    clocks and reasons are read live from the fake GPUs."""
    node = node if isinstance(node, FakeNode) else FakeNode([node])
    m = types.SimpleNamespace(NVMLError=NVMLError)
    m.nvmlInit = lambda: None
    m.nvmlDeviceGetCount = lambda: len(node.gpus)
    m.nvmlDeviceGetHandleByIndex = lambda i: node.gpus[i]
    m.nvmlSystemGetDriverVersion = lambda: "570.86.15"
    m.nvmlSystemGetCudaDriverVersion = lambda: 12080

    def physical(h: Any) -> FakeGpu:
        if isinstance(h, _MigHandle):
            raise NVMLError_NotSupported("Not Supported")      # clocks are the parent GPU's
        return h

    m.nvmlDeviceGetName = lambda h: physical(h).name
    m.nvmlDeviceGetUUID = lambda h: h.uuid
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=physical(h).memory_bytes,
                                                                free=physical(h).memory_bytes, used=0)
    m.nvmlDeviceGetClockInfo = lambda h, kind: physical(h).nvml_clock() if kind == 1 else 2619
    m.nvmlDeviceGetMaxClockInfo = lambda h, kind: physical(h).rated_mhz if kind == 1 else 2619
    m.nvmlDeviceGetCurrentClocksEventReasons = lambda h: physical(h).nvml_reasons()
    m.nvmlDeviceGetCudaComputeCapability = lambda h: physical(h).cc
    m.nvmlDeviceGetMigMode = lambda h: [1 if physical(h).mig else 0] * 2
    m.nvmlDeviceGetMaxMigDeviceCount = lambda h: len(physical(h).mig)
    m.nvmlDeviceGetMigDeviceHandleByIndex = lambda h, i: _MigHandle(h, h.mig[i])
    m.nvmlDeviceGetDeviceHandleFromMigDeviceHandle = lambda h: h.parent
    return m


# --- the harness on the fake ------------------------------------------------------------------------------

def fake_backend(node: FakeNode | FakeGpu, nvml: bool = True) -> CudaBackend:
    """The CUDA backend over a fake node (``nvml=False``: NVML absent, as without a driver)."""
    cuda = FakeTorchCuda(node)
    session = Nvml(fake_pynvml(node)) if nvml else Nvml(types.SimpleNamespace(nvmlInit=_no_driver))
    return CudaBackend(cuda=cuda, empty=cuda.empty, nvml=session)


def _no_driver() -> None:
    raise NVMLError("NVML Shared Library Not Found")


def fake_device(node: FakeNode | FakeGpu, nvml: bool = True, index: int = 0) -> Device:
    """``cuda:index`` resolved by the backend over a fake node."""
    return fake_backend(node, nvml).resolve(f"cuda:{index}")


@dataclass
class Rig:
    """What one fake measurement is made of: the device, the API, the monitor and the timer, the
    timer on the fake GPU's host clock."""

    gpu: FakeGpu
    device: Device
    api: TorchCuda
    monitor: NvmlClockMonitor
    timer: CudaEventTimer


def rig(gpu: FakeGpu, mode: str = "hot", nvml: bool = True) -> Rig:
    device = fake_device(gpu, nvml)
    backend = device.backend
    api = TorchCuda(device.tensors, backend.cuda, backend.empty)
    monitor = clock_monitor(api.props.uuid, api.rated_mhz, backend.nvml)
    timer = CudaEventTimer(api, "hot" if mode == "auto" else mode, monitor, host_clock=lambda: gpu.host)
    return Rig(gpu, device, api, monitor, timer)


def measure_on(gpu: FakeGpu, fn: Callable[..., object], mode: str = "hot", **kw: Any) -> Measurement:
    """``harness.measure`` of ``fn`` on the fake GPU, its host clock the timer's clock."""
    r = rig(gpu, mode, kw.pop("nvml", True))
    kw.setdefault("warmup_s", 1e-3)
    return measure(fn, device=r.device, mode=mode, timer=r.timer, cuda_api=r.api, monitor=r.monitor, **kw)


# --- a measure_fn for calibration tests (importable in a worker process) ---------------------------------

def constant_measure(fn: Callable[..., object], **kw: Any) -> Measurement:
    """A ``measure`` that runs nothing and says every call took 1 ms (module level: a worker process
    imports it by name)."""
    return Measurement(device=str(kw.get("device")), timer="fake", mode="hot", samples_s=(1e-3,) * 10, number=1,
                       warmup_calls=0, warmup_s=0.0, estimate_s=1e-3, sampling_s=0.01, threads=1, gc_paused=True,
                       rotation=1, stop_reason="converged", target_rel_ci=0.01)
