"""``harness.measure``: time a callable on a device and return a Measurement of raw samples.

The loop (same for every clock):
1. warm-up: call until ``warmup_s`` has passed and at least ``MIN_WARMUP_CALLS`` were made
   (module loading, allocator growth, cuDNN autotuning happen here);
2. estimate the per-call time from a few single-call samples;
3. size a sample: ``number`` calls so that a block lasts ``block_s`` (1 call in cold mode);
4. take samples until the stopping rule says stop (default: the median's 95 % CI within 1 %,
   at least 10 samples, or the time budget spent).
Garbage collection is paused and the thread count fixed for the whole of it.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from harness.errors import SpecError
from harness.timing.measurement import Measurement
from harness.timing.stopping import RelativeCI, StoppingRule
from harness.timing.timers import CpuTimer, CudaApi, CudaEventTimer, Monitor, SampleTimer

MODES = ("hot", "cold", "graph", "auto")
#: ``auto`` mode on CUDA: calls estimated shorter than this are timed as CUDA-graph replays (launch
#: overhead, a few microseconds, would otherwise dominate them); longer ones hot.
GRAPH_BELOW_S = 20e-6
#: Warm-up always makes at least this many calls, whatever ``warmup_s``.
MIN_WARMUP_CALLS = 2
#: Single-call samples taken after warm-up to estimate the per-call time.
ESTIMATE_CALLS = 3
#: Default seconds per sample block: CPU (clock overhead ~50 ns is then < 1e-4 of a block);
#: CUDA hot and graph (event resolution ~0.5 us).
CPU_BLOCK_S, CUDA_BLOCK_S = 1e-3, 2e-4
#: Most calls in one sample (CPU/hot) and in one captured graph.
MAX_NUMBER, MAX_GRAPH_CALLS = 1_000_000, 1000
#: CUDA: samples are enqueued in chunks of about this many seconds between synchronisations.
CHUNK_S, MAX_CHUNK = 0.01, 100


def measure(fn: Callable[..., object], *, device: str | torch.device = "cpu",
            inputs: Sequence[Sequence[Any]] | None = None, mode: str = "hot", threads: int | None = None,
            warmup_s: float = 0.1, target_rel_ci: float = 0.01,
            min_reps: int = 10, min_time_s: float = 0.0, budget_s: float = 2.0, max_reps: int = 100_000,
            block_s: float | None = None,
            cudnn_benchmark: bool = True, rule: StoppingRule | None = None, timer: SampleTimer | None = None,
            cuda_api: CudaApi | None = None, monitor: Monitor | None = None) -> Measurement:
    """Time ``fn`` on ``device``; return every sample and the conditions they were taken under.

    Args:
        fn: the work to time. Called with no arguments, or with one of ``inputs`` per call.
        device: ``cpu`` or ``cuda[:N]`` (where ``fn``'s tensors live).
        inputs: argument tuples to rotate through, one per call, so that a small op is not timed
            from cache alone (make them with ``harness.timing.random_inputs``).
        mode: ``hot``; on CUDA also ``cold`` (L2 flushed before every call, untimed),
            ``graph`` (calls captured in a CUDA graph and replayed: launch overhead removed) or
            ``auto`` (graph for calls estimated under ``GRAPH_BELOW_S``, hot otherwise; hot on CPU).
        threads: ``torch.set_num_threads`` for the measurement (restored after); default: as is.
        warmup_s: seconds of warm-up calls (at least ``MIN_WARMUP_CALLS``).
        target_rel_ci, min_reps, min_time_s, budget_s, max_reps: the default stopping rule
            (``RelativeCI``): stop when the median's 95 % CI is within ``target_rel_ci`` after at
            least ``min_reps`` samples and ``min_time_s`` seconds, or when ``budget_s`` is spent.
        block_s: seconds per sample block (default ``CPU_BLOCK_S`` / ``CUDA_BLOCK_S``).
        cudnn_benchmark: ``torch.backends.cudnn.benchmark`` during warm-up and timing (CUDA).
        rule: a stopping rule replacing the default one.
        timer, cuda_api, monitor: injection seams (tests use fake clocks and devices).

    Returns:
        A ``Measurement``: ``samples_s`` in seconds per call and ``stats`` computed from them.
    """
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise SpecError("device", str(device), "cpu or cuda[:N]")
    if mode not in MODES:
        raise SpecError("mode", mode, "one of " + ", ".join(MODES))
    if dev.type == "cpu" and mode == "auto":
        mode = "hot"
    if dev.type == "cpu" and mode != "hot":
        raise SpecError("mode", mode, "hot on cpu (cold and graph are CUDA modes; rotate inputs instead)")
    if threads is not None and threads < 1:
        raise SpecError("threads", threads, "an integer >= 1")
    if warmup_s < 0:
        raise SpecError("warmup_s", warmup_s, "seconds >= 0")
    if inputs is not None and len(inputs) == 0:
        raise SpecError("inputs", inputs, "at least one argument tuple")
    rule = rule or RelativeCI(target=target_rel_ci, min_reps=min_reps, min_time_s=min_time_s, budget_s=budget_s,
                              max_reps=max_reps)
    call = _rotating(fn, inputs)
    settings: dict[str, Any] = {}

    with _threads(threads), _gc_paused() as paused, contextlib.ExitStack() as stack:
        if dev.type == "cuda":
            if cuda_api is None:
                from harness.timing.timers import TorchCuda
                cuda_api = TorchCuda(dev)
            if monitor is None:
                from harness.devices.monitor import clock_monitor
                monitor = clock_monitor(cuda_api.device)
            stack.enter_context(cuda_api.scope(cudnn_benchmark))
            cuda_timer = timer or CudaEventTimer(cuda_api, "hot" if mode == "auto" else mode, monitor)
            timer = cuda_timer
            settings.update(cuda_api.settings())
            settings["l2_flush_bytes"] = getattr(cuda_timer, "flush_bytes", 0)
            device_name = cuda_api.device
            block = CUDA_BLOCK_S if block_s is None else block_s
        else:
            timer = timer or CpuTimer()
            device_name = "cpu"
            block = CPU_BLOCK_S if block_s is None else block_s

        # 1. warm-up
        t0 = timer.now()
        warm_calls = 0
        while warm_calls < MIN_WARMUP_CALLS or timer.now() - t0 < warmup_s:
            call()
            timer.sync()
            warm_calls += 1
        # 2. estimate
        est = sorted(timer.samples(call, 1, ESTIMATE_CALLS))[ESTIMATE_CALLS // 2]
        warmup_spent = timer.now() - t0
        # 3. size (auto: graph replays for calls under GRAPH_BELOW_S, else hot)
        if mode == "auto":
            mode = "graph" if est < GRAPH_BELOW_S else "hot"
            if isinstance(timer, CudaEventTimer):
                timer.mode, timer.name = mode, "cuda_graph" if mode == "graph" else "cuda_event"
        if mode == "cold":
            number = 1
        elif mode == "graph":
            number = _clamp(math.ceil(block / est) if est > 0 else MAX_GRAPH_CALLS, 1, MAX_GRAPH_CALLS)
        else:
            number = _clamp(math.ceil(block / est) if est > 0 else MAX_NUMBER, 1, MAX_NUMBER)
        timer.prepare(call, number)
        chunk = 1       # CUDA: grows so that a chunk lasts about CHUNK_S of host time, flushes included
        # 4. sample
        samples: list[float] = []
        ordered: list[float] = []
        start = timer.now()
        reason = None
        while reason is None:
            t_chunk = timer.now()
            for s in timer.samples(call, number, chunk):
                per_call = s / number
                samples.append(per_call)
                bisect.insort(ordered, per_call)
            now = timer.now()
            reason = rule.reason(ordered, now - start)
            if dev.type == "cuda":
                per_sample = (now - t_chunk) / chunk
                chunk = _clamp(math.ceil(CHUNK_S / per_sample) if per_sample > 0 else MAX_CHUNK, 1, MAX_CHUNK)
        sampling = timer.now() - start
        used_threads = torch.get_num_threads()
    clocks = monitor.summary() if monitor is not None else None
    return Measurement(
        device=device_name, timer=timer.name, mode=mode, samples_s=tuple(samples), number=number,
        warmup_calls=warm_calls + ESTIMATE_CALLS, warmup_s=warmup_spent, estimate_s=est, sampling_s=sampling,
        threads=used_threads, gc_paused=paused, rotation=len(inputs) if inputs is not None else 1,
        stop_reason=reason, target_rel_ci=getattr(rule, "target", math.nan), settings=settings,
        clocks=clocks)


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def _rotating(fn: Callable[..., object], inputs: Sequence[Sequence[Any]] | None) -> Callable[[], object]:
    if inputs is None:
        return fn
    sets = [tuple(args) for args in inputs]
    if len(sets) == 1:
        only = sets[0]
        return lambda: fn(*only)
    state = [0]
    n = len(sets)

    def call() -> object:
        i = state[0]
        state[0] = i + 1 if i + 1 < n else 0
        return fn(*sets[i])

    return call


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def _gc_paused() -> Iterator[bool]:
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield True
    finally:
        if was:
            gc.enable()
