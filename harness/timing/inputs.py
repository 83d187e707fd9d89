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
