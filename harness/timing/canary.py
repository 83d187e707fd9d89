"""The host's speed at a moment: a fixed kernel (the *canary*) timed between the sample blocks of a
measurement, so that a block taken while another tenant slowed the host is known and set aside.

The canary is a small GEMM and a small copy on the device's tensors, run with the measurement's
threads and large enough to be split among them all (``shape``): a core taken by another tenant
stalls its OpenMP barriers as it stalls the layer's. A 48x48 GEMM and a 32,768-element copy run on
one thread whatever the setting (6.2 vs 7.0 us and 4.4 vs 4.4 us at 1 and 2 threads on a 2-vCPU
EPYC), so a canary of that size never saw a tenant on the other CPU while a 2-thread layer slowed
1.2x. It is sized once per measurement to take about ``TARGET_S``. It is read between consecutive
blocks, so that each block has a reading before and after it; a block's canary is the faster of the
two (one slow reading beside a block is as likely a hiccup of the canary as of the block).

A reading is one untimed step, then the fastest of ``REPEATS`` timed ones: the block before it evicted
the canary's data (on a 2-vCPU EPYC VM the first reading after a 30 ms convolution took 7-10x the
canary's hot time), and single readings of a 20 us kernel spread 1.5-2x there even back to back.

The reference is the median canary beside the measurement's blocks (read in the state the blocks
leave the caches in; the fastest reading of many is biased low by the noise); a block whose canary
ran more than ``band`` above it is rejected: not a sample, but counted. ``band`` is ``REJECT``, or
``NOISE_MADS`` median absolute deviations of the canary where its own noise is wider. A host slow
during the whole measurement is not told within it (the median moves with it): the processes of a
row are compared by their canaries instead (``harness.timing.modes.follows_host``). NVBench does the
same for GPU trials with the measured clock (``nvbench/detail/gpu_frequency.cxx``: trials run at a
throttled clock are discarded).

Units: seconds per canary step (one GEMM and one copy). A reading runs several steps, sized per
measurement, and is divided by their number: two processes sized to 1 and 2 steps (a step of
13 us against a 20 us target rounds either way) read the same host speed alike, which the
comparison of a row's processes by their canaries needs.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

#: Seconds one timed canary reading should take.
TARGET_S = 20e-6
#: Timed readings per canary read (the fastest counts), after one untimed step.
REPEATS = 2
#: Readings taken after warm-up (sizing; the reference of a measurement without blocks).
BURST = 5
#: A block whose canary is more than this fraction above the reference is rejected (at least).
REJECT = 0.05
#: ... or more than this many median absolute deviations of the canary, where that is wider.
NOISE_MADS = 3.0
#: While sampling, blocks are rejected until this many are and they outnumber the kept ones; past that
#: every block counts (the budget is not spent waiting for the host).
GIVE_UP = 10
#: GEMM side and copy elements of one canary step on one thread (about 0.2 MFLOP and 256 KiB moved).
GEMM_N, COPY_ELEMENTS = 48, 2**15


def shape(threads: int) -> tuple[int, int]:
    """(GEMM side, copy elements) of a canary step on ``threads`` threads: ``GEMM_N`` and
    ``COPY_ELEMENTS`` on one; on more, work that every thread gets a share of: ATen splits an
    elementwise op into chunks of 32,768 elements (``at::internal::GRAIN_SIZE``), so 65,536 per
    thread, and the GEMM side grows with the square root of the threads (96 on 2 or 4 threads, where
    the 48x48 one stays on one thread)."""
    if threads <= 1:
        return GEMM_N, COPY_ELEMENTS
    return GEMM_N * math.ceil(math.sqrt(threads)), 2 * COPY_ELEMENTS * threads


@dataclass(frozen=True, slots=True)
class CanaryReport:
    """What the canary said about one measurement (seconds per canary step).

    Attributes:
        reference_s: the median canary beside the blocks (the host's typical speed then).
        kept_s: each kept block's canary, in sample order (aligned with the samples).
        rejected: blocks rejected for a canary more than ``band`` above the reference.
        band: the rejection threshold used (fraction above ``reference_s``).
        rejected_s: the median canary beside the rejected blocks (``None`` when none was).
    """

    reference_s: float
    kept_s: tuple[float, ...]
    rejected: int
    band: float = REJECT
    rejected_s: float | None = None

    @property
    def median_s(self) -> float:
        """The median canary of the kept blocks."""
        return statistics.median(self.kept_s) if self.kept_s else self.reference_s

    @property
    def slowdown(self) -> float:
        """How much slower the host ran beside the rejected blocks than the reference (fraction; 0
        when none was rejected)."""
        if self.rejected_s is None or self.reference_s <= 0:
            return 0.0
        return self.rejected_s / self.reference_s - 1


def reference(readings: Sequence[float]) -> tuple[float, float]:
    """(median, band) of canary ``readings``: the band is ``REJECT``, or ``NOISE_MADS`` median absolute
    deviations over the median where that is wider (the usual robust outlier rule)."""
    mid = statistics.median(readings)
    mad = statistics.median(abs(r - mid) for r in readings)
    return mid, max(REJECT, NOISE_MADS * mad / mid) if mid > 0 else REJECT


class Canary:
    """A canary on ``tensors`` (a ``torch.device``) for the threads set when it is made (``shape``),
    sized to ``TARGET_S`` on first use."""

    def __init__(self, tensors: torch.device | str = "cpu", clock: Callable[[], int] = time.perf_counter_ns,
                 step: Callable[[], object] | None = None) -> None:
        gen = torch.Generator().manual_seed(0)
        n, elements = shape(torch.get_num_threads())
        self._a = torch.randn(n, n, generator=gen).to(tensors)
        self._src = torch.randn(elements, generator=gen).to(tensors)
        self._dst = torch.empty_like(self._src)
        self._step = step or self._gemm_and_copy
        self._clock = clock
        self.steps = 0

    def _gemm_and_copy(self) -> None:
        torch.mm(self._a, self._a)
        self._dst.copy_(self._src)

    def _once(self) -> float:
        t = self._clock()
        for _ in range(self.steps):
            self._step()
        return max(1, self._clock() - t) * 1e-9

    def size(self) -> None:
        """Steps per reading so that one takes about ``TARGET_S`` (from the fastest of a few one-step
        readings)."""
        self.steps = 1
        one = min(self._once() for _ in range(5))
        self.steps = max(1, round(TARGET_S / one))

    def read(self) -> float:
        """One reading: seconds per step the canary takes now (one untimed step, then the fastest of
        ``REPEATS`` timed readings over ``steps`` steps each: module docstring)."""
        if not self.steps:
            self.size()
        self._step()
        return min(self._once() for _ in range(REPEATS)) / self.steps


def _slow(canary: float, ref: float, band: float) -> bool:
    """Whether a block's ``canary`` lies over ``band`` above ``ref``."""
    return canary > (1 + band) * ref


def judge(samples: Sequence[float], readings: Sequence[float], burst: Sequence[float]) -> tuple[list[float],
                                                                                                   CanaryReport]:
    """(kept samples, report) of blocks ``samples`` taken between canary ``readings`` (``len(samples)
    + 1`` readings: one before each block and one after the last); ``burst``: the readings after
    warm-up, the reference when there is no block."""
    if len(readings) != len(samples) + 1:
        raise ValueError(f"{len(samples)} blocks need {len(samples) + 1} canary readings, got {len(readings)}")
    beside = [min(readings[i], readings[i + 1]) for i in range(len(samples))]
    pool = beside or list(burst) or list(readings)
    ref, band = reference(pool)
    keep = [i for i, c in enumerate(beside) if not _slow(c, ref, band)]
    out = [c for c in beside if _slow(c, ref, band)]
    return ([samples[i] for i in keep],
            CanaryReport(ref, tuple(beside[i] for i in keep), len(samples) - len(keep), band,
                         statistics.median(out) if out else None))


class OnlineReference:
    """The reference and band while sampling, from the block canaries so far (``judge``'s rule),
    recomputed each time their number doubles (so the whole measurement costs O(n log n)); ``None``
    until ``MIN_BLOCKS`` blocks have one."""

    MIN_BLOCKS = 3

    def __init__(self) -> None:
        self.beside: list[float] = []
        self.current: tuple[float, float] | None = None
        self._next = self.MIN_BLOCKS

    def add(self, canary: float) -> None:
        self.beside.append(canary)
        if len(self.beside) >= self._next:
            self.current = reference(self.beside)
            self._next *= 2

    def slow(self, canary: float) -> bool:
        """Whether ``canary`` lies over the band above the reference (never before there is one)."""
        return self.current is not None and _slow(canary, *self.current)
