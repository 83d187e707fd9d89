"""Two callables timed alternately, block by block (ABAB..., the first of the two drawn at random), so
that whatever slows the host slows both: the ratio of each adjacent pair of blocks is a measure of
one against the other that a slow moment cannot fake (asv's and pyperf's advice for comparing two
benchmarks on a noisy machine: interleave them).

Each callable is warmed up and sized to ``BLOCK_S`` per block (``number`` calls) as ``measure``
does; then ``pairs`` pairs of blocks are timed, each after one untimed call: the other callable's
block has just evicted this one's tensors from the caches, and a first call that refills them is
not what a layer run back to back costs (two ShuffleNet V2 1x1 convolutions, 1.38 ms and 786 us
measured alone on a 2-vCPU EPYC, took 1.52-1.90 ms and 1.07-1.39 ms in interleaved blocks of
about four calls without it, and their ratio fell from 1.76x to 1.39x). Pair i is block A_i and
block B_i in the order drawn for the run (AB or BA for every pair, alternating the lead: A B | B A |
A B ... keeps a drift in the host from favouring either). Units: seconds per call; ratios are slow
over fast (``b / a``).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.backends import Device, resolve_device
from harness.timing import heap
from harness.timing.measure import calls_per_sample, fixed_threads, gc_paused, rotating, warm_up

#: Seconds per block, and pairs of blocks per run.
BLOCK_S, PAIRS = 5e-3, 20


@dataclass(frozen=True, slots=True)
class Interleaved:
    """One interleaved run: per-call seconds of each block of ``a`` and ``b`` (pair order), and who led.

    ``ratios``: ``b_i / a_i`` per pair; ``ratio``: their median."""

    a_s: tuple[float, ...]
    b_s: tuple[float, ...]
    a_first: bool
    number_a: int
    number_b: int
    #: Seconds spent warming both up and timing their blocks.
    measuring_s: float = 0.0

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(b / a for a, b in zip(self.a_s, self.b_s) if a > 0)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def quartiles(self) -> tuple[float, float]:
        """First and third quartiles of the pair ratios."""
        q = statistics.quantiles(self.ratios, n=4, method="inclusive") if len(self.ratios) > 1 else [self.ratio] * 3
        return q[0], q[2]


def interleave(fn_a: Callable[..., object], fn_b: Callable[..., object], *, device: str | Device = "cpu",
               inputs_a: Sequence[Sequence[Any]] | None = None, inputs_b: Sequence[Sequence[Any]] | None = None,
               threads: int | None = None, pairs: int = PAIRS, block_s: float = BLOCK_S, warmup_s: float = 0.1,
               seed: int = 0, timer: Any = None) -> Interleaved:
    """Time ``fn_a`` and ``fn_b`` in ``pairs`` alternating pairs of blocks (module docstring)."""
    device = resolve_device(device)
    if device.host:
        heap.steady()                               # as ``measure`` times (harness.timing.heap)
    start = time.perf_counter()
    lead = random.Random(seed).random() < 0.5
    call_a, call_b = rotating(fn_a, inputs_a), rotating(fn_b, inputs_b)
    with fixed_threads(threads), gc_paused(), device.backend.timing(device, "hot", True, timer=timer) as ctx:
        n_a = calls_per_sample("hot", warm_up(ctx.timer, call_a, warmup_s).estimate_s, block_s)
        n_b = calls_per_sample("hot", warm_up(ctx.timer, call_b, warmup_s).estimate_s, block_s)
        a_s, b_s = [], []
        for i in range(pairs):
            a_leads = lead if i % 2 == 0 else not lead
            order = ((call_a, n_a, a_s), (call_b, n_b, b_s)) if a_leads else ((call_b, n_b, b_s), (call_a, n_a, a_s))
            for call, number, out in order:
                call()                              # untimed: the other's block evicted this one's data
                out.append(ctx.timer.samples(call, number, 1)[0] / number)
    return Interleaved(tuple(a_s), tuple(b_s), lead, n_a, n_b, time.perf_counter() - start)
