"""The CPU clock, measured: a chain of dependent integer adds (each waits for the one before, one per
cycle on every x86-64 and AArch64 core), timed on each CPU in turn, gives the clock that CPU runs at
now: lmbench's ``mhz`` idea. A VM reports its host's nominal clock (2.445 GHz on an EPYC VM whose
cores run at 3.0 GHz); a GEMM assumed to run at 100 % of peak infers a clock from what it is meant to
measure. This one owes nothing to either.

The chain is 16 dependent ``add``s and a counted loop around them, written as machine code into an
executable page (``mmap``) and called through ``ctypes``: a timed sample of ``n`` loops is
``16 n`` cycles. The best of a few samples per CPU (a sample a tenant interrupted is only longer)
over ``CHAIN_LOOPS`` loops (about 0.5 ms at 3 GHz) is the reading. On another architecture, or where
the kernel refuses executable pages, the clock is unknown (``None``) and callers say so.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

#: Dependent adds per loop, and loops per timed sample (~1.6 M cycles: about 0.5 ms at 3 GHz).
ADDS_PER_LOOP = 16
CHAIN_LOOPS = 100_000
#: Samples per CPU; the fastest counts (an interrupted sample is only longer).
SAMPLES = 3
#: Around a row: loops per sample (~0.16 ms at 3 GHz), samples per CPU, and the most CPUs read.
ROW_LOOPS, ROW_SAMPLES, ROW_CPUS = 30_000, 2, 8

_X86_64 = (bytes([0x31, 0xC0])                          # xor eax, eax
           + bytes([0x48, 0x83, 0xC0, 0x01]) * ADDS_PER_LOOP   # add rax, 1 (x16, each on the last)
           + bytes([0x48, 0xFF, 0xCF])                  # dec rdi
           + bytes([0x75, (256 - (4 * ADDS_PER_LOOP + 3 + 2)) & 0xFF])   # jnz to the first add
           + bytes([0xC3]))                             # ret
_AARCH64 = b"".join(int.to_bytes(w, 4, "little") for w in (
    [0xAA1F03E1,                                         # mov x1, xzr  (x1: the chain; x0: loops)
     *([0x91000421] * ADDS_PER_LOOP),                     # add x1, x1, #1 (x16)
     0xF1000400,                                         # subs x0, x0, #1
     0x54000001 | ((-(ADDS_PER_LOOP + 1) & 0x7FFFF) << 5),   # b.ne to the first add
     0xAA0103E0,                                         # mov x0, x1
     0xD65F03C0]))                                       # ret
CODE = {"x86_64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}       # POSIX calling conventions


@dataclass(frozen=True, slots=True)
class ClockReading:
    """The clock measured on each CPU (MHz), their median, and their spread ((max - min) / median)."""

    per_cpu_mhz: tuple[float, ...]

    @property
    def mhz(self) -> float:
        return statistics.median(self.per_cpu_mhz)

    @property
    def spread(self) -> float:
        return (max(self.per_cpu_mhz) - min(self.per_cpu_mhz)) / self.mhz if self.mhz else 0.0


@functools.cache
def chain() -> Callable[[int], int] | None:
    """The dependent-add chain as a callable of its loop count, or ``None`` where it cannot run."""
    code = CODE.get(platform.machine())
    if code is None:
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError):       # W^X kernels, non-POSIX mmap
        return None
    page.write(code)
    fn = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    _KEEP.append(page)                                   # the code lives as long as the process
    if fn(3) != 3 * ADDS_PER_LOOP:                       # the chain adds what it should, or is not used
        return None
    return fn


_KEEP: list[mmap.mmap] = []


def _mhz_here(fn: Callable[[int], int], loops: int, samples: int) -> float:
    best = min(_timed(fn, loops) for _ in range(samples))
    return ADDS_PER_LOOP * loops / best / 1e6


def _timed(fn: Callable[[int], int], loops: int) -> float:
    t = time.perf_counter_ns()
    fn(loops)
    return max(1, time.perf_counter_ns() - t) * 1e-9


def measure_clock(cpus: Iterable[int] | None = None, loops: int = CHAIN_LOOPS,
                  samples: int = SAMPLES) -> ClockReading | None:
    """The clock of each of ``cpus`` (default: every CPU this process may run on), measured by
    running the chain pinned to it (this thread's affinity is restored after); ``None`` where the
    chain cannot run."""
    fn = chain()
    if fn is None:
        return None
    try:
        before = os.sched_getaffinity(0)
    except AttributeError:                               # no affinity control: the CPU the OS picks
        return ClockReading((_mhz_here(fn, loops, samples),))
    out = []
    try:
        for cpu in sorted(cpus if cpus is not None else before):
            os.sched_setaffinity(0, {cpu})
            out.append(_mhz_here(fn, loops, samples))
    finally:
        os.sched_setaffinity(0, before)
    return ClockReading(tuple(out)) if out else None


def row_cpus(threads: int) -> list[int]:
    """The CPUs a row of ``threads`` threads is read on: the first ``threads`` this process may run
    on, at most ``ROW_CPUS`` of them spread evenly."""
    try:
        mine = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return []
    use = mine[: max(1, threads)]
    step = max(1, len(use) // ROW_CPUS)
    return use[::step][:ROW_CPUS]


def around(threads: int) -> ClockReading | None:
    """A quick reading on a row's CPUs (``row_cpus``), taken before and after its measurement."""
    cpus = row_cpus(threads)
    return measure_clock(cpus, loops=ROW_LOOPS, samples=ROW_SAMPLES) if cpus else None


def combined(*readings: ClockReading | None) -> ClockReading | None:
    """The readings of several moments as one (their CPUs' values together), or ``None``."""
    values = tuple(x for r in readings if r is not None for x in r.per_cpu_mhz)
    return ClockReading(values) if values else None
