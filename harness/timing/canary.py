"""The host's speed at a moment: a fixed kernel (the *canary*) timed between the sample blocks of a
measurement, so that a block taken while another tenant slowed the host is known and set aside.

The canary is a small GEMM and a small copy on the device's tensors, run with the measurement's
threads (a core taken by another tenant stalls its OpenMP barriers as it stalls the layer's), sized
once per measurement to take about ``TARGET_S``. It is read ``BURST`` times during warm-up, then once
between consecutive blocks, so that each block has a reading before and after it. A block's canary
is the faster of the two (one slow reading beside a block is as likely a hiccup of the canary as of
the block); a block whose canary ran more than ``REJECT`` slower than the fastest reading of the
measurement is rejected: not a sample, but counted. Where half the blocks or more would be rejected,
the host was slow throughout: every block is kept and the measurement says so. NVBench does the
same for GPU trials with the measured clock (``nvbench/detail/gpu_frequency.cxx``: trials run at a
throttled clock are discarded).

Units: seconds per canary call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

#: Seconds the canary should take (one reading).
TARGET_S = 30e-6
#: Readings taken while warming up (the first reference).
BURST = 10
#: A block whose canary is more than this fraction slower than the fastest reading is rejected.
REJECT = 0.05
#: While sampling, blocks are rejected until this many are and they outnumber the kept ones; past
#: that the host is slow throughout and every block counts (the budget is not spent waiting for it).
#: After sampling, half the blocks or more beside a slow canary: every block is kept, and said.
GIVE_UP = 10
#: GEMM side and copy elements of one canary step (about 0.3 MFLOP and 256 KiB moved).
GEMM_N, COPY_ELEMENTS = 48, 2**15


@dataclass(frozen=True, slots=True)
class CanaryReport:
    """What the canary said about one measurement (seconds per canary call).

    Attributes:
        fastest_s: the fastest reading (the host at its quickest during the measurement).
        kept_s: each kept block's canary, in sample order (aligned with the samples).
        rejected: blocks rejected for a canary more than ``REJECT`` slow.
        kept_all: half the blocks or more ran beside a slow canary (the host was slow throughout):
            every block was kept.
    """

    fastest_s: float
    kept_s: tuple[float, ...]
    rejected: int
    kept_all: bool = False

    @property
    def median_s(self) -> float:
        """The median canary of the kept blocks."""
        return statistics.median(self.kept_s) if self.kept_s else self.fastest_s

    @property
    def slowdown(self) -> float:
        """How much slower the host ran beside the kept blocks than at its quickest (fraction)."""
        return self.median_s / self.fastest_s - 1 if self.fastest_s > 0 else 0.0


class Canary:
    """A canary on ``tensors`` (a ``torch.device``), sized to ``TARGET_S`` on first use."""

    def __init__(self, tensors: torch.device | str = "cpu", clock: Callable[[], int] = time.perf_counter_ns,
                 step: Callable[[], object] | None = None) -> None:
        gen = torch.Generator().manual_seed(0)
        self._a = torch.randn(GEMM_N, GEMM_N, generator=gen).to(tensors)
        self._src = torch.randn(COPY_ELEMENTS, generator=gen).to(tensors)
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
        """One reading: seconds the canary took now."""
        if not self.steps:
            self.size()
        return self._once()


def judge(samples: Sequence[float], readings: Sequence[float], burst: Sequence[float]) -> tuple[list[float],
                                                                                                   CanaryReport]:
    """(kept samples, report) of blocks ``samples`` taken between canary ``readings`` (``len(samples)
    + 1`` readings: one before each block and one after the last), given the warm-up ``burst``."""
    if len(readings) != len(samples) + 1:
        raise ValueError(f"{len(samples)} blocks need {len(samples) + 1} canary readings, got {len(readings)}")
    fastest = min([*burst, *readings])
    beside = [min(readings[i], readings[i + 1]) for i in range(len(samples))]
    keep = [i for i, c in enumerate(beside) if c <= (1 + REJECT) * fastest]
    if samples and 2 * len(keep) <= len(samples):
        return list(samples), CanaryReport(fastest, tuple(beside), 0, kept_all=True)
    return ([samples[i] for i in keep],
            CanaryReport(fastest, tuple(beside[i] for i in keep), len(samples) - len(keep)))
