"""One registry per counting convention: aten op -> formula, filled by a decorator.

Shaped after ``torch/utils/flop_counter.py``: keys are ``OpOverloadPacket`` objects
(``torch.ops.aten.convolution``), a duplicate registration raises at import time, and a
convention derived from another is a merged copy (``FormulaRegistry.derive``), never a
mutation of its parent.

A formula is a small pure function of an :class:`OpCall` -- the op's shapes, dtypes and
non-tensor arguments, recorded at the dispatcher -- and returns a :class:`Cost`. It never
sees a real tensor and never runs the op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch

OpKey = torch._ops.OpOverloadPacket


@dataclass(frozen=True, slots=True)
class TensorMeta:
    """What a formula may know of a tensor: shape, stride and dtype."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, t: torch.Tensor) -> TensorMeta:
        return cls(tuple(int(s) for s in t.shape), tuple(int(s) for s in t.stride()), t.dtype)

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def distinct_numel(self) -> int:
        """Elements actually stored: broadcast (stride-0) dimensions hold one element."""
        return prod(s for s, st in zip(self.shape, self.stride) if st != 0 or s == 0)

    def __str__(self) -> str:
        return "x".join(map(str, self.shape)) if self.shape else "scalar"


#: Batch-norm ops whose ``training`` flag is argument 5 (``native_batch_norm`` schema order).
BATCH_NORMS = frozenset({"native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
                         "cudnn_batch_norm", "miopen_batch_norm"})


def batch_norm_training(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool | None:
    """Whether the batch-norm op ``name`` runs in training mode (``None``: not one of ``BATCH_NORMS``).
    The no-stats overload of ``_native_batch_norm_legit`` takes the flag at argument 3."""
    if name not in BATCH_NORMS:
        return None
    if name == "_native_batch_norm_legit" and len(args) > 3 and isinstance(args[3], bool):
        return args[3]
    return bool(args[5] if len(args) > 5 else kwargs.get("training", False))


@dataclass(frozen=True, slots=True)
class OpCall:
    """One op as the dispatcher saw it, tensors replaced by :class:`TensorMeta`.

    ``module_class`` is the class of the innermost ``nn.Module`` whose forward was running
    (``None`` outside any module); module-level presets (thop, ptflops, ...) read it.
    """

    op: OpKey
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    outputs: tuple[TensorMeta, ...]
    module_class: type | None = None

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """Positional argument ``index`` or keyword ``name`` (aten schemas allow both)."""
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(name, default)

    @property
    def tensors(self) -> list[TensorMeta]:
        return [a for a in _flatten(self.args) if isinstance(a, TensorMeta)]

    @property
    def out(self) -> TensorMeta:
        return self.outputs[0]


def _flatten(values: Iterable[Any]) -> Iterator[Any]:
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _flatten(v)
        else:
            yield v


@dataclass(frozen=True, slots=True)
class Cost:
    """FLOPs and MACs of one op. ``macs`` counts multiply-accumulates (0 for ops without products)."""

    flops: int
    macs: int = 0


#: A formula maps a recorded call to its cost; ``None`` means "this convention does not count it".
Formula = Callable[[OpCall], "Cost | None"]


@dataclass(frozen=True, slots=True)
class Entry:
    formula: Formula
    category: str


@dataclass
class FormulaRegistry:
    """Op -> (formula, category) for one convention.

    ``category`` names the op family (``conv``, ``matmul``, ``attention``, ``norm``,
    ``activation``, ``pool``, ``softmax``, ``elementwise``, ``reduction``, ``movement``,
    ``view``); the analysis groups by it.
    """

    name: str
    description: str = ""
    _entries: dict[OpKey, Entry] = field(default_factory=dict)

    def register(self, ops: OpKey | Iterable[OpKey], category: str) -> Callable[[Formula], Formula]:
        """Decorator: register ``formula`` for each op in ``ops``; duplicates raise RuntimeError."""
        keys = [ops] if isinstance(ops, OpKey) else list(ops)

        def deco(formula: Formula) -> Formula:
            for key in keys:
                if not isinstance(key, OpKey):
                    raise TypeError(f"{self.name}.register: expected an OpOverloadPacket such as "
                                    f"torch.ops.aten.mm, got {key!r} of type {type(key).__name__}")
                if key in self._entries:
                    raise RuntimeError(f"{self.name}: duplicate registration for {key}")
                self._entries[key] = Entry(formula, category)
            return formula

        return deco

    def derive(self, name: str, description: str = "", *, drop: Iterable[OpKey] = ()) -> FormulaRegistry:
        """A new registry starting from a copy of this one (minus ``drop``), for a preset to override."""
        dropped = set(drop)
        entries = {k: v for k, v in self._entries.items() if k not in dropped}
        return FormulaRegistry(name, description, entries)

    def override(self, ops: OpKey | Iterable[OpKey], category: str | None = None) -> Callable[[Formula], Formula]:
        """Decorator for a derived registry: replace the formula of ops it already holds (or add them)."""
        keys = [ops] if isinstance(ops, OpKey) else list(ops)

        def deco(formula: Formula) -> Formula:
            for key in keys:
                old = self._entries.get(key)
                cat = category or (old.category if old else None)
                if cat is None:
                    raise TypeError(f"{self.name}.override: {key} is new here; give its category")
                self._entries[key] = Entry(formula, cat)
            return formula

        return deco

    def lookup(self, op: OpKey) -> Entry | None:
        return self._entries.get(op)

    def __contains__(self, op: object) -> bool:
        return op in self._entries

    def __iter__(self) -> Iterator[OpKey]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
