"""``harness.measure``: time a callable on a device and return a Measurement of raw samples.

The loop (the same for every backend; the backend supplies the clock):
1. warm-up: call until ``warmup_s`` has passed and at least ``MIN_WARMUP_CALLS`` were made
   (module loading, allocator growth, cuDNN autotuning happen here);
2. estimate the per-call time from a few single-call samples;
3. ``auto`` on a GPU: one block of eager calls against a one-call graph replay decides hot or graph;
4. size a sample: ``number`` calls so that a block lasts ``block_s`` (1 call in cold mode; graph
   replays are re-sized by the timer from a timed one-call replay);
5. take samples until the stopping rule says stop (default: the median's 95 % CI within 1 %,
   at least 10 samples, or the time budget spent). One-call samples within a few clock ticks are
   judged on their mean (the median snaps to ticks) and the measurement says so. On the host CPU a
   canary (``harness.timing.canary``) is read between blocks; a block beside a slow canary is
   rejected (not a sample, not counted by the stopping rule) and the measurement counts it.
Garbage collection is paused and the thread count fixed for the whole of it.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.backends import Device, Monitor, SampleTimer, TimingContext, resolve_device
from harness.errors import SpecError
from harness.record import MODES
from harness.timing import heap
from harness.timing.canary import BURST, GIVE_UP, Canary, OnlineReference, judge
from harness.timing.measurement import Measurement
from harness.timing.stats import CI_Z
from harness.timing.stopping import CONVERGED, RelativeCI, StoppingRule

#: ``auto`` mode on a GPU: graph replays when a block of eager calls takes more than this factor of
#: a one-call graph replay per call (host dispatch, not the device, sets the eager time).
AUTO_GRAPH_GAIN = 1.1
#: Warm-up always makes at least this many calls, whatever ``warmup_s``.
MIN_WARMUP_CALLS = 2
#: Single-call samples taken after warm-up to estimate the per-call time.
ESTIMATE_CALLS = 3
#: Most calls in one sample.
MAX_NUMBER = 1_000_000
#: Chunked (GPU) timers: samples are enqueued in chunks of about this many seconds between syncs.
CHUNK_S, MAX_CHUNK = 0.01, 100
#: One-call samples whose median is within this many clock ticks: the median snaps to ticks, so the
#: mean is reported beside it and convergence is judged on the mean's confidence interval (NVBench's
#: cold measurement reports the mean GPU time, nvbench/detail/measure_cold.cu).
NEAR_TICKS = 10


@dataclass(frozen=True, slots=True)
class _Warm:
    calls: int
    seconds: float
    estimate_s: float


def measure(fn: Callable[..., object], *, device: str | Device = "cpu",
            inputs: Sequence[Sequence[Any]] | None = None, mode: str = "hot", threads: int | None = None,
            warmup_s: float = 0.1, target_rel_ci: float = 0.01,
            min_reps: int = 10, min_time_s: float = 0.0, budget_s: float = 2.0, max_reps: int = 100_000,
            block_s: float | None = None, cudnn_benchmark: bool = True, rule: StoppingRule | None = None,
            timer: SampleTimer | None = None, cuda_api: Any = None, monitor: Monitor | None = None,
            canary: Canary | bool | None = None) -> Measurement:
    """Time ``fn`` on ``device``; return every sample and the conditions they were taken under.

    Args:
        fn: the work to time. Called with no arguments, or with one of ``inputs`` per call.
        device: where ``fn``'s tensors live: a ``Device`` (``harness.backends.resolve_device``; a
            run resolves its device once and passes it) or a spec, ``cpu`` or ``cuda[:N]``, resolved here.
        inputs: argument tuples to rotate through, one per call, so that a small op is not timed
            from cache alone (make them with ``harness.timing.random_inputs``).
        mode: ``hot``; on GPUs also ``cold`` (L2 flushed before every call, untimed),
            ``graph`` (calls captured in a CUDA graph and replayed: launch overhead removed) or
            ``auto`` (graph when eager calls take ``AUTO_GRAPH_GAIN`` x a one-call replay or more,
            hot otherwise; hot on CPU).
        threads: ``torch.set_num_threads`` for the measurement (restored after); default: as is.
        warmup_s: seconds of warm-up calls (at least ``MIN_WARMUP_CALLS``).
        target_rel_ci, min_reps, min_time_s, budget_s, max_reps: the default stopping rule
            (``RelativeCI``): stop when the median's 95 % CI is within ``target_rel_ci`` after at
            least ``min_reps`` samples and ``min_time_s`` seconds, or when ``budget_s`` is spent.
        block_s: seconds per sample block (default: the backend's).
        cudnn_benchmark: ``torch.backends.cudnn.benchmark`` during warm-up and timing (CUDA).
        rule: a stopping rule replacing the default one.
        timer, cuda_api, monitor: injection seams (tests use fake clocks and devices).
        canary: read between sample blocks to reject those a slow host spoiled: a ``Canary``, ``True``,
            ``False``, or ``None`` (default: on for the host CPU with unchunked samples timed by its real
            clock, off otherwise).

    Returns:
        A ``Measurement``: ``samples_s`` in seconds per call and ``stats`` computed from them;
        ``notes`` (also after ``stop_reason``) say what was timed differently from what was asked.
    """
    device = resolve_device(device)
    backend = device.backend
    _check(mode, threads, warmup_s, inputs)
    policy = heap.steady() if device.host else None     # the worker set it before the inputs were made
    rule = rule or RelativeCI(target=target_rel_ci, min_reps=min_reps, min_time_s=min_time_s, budget_s=budget_s,
                              max_reps=max_reps)
    call = rotating(fn, inputs)
    with fixed_threads(threads), gc_paused() as paused, \
            backend.timing(device, mode, cudnn_benchmark, timer=timer, api=cuda_api, monitor=monitor) as ctx:
        block = ctx.block_s if block_s is None else block_s
        warm = warm_up(ctx.timer, call, warmup_s)
        mode = _settle_mode(mode, warm.estimate_s, backend.modes, ctx.timer, call, block)
        number = calls_per_sample(mode, warm.estimate_s, block)
        number = ctx.timer.prepare(call, number) or number
        mode = ctx.timer.mode or mode                   # a failed graph capture is timed hot
        rule = _tick_aware(rule, ctx.tick_s, number)
        bird = _canary(canary, device, ctx, injected=timer is not None)
        burst = _burst(bird)
        faults = heap.faults()
        samples, reason, sampling, readings = _sample(ctx, call, number, rule, bird)
        faults = (heap.faults() - faults) / (len(samples) * number) if device.host and samples else None
        used_threads = torch.get_num_threads()
    samples, report = judge(samples, readings, burst) if bird is not None else (samples, None)
    clocks = ctx.monitor.summary() if ctx.monitor is not None else None
    notes = tuple(ctx.notes) + _tick_note(samples, number, ctx.tick_s)
    return Measurement(
        device=ctx.device, timer=ctx.timer.name, mode=mode, samples_s=tuple(samples), number=number,
        warmup_calls=warm.calls + ESTIMATE_CALLS, warmup_s=warm.seconds, estimate_s=warm.estimate_s,
        sampling_s=sampling, threads=used_threads, gc_paused=paused,
        rotation=len(inputs) if inputs is not None else 1, stop_reason="; ".join((reason, *notes)),
        target_rel_ci=getattr(rule, "target", math.nan), settings=ctx.settings, clocks=clocks, notes=notes,
        canary=report, heap=policy, page_faults_per_call=faults)


def _canary(canary: Canary | bool | None, device: Device, ctx: TimingContext, injected: bool) -> Canary | None:
    """The canary to read between blocks: the one given, a new one (``True``, or ``None`` on the host
    CPU with unchunked samples and its real clock), or none."""
    if isinstance(canary, Canary):
        return canary
    on = canary if canary is not None else device.host and not ctx.chunked and not injected
    return Canary(device.tensors) if on else None


def _burst(bird: Canary | None) -> list[float]:
    """The canary sized and read ``BURST`` times (the reference of a measurement without blocks), or nothing."""
    if bird is None:
        return []
    bird.size()
    return [bird.read() for _ in range(BURST)]


def _check(mode: str, threads: int | None, warmup_s: float, inputs: Sequence[Sequence[Any]] | None) -> None:
    if mode not in MODES:
        raise SpecError("mode", mode, "one of " + ", ".join(MODES))
    if threads is not None and threads < 1:
        raise SpecError("threads", threads, "an integer >= 1")
    if not 0 <= warmup_s < math.inf:
        raise SpecError("warmup_s", warmup_s, "finite seconds >= 0")
    if inputs is not None and len(inputs) == 0:
        raise SpecError("inputs", inputs, "at least one argument tuple")


def warm_up(timer: SampleTimer, call: Callable[[], object], warmup_s: float) -> _Warm:
    """Steps 1 and 2: warm-up calls for ``warmup_s``, then the median of ``ESTIMATE_CALLS`` single calls."""
    t0 = timer.now()
    calls = 0
    while calls < MIN_WARMUP_CALLS or timer.now() - t0 < warmup_s:
        call()
        timer.sync()
        calls += 1
    est = sorted(timer.samples(call, 1, ESTIMATE_CALLS))[ESTIMATE_CALLS // 2]
    return _Warm(calls=calls, seconds=timer.now() - t0, estimate_s=est)


def _settle_mode(mode: str, estimate_s: float, supported: Sequence[str], timer: SampleTimer,
                 call: Callable[[], object], block_s: float) -> str:
    """Step 3, ``auto``: where the backend has graphs and the timer replays one (``GraphTrial``),
    graph when a block of eager calls takes over ``AUTO_GRAPH_GAIN`` x the one-call replay per
    call (the eager time is host dispatch), else hot."""
    if mode != "auto":
        return mode
    mode = "hot"
    trial = getattr(timer, "graph_call_s", None)
    if "graph" in supported and trial is not None:
        n = calls_per_sample("hot", estimate_s, block_s)
        eager = timer.samples(call, n, 1)[0] / n
        graph = trial(call)
        if graph is not None and eager > AUTO_GRAPH_GAIN * graph:
            mode = "graph"
    timer.use_mode(mode)
    return mode


def calls_per_sample(mode: str, estimate_s: float, block_s: float) -> int:
    """Step 4: 1 call per sample in cold mode; else enough calls for one block (a graph timer
    re-sizes its replays in ``prepare``)."""
    if mode == "cold":
        return 1
    return _clamp(math.ceil(block_s / estimate_s) if estimate_s > 0 else MAX_NUMBER, 1, MAX_NUMBER)


def _near_tick(median: float, number: int, tick_s: float) -> bool:
    return number == 1 and tick_s > 0 and median < NEAR_TICKS * tick_s


@dataclass(frozen=True, slots=True)
class _TickAware:
    """``rule``, except that while one-call samples sit within ``NEAR_TICKS`` ticks of zero a
    ``converged`` needs the mean's confidence interval within ``target`` too: the median of samples
    snapped to ticks has a CI of zero width long before it means anything."""

    rule: StoppingRule
    target: float
    tick_s: float

    @property
    def budget_s(self) -> float:
        """The wrapped rule's budget (seconds; ``inf`` where it has none)."""
        return getattr(self.rule, "budget_s", math.inf)

    def reason(self, sorted_samples: Sequence[float], elapsed_s: float) -> str | None:
        why = self.rule.reason(sorted_samples, elapsed_s)
        n = len(sorted_samples)
        if why != CONVERGED or not _near_tick(sorted_samples[n // 2], 1, self.tick_s):
            return why
        mean = sum(sorted_samples) / n
        var = sum((x - mean) ** 2 for x in sorted_samples) / (n - 1) if n > 1 else math.inf
        return why if mean > 0 and CI_Z * math.sqrt(var / n) <= self.target * mean else None


def _tick_aware(rule: StoppingRule, tick_s: float, number: int) -> StoppingRule:
    target = getattr(rule, "target", None)
    return _TickAware(rule, target, tick_s) if number == 1 and tick_s > 0 and target else rule


def _tick_note(samples: Sequence[float], number: int, tick_s: float) -> tuple[str, ...]:
    """A note when one-call samples have their median within ``NEAR_TICKS`` clock ticks."""
    if not samples:
        return ()
    ordered = sorted(samples)
    median = ordered[len(ordered) // 2] if len(ordered) % 2 else sum(ordered[len(ordered) // 2 - 1:][:2]) / 2
    if not _near_tick(median, number, tick_s):
        return ()
    mean = sum(samples) / len(samples)
    return (f"one-call median {median * 1e6:.2f} us is within {NEAR_TICKS} ticks of {tick_s * 1e6:g} us: "
            f"samples snap to ticks; mean {mean * 1e6:.3f} us",)


def _sample(ctx: TimingContext, call: Callable[[], object], number: int, rule: StoppingRule,
            canary: Canary | None = None) -> tuple[list[float], str, float, list[float]]:
    """Step 4: samples (seconds per call) until ``rule`` stops, and the canary readings (one before
    the first block and one after each; none without a canary). Chunked timers enqueue a chunk of
    samples per sync, grown so that a chunk lasts about ``CHUNK_S`` of host time. A block whose canary
    (the faster of the readings beside it) lies over the band above the blocks' median so far is not
    shown to ``rule`` (``harness.timing.canary.OnlineReference``; until ``GIVE_UP`` blocks were,
    outnumbering the kept ones: past that every block counts). ``judge`` decides afterwards on all of
    them, and a convergence stands only where the blocks it keeps converge too (``settled``)."""
    timer = ctx.timer
    samples: list[float] = []
    ordered: list[float] = []
    readings = [canary.read()] if canary is not None else []
    online = OnlineReference()
    rejected = recheck = 0
    budget = getattr(rule, "budget_s", math.inf)
    chunk = 1
    start = timer.now()
    reason = None
    while reason is None:
        t_chunk = timer.now()
        for s in timer.samples(call, number, chunk):
            samples.append(s / number)
            if canary is not None:
                readings.append(canary.read())
                beside = min(readings[-2:])
                online.add(beside)
                if online.slow(beside) and rejected < max(GIVE_UP, len(ordered)):
                    rejected += 1
                    continue
            bisect.insort(ordered, s / number)
        now = timer.now()
        reason = rule.reason(ordered, now - start)
        if reason == CONVERGED and canary is not None and len(samples) < recheck and now - start < budget:
            reason = None                                  # judged again once there are 10 % more blocks
        elif reason == CONVERGED and canary is not None:
            reason = settled(rule, samples, readings, now - start)
            recheck = len(samples) + max(1, len(samples) // 10)
        if ctx.chunked:
            per_sample = (now - t_chunk) / chunk
            chunk = _clamp(math.ceil(CHUNK_S / per_sample) if per_sample > 0 else MAX_CHUNK, 1, MAX_CHUNK)
    return samples, reason, timer.now() - start, readings


def settled(rule: StoppingRule, samples: Sequence[float], readings: Sequence[float], elapsed_s: float) -> str | None:
    """The rule's reason on the samples the canary's final judgement keeps (``judge``: its reference
    from every block, where sampling used the blocks so far), once sampling converged on those it
    let through: the stored samples are the kept ones, so a ``converged`` row's must meet the target
    too; ``None`` (sample on, until they do or the budget ends) where they do not."""
    kept, _ = judge(samples, readings, ())
    return rule.reason(sorted(kept), elapsed_s) if kept else CONVERGED


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def rotating(fn: Callable[..., object], inputs: Sequence[Sequence[Any]] | None) -> Callable[[], object]:
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
def fixed_threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def gc_settled() -> Iterator[None]:
    """Around a whole run (once, never per case): collect the young garbage (generations 0 and 1:
    what loading the suite and describing the machine left; a full collection walks every object
    torch created, about 0.1 s) and freeze what exists, so that any later collection skips torch's
    long-lived objects; unfrozen after."""
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def gc_paused() -> Iterator[bool]:
    """GC off for the measurement. No ``gc.collect()`` here: the runner settles the collector once
    per run (``gc_settled``)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield True
    finally:
        if was:
            gc.enable()
