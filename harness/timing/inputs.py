"""Random timing inputs, drawn once per case with a recorded seed, and how many sets to rotate.

Never zeros: zeros can run faster than real data (DeepBench #104; a bf16 GEMM 13 % faster on
an H200 of this workplace) and hide unwritten outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from harness.errors import SpecError

#: Most input sets ``rotation_sets`` asks for (memory grows with it).
MAX_ROTATION = 16


def random_inputs(shapes: Sequence[Sequence[int]], dtype: torch.dtype, device: str | torch.device = "cpu",
                  seed: int = 0, sets: int = 1, memory_format: torch.memory_format | None = None
                  ) -> list[tuple[torch.Tensor, ...]]:
    """``sets`` argument tuples of standard-normal tensors (integers in [0, 100) for integer dtypes).

    The values depend only on ``seed``, the shapes, dtype and device type: a generator of the
    target device is seeded once and draws every set in order. ``memory_format`` (e.g.
    ``torch.channels_last``) applies to 4-D tensors (``channels_last_3d`` to 5-D).
    """
    if sets < 1:
        raise SpecError("sets", sets, "an integer >= 1")
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    out = []
    for _ in range(sets):
        tensors = []
        for shape in shapes:
            if dtype.is_floating_point:
                t = torch.randn(tuple(shape), generator=gen, dtype=dtype, device=dev)
            else:
                t = torch.randint(0, 100, tuple(shape), generator=gen, dtype=dtype, device=dev)
            if memory_format is not None and t.dim() == (5 if memory_format == torch.channels_last_3d else 4):
                t = t.contiguous(memory_format=memory_format)
            tensors.append(t)
        out.append(tuple(tensors))
    return out


def rotation_sets(bytes_per_set: int, cache_bytes: int, cap: int = MAX_ROTATION) -> int:
    """Input sets to rotate so that together they span twice the cache: ``ceil(2 * cache / bytes)``,
    between 1 and ``cap``. Rotation matters for ops whose inputs fit in the cache."""
    if bytes_per_set <= 0 or cache_bytes <= 0:
        return 1
    return max(1, min(cap, math.ceil(2 * cache_bytes / bytes_per_set)))


#: Pool windows start on this byte boundary (a page: every case and every process places its
#: inputs alike relative to pages).
ALIGN_BYTES = 4096
#: A pool holds this many times the cache size: room for ``rotation_sets`` sets (about twice the
#: cache) of any case whose set fits in the cache.
POOL_CACHES = 3
#: Most bytes all pools together keep: a pool that would not fit is not made (its cases get fresh
#: inputs), so a CPU with a very large cache never alternates between dtypes' pools.
MAX_POOL_BYTES = 2 * 2**30


class InputPool:
    """Timing inputs as views of one random pool per dtype and device, drawn once per process.

    Drawing ``rotation_sets`` fresh sets costs about 2x the last-level cache of random numbers per
    case (64 MiB and 30 ms on a 32 MiB L3): more than many cases' measurement. A pool of
    ``POOL_CACHES`` x the cache of standard-normal values (integers in [0, 100) for integer
    dtypes; ``torch.Generator`` seed 0) is made the first time a dtype is asked for, and every
    case takes its sets as consecutive page-aligned windows of it, starting at an offset derived
    from the case's seed: values depend only on the seed, the shapes, the dtype, the device type
    and the pool's size. (The pool is one drawn block of ``POOL_BLOCK`` values tiled with rotated
    copies: ``_tiled``.) Cases too large for the pool, and cases of a dtype whose pool would take the
    pools past ``max_bytes``, get fresh ``random_inputs``. Inputs are shared: a layer must not write
    into its inputs (no built-in layer does)."""

    def __init__(self, max_bytes: int = MAX_POOL_BYTES) -> None:
        self.max_bytes = max_bytes
        self._pools: dict[tuple[torch.dtype, str, int], torch.Tensor] = {}

    def inputs(self, shapes: Sequence[Sequence[int]], dtype: torch.dtype, device: str | torch.device,
               seed: int, sets: int, cache_bytes: int,
               memory_format: torch.memory_format | None = None) -> list[tuple[torch.Tensor, ...]]:
        """``sets`` argument tuples of ``shapes``, as views of the pool (see the class)."""
        if sets < 1:
            raise SpecError("sets", sets, "an integer >= 1")
        item = torch.empty((), dtype=dtype).element_size()
        align = max(1, ALIGN_BYTES // item)
        sizes = [math.prod(s) for s in shapes]
        per_set = sum(_round_up(n, align) for n in sizes)
        capacity = _round_up(POOL_CACHES * max(cache_bytes, ALIGN_BYTES) // item, align)
        pool = self._pool(dtype, torch.device(device), capacity) if sets * per_set <= capacity else None
        if pool is None:
            return random_inputs(shapes, dtype, device, seed=seed, sets=sets, memory_format=memory_format)
        offset = (int(seed) % ((capacity - sets * per_set) // align + 1)) * align
        out = []
        for _ in range(sets):
            tensors = []
            for shape, n in zip(shapes, sizes):
                tensors.append(_shaped(pool[offset:offset + n], tuple(shape), memory_format))
                offset += _round_up(n, align)
            out.append(tuple(tensors))
        return out

    def _pool(self, dtype: torch.dtype, device: torch.device, capacity: int) -> torch.Tensor | None:
        """The pool of ``capacity`` values, its first on a page boundary (made on first use); None
        when making it would take the pools past ``max_bytes``."""
        key = (dtype, str(device), capacity)
        if key in self._pools:
            return self._pools[key]
        item = torch.empty((), dtype=dtype).element_size()
        if sum(p.nbytes for p in self._pools.values()) + capacity * item > self.max_bytes:
            return None
        raw = torch.empty(capacity + ALIGN_BYTES // item, dtype=dtype, device=device)
        lead = (-raw.data_ptr() % ALIGN_BYTES) // item
        self._pools[key] = _tiled(raw[lead:lead + capacity])
        return self._pools[key]

    def clear(self) -> None:
        """Free every pool (the runner calls it at the end of a run)."""
        self._pools.clear()


#: Values drawn for a pool: one block of this many, the rest of the pool rotated copies of it.
POOL_BLOCK = 2**20


def _tiled(pool: torch.Tensor) -> torch.Tensor:
    """``pool`` (1-D) filled: one drawn block of ``POOL_BLOCK`` values (seed 0), then copies of it
    each rotated by a different shift, so no two windows repeat. Drawing all of them costs 3x more
    (a 96 MiB fp32 pool: 0.15 s drawn, 0.045 s tiled, most of it first-touch page faults)."""
    n = pool.numel()
    block = random_inputs([(min(n, POOL_BLOCK),)], pool.dtype, pool.device, seed=0)[0][0]
    b = block.numel()
    for k, start in enumerate(range(0, n, b)):
        tile = pool[start:start + b]
        shift = (k * 4099) % b                         # a prime number of elements per tile
        head = min(b - shift, tile.numel())
        tile[:head].copy_(block[shift:shift + head])
        if tile.numel() > head:
            tile[head:].copy_(block[:tile.numel() - head])
    return pool


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _shaped(flat: torch.Tensor, shape: tuple[int, ...], memory_format: torch.memory_format | None) -> torch.Tensor:
    """``flat`` viewed as ``shape`` with exactly the strides ``.contiguous(memory_format=...)`` gives
    a fresh tensor (``channels_last`` for 4-D, ``channels_last_3d`` for 5-D shapes; torch keeps the
    plain strides where a size-1 dimension makes them count as that format already, and kernels
    choose by strides)."""
    dims = len(shape)
    if memory_format is not None and dims == (5 if memory_format == torch.channels_last_3d else 4):
        ref = torch.empty(shape, device="meta").contiguous(memory_format=memory_format)
        return flat.as_strided(shape, ref.stride())
    return flat.view(shape)


#: The process's pool (``prepare_case`` draws timing inputs from it).
POOL = InputPool()
