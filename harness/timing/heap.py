"""The host heap held steady while layers are timed: glibc's allocator told not to hand memory back.

PyTorch's CPU allocator takes every tensor from ``malloc``. glibc serves a block above its mmap
threshold with a fresh ``mmap`` and returns it on ``free``; the threshold itself moves as the
process frees such blocks (glibc's dynamic threshold, up to 32 MiB on 64-bit), and ``free`` trims
the heap's top above ``M_TRIM_THRESHOLD``. So whether a layer's output comes from reused memory or
from new pages, each first touched and zeroed by the kernel (a page fault per 4 KiB), depends on
what the process allocated before: the same 1x1 convolution (52 to 312 channels on 1x52x56x56,
2 threads, a 3.9 MB output) took 4.2-4.9 ms in 8 fresh processes of one script on a 2-vCPU AMD
EPYC VM and 0.9-1.2 ms in 4 more with the thresholds fixed, and 0.91, 0.94 and 4.0 ms in the 3
processes of one ``layerbench run``: one row, two speeds, no host to blame.

``steady`` fixes the mmap threshold at its largest (32 MiB) and the trim threshold at 1 GiB, as
the allocators that PyTorch's CPU tuning guides recommend (jemalloc, tcmalloc) behave: memory freed
by one call serves the next. A tensor above 32 MiB is still mapped anew each call; the page faults a
call takes are counted (``faults``) and stored with the row. Elsewhere than glibc it does nothing
and says so; ``LAYERBENCH_HEAP=default`` in the environment leaves the allocator as it is (to time
what a process with glibc's defaults sees, moods and all).
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys

from harness.errors import SpecError

#: glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: The largest mmap threshold glibc accepts on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``), bytes.
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the heap's top kept, not trimmed, up to this (bytes).
TRIM_THRESHOLD = 2**30
#: What ``steady`` set, as stored in the ``heap`` column.
STEADY = "glibc: mmap threshold 32 MiB, trim threshold 1 GiB"
DEFAULT = "allocator default"
#: The environment variable that leaves the allocator alone (``default``).
ENV = "LAYERBENCH_HEAP"

_state: list[str] = []


def steady() -> str:
    """Fix glibc's thresholds once per process (module docstring); what is in force: ``STEADY``,
    or ``DEFAULT`` where there is no glibc ``mallopt`` or it refused."""
    if not _state:
        _state.append(_set())
    return _state[0]


def _set() -> str:
    if not sys.platform.startswith("linux") or os.environ.get(ENV) == "default":
        return DEFAULT
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):                 # not glibc (musl has no mallopt)
        return DEFAULT
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return STEADY if ok else DEFAULT


def check_env() -> None:
    """``SpecError`` unless ``LAYERBENCH_HEAP`` is unset, ``steady`` or ``default`` (a typo would
    otherwise time under a policy nobody asked for)."""
    value = os.environ.get(ENV)
    if value not in (None, "", "steady", "default"):
        raise SpecError(ENV, value, "steady (the default: the heap held steady) or default (the allocator "
                        "left alone)")


def faults() -> int:
    """Minor page faults this process has taken so far (``getrusage``; each a page first touched)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
