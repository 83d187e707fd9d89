"""Clocks that turn a callable into timing samples: CPU monotonic clock, CUDA events, CUDA graphs.

Each timer takes ``count`` samples of ``number`` calls and returns the seconds of each sample
(the whole block, not yet divided). The device API under the CUDA timer is an object with a
handful of methods (``TorchCuda`` is the real one), so tests drive the same loop with a fake
device clock on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from harness.timing.measurement import ClockSummary

Call = Callable[[], object]


class Monitor(Protocol):
    """Samples device clocks while timed work is queued (see ``harness.devices.monitor``)."""

    def sample(self) -> None: ...
    def summary(self) -> ClockSummary | None: ...


class SampleTimer(Protocol):
    """What the measuring loop needs from a clock."""

    name: str

    def now(self) -> float: ...                     # host seconds, monotonic (budgets)
    def sync(self) -> None: ...                     # wait for queued work
    def prepare(self, call: Call, number: int) -> None: ...
    def samples(self, call: Call, number: int, count: int) -> list[float]: ...


class CpuTimer:
    """CPU: a monotonic nanosecond clock around each block of calls.

    Args:
        clock: returns nanoseconds, monotonic (default ``time.perf_counter_ns``; tests inject a fake).
    """

    name = "perf_counter_ns"

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.clock = clock

    def now(self) -> float:
        return self.clock() * 1e-9

    def sync(self) -> None:
        pass

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
        self.api, self.mode, self.monitor, self.host_clock = api, mode, monitor, host_clock
        self.name = "cuda_graph" if mode == "graph" else "cuda_event"
        self._flush: Call | None = None
        self.flush_bytes = 0
        self._replay: Call | None = None
        if mode == "cold":
            self._flush, self.flush_bytes = api.make_flush()

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
        return {
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "allow_tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "allow_tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }

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
