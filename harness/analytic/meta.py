"""What a trace on meta tensors needs to be cheap and to count what the CPU would run.

Counting runs every op on the meta device (shapes only). Some of torch's Python helpers reached
from meta kernels import heavy modules for work that plain sizes do not need: the first call of a
``torch._compile._disable_dynamo`` helper imports ``torch._dynamo`` (about 1.2 s), and
``torch._check`` and type promotion import ``torch.fx.experimental.symbolic_shapes`` and
``sympy`` (about 0.5 s). While counting, light stand-ins answer those calls for plain values;
anything else they are asked loads the real module, so the worst case is the import they were
meant to spare. On exit the stand-ins leave ``sys.modules`` and torch as they found them.

And attention: on meta tensors ``torch._fused_sdp_choice`` answers "math", so
``scaled_dot_product_attention`` would be recorded as its decomposition (a causal one counted in
full); :class:`AttentionAsOnCpu` dispatches it as the CPU would.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes

#: The stand-ins in ``sys.modules`` now (``_standing_in``).
_ACTIVE: list[_StandIn] = []


class _StandIn(types.ModuleType):
    """A module placed in ``sys.modules`` under a heavy module's name while counting, with the real
    module's import spec and, for a package, its ``__path__`` (``importlib.util.find_spec`` and
    submodule imports work as for the real one). Attributes it defines answer directly; any other
    attribute imports the real module and is taken from there."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        try:
            self.__spec__ = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            self.__spec__ = None
        if self.__spec__ is not None and self.__spec__.submodule_search_locations is not None:
            self.__path__ = list(self.__spec__.submodule_search_locations)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.real(), attr)

    def real(self) -> types.ModuleType:
        """The real module, imported now; every stand-in leaves first, so that the real modules
        import one another and never a stand-in."""
        for module in list(_ACTIVE):
            _remove(module)
        return importlib.import_module(self.__name__)


def _remove(module: types.ModuleType) -> None:
    """Take ``module`` out of ``sys.modules`` and off its parent package, where it is still there."""
    name = module.__name__
    if sys.modules.get(name) is module:
        del sys.modules[name]
    parent_name, _, attr = name.rpartition(".")
    parent = sys.modules.get(parent_name)
    if parent is not None and vars(parent).get(attr) is module:    # getattr could import the real one
        delattr(parent, attr)


class _Dynamo(_StandIn):
    """``torch._dynamo``: ``disable(fn)`` returns ``fn`` (outside compilation the real wrapper
    changes nothing). torch caches the wrapper on ``fn`` as ``__dynamo_disable``; those caches are
    removed on exit, so a later ``torch.compile`` in the same process gets the real one."""

    def __init__(self) -> None:
        super().__init__("torch._dynamo")
        self.seen: list[Any] = []

    def disable(self, fn: Any = None, recursive: bool = True, wrapping: bool = True, reason: Any = None) -> Any:
        if fn is None:                                   # ``@disable(recursive=...)``: a decorator
            return lambda f: self.disable(f, recursive, wrapping, reason)
        self.seen.append(fn)
        return fn

    def forget(self) -> None:
        for fn in self.seen:
            if getattr(fn, "__dynamo_disable", None) is fn:
                with contextlib.suppress(AttributeError, TypeError):
                    delattr(fn, "__dynamo_disable")


def _plain(value: Any) -> bool:
    """True for a plain ``bool`` or ``int`` (lists and tuples of them included): no symbols."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return type(value) in (bool, int)


class _SymbolicShapes(_StandIn):
    """``torch.fx.experimental.symbolic_shapes``: the helpers meta kernels import (``torch._check``'s
    ``expect_true``, ``guard_or_false``/``guard_or_true``, ``guard_size_oblivious``,
    ``has_guarding_hint``, ``guarding_hint_or_throw``, ``is_nested_int``, ``statically_known_true``, ``sym_and``,
    ``sym_or``, ``sym_eq``) computed as the real ones compute them for plain bools and ints (meta
    tensors have plain sizes); a symbolic value goes to the real module."""

    def __init__(self) -> None:
        super().__init__("torch.fx.experimental.symbolic_shapes")

    def _real(self, name: str, *args: Any) -> Any:
        return getattr(self.real(), name)(*args)

    def expect_true(self, a: Any, skip: int = 0) -> Any:
        return a if type(a) is bool else self._real("expect_true", a, skip)

    def guard_or_false(self, a: Any) -> Any:
        return a if type(a) is bool else self._real("guard_or_false", a)

    def guard_or_true(self, a: Any) -> Any:
        return a if type(a) is bool else self._real("guard_or_true", a)

    def guard_size_oblivious(self, a: Any) -> Any:
        return a if type(a) is bool else self._real("guard_size_oblivious", a)

    def statically_known_true(self, a: Any) -> Any:
        return a if type(a) is bool else self._real("statically_known_true", a)

    def has_guarding_hint(self, a: Any) -> Any:
        return True if _plain(a) else self._real("has_guarding_hint", a)

    def guarding_hint_or_throw(self, a: Any) -> Any:
        return a if _plain(a) else self._real("guarding_hint_or_throw", a)

    def is_nested_int(self, s: Any) -> Any:
        return False if _plain(s) else self._real("is_nested_int", s)

    def sym_and(self, x: Any, *others: Any) -> Any:
        return all((x, *others)) if _plain((x, *others)) else self._real("sym_and", x, *others)

    def sym_or(self, x: Any, *others: Any) -> Any:
        return any((x, *others)) if _plain((x, *others)) else self._real("sym_or", x, *others)

    def sym_eq(self, x: Any, y: Any) -> Any:
        return _eq(x, y) if _plain(x) and _plain(y) else self._real("sym_eq", x, y)


class _BackwardSymbolicShapes(_SymbolicShapes):
    """The stand-in for a backward trace: also ``free_unbacked_symbols``, which the meta kernels of
    ``select_scatter`` and ``slice_scatter`` (the backward of ``select`` and ``slice``: attention's
    packed projections) ask of a tensor; none for a tensor of plain sizes."""

    def free_unbacked_symbols(self, x: Any) -> Any:
        return set() if _plain_sizes(x) else self._real("free_unbacked_symbols", x)


def _plain_sizes(x: Any) -> bool:
    """True for ``None``, plain values, and tensors whose sizes, strides and offset are plain ints (a
    meta tensor's): nothing in them can hold a symbol."""
    if x is None:
        return True
    if isinstance(x, torch.Tensor):
        return _plain((tuple(x.shape), tuple(x.stride()), x.storage_offset()))
    if isinstance(x, (list, tuple)):
        return all(_plain_sizes(v) for v in x)
    return _plain(x)


def _eq(x: Any, y: Any) -> bool:
    """``sym_eq`` on plain values: recursive equality of lists/tuples of ints."""
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_eq(a, b) for a, b in zip(x, y))
    return x == y


class _AnyRealBasic(type):
    """``isinstance(x, sympy.Basic)`` for the stand-in: false while sympy is not imported (no
    object can be a sympy expression then), the real answer once it is."""

    def __instancecheck__(cls, obj: Any) -> bool:
        real = sys.modules.get("sympy")
        return real is not None and not isinstance(real, _StandIn) and isinstance(obj, real.Basic)

    def __subclasscheck__(cls, sub: type) -> bool:
        real = sys.modules.get("sympy")
        return real is not None and not isinstance(real, _StandIn) and issubclass(sub, real.Basic)


class _Sympy(_StandIn):
    """``sympy``: imported by ``torch._prims_common.elementwise_dtypes`` (type promotion of every
    elementwise decomposition) only to ask whether an argument is a ``sympy.Basic``."""

    Basic = _AnyRealBasic("Basic", (), {})

    def __init__(self) -> None:
        super().__init__("sympy")


@contextlib.contextmanager
def _standing_in(module: _StandIn) -> Iterator[_StandIn]:
    """``module`` in ``sys.modules`` for the block, unless the real one is imported already."""
    if module.__name__ in sys.modules:
        yield module
        return
    sys.modules[module.__name__] = module
    _ACTIVE.append(module)
    try:
        yield module
    finally:
        _ACTIVE.remove(module)
        _remove(module)
        if isinstance(module, _Dynamo):
            module.forget()


#: ``torch._fused_sdp_choice``'s answer for the fused CPU kernel (``SDPBackend.FLASH_ATTENTION``).
_SDP_FLASH = 1
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _like_on_cpu(t: Any, mask: bool = False) -> Any:
    """A CPU tensor standing in for meta tensor ``t`` in ``torch._fused_sdp_choice``: its dtype,
    rank, batch and head sizes (the broadcast and grouped-query checks) and whether its last
    stride is 1 (the fused kernel needs it), with the sequence length (a mask: both lengths) set
    to 1, and never filled. Other values pass through."""
    if not isinstance(t, torch.Tensor):
        return t
    shape = list(t.shape)
    for i in ((-2, -1) if mask else (-2,)):
        if len(shape) >= -i:
            shape[i] = 1
    step = 1 if t.dim() == 0 or t.stride(-1) == 1 else 2
    wide = shape[:-1] + [shape[-1] * step] if shape else shape
    out = torch.empty(wide, dtype=t.dtype, device="cpu")
    return out[..., ::step] if step > 1 else out


def _as_additive(mask: Any, dtype: torch.dtype) -> Any:
    """A boolean mask made additive as the CPU's composite does before the fused kernel
    (``where(mask, 0, -inf)`` of the query's dtype); other masks unchanged."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        return mask
    neg = torch.scalar_tensor(-float("inf"), dtype=dtype, device=mask.device)
    zero = torch.scalar_tensor(0.0, dtype=dtype, device=mask.device)
    return torch.where(mask, zero, neg)


def sdpa_as_on_cpu(sdpa: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """``sdpa(*args, **kwargs)``, except that on meta tensors the backend is the one the CPU would
    choose: the choice is asked of CPU stand-ins (``_like_on_cpu``: same dtypes, ranks, batch and
    head sizes, last-dim strides; sequence lengths 1, never filled); when it is the fused CPU
    kernel, a boolean mask is made additive and
    ``aten._scaled_dot_product_flash_attention_for_cpu`` runs on the meta tensors (it has a meta
    kernel), as a fake CPU tensor would dispatch it; otherwise the math path runs, as on the CPU.
    3-D inputs the choice fuses (torch 2.14 does; 2.13 takes the math path for them) run as one
    batch of 4-D ones, as the CPU composite runs them."""
    a = {**dict(zip(_SDPA_ARGS, args)), **kwargs}
    q, k, v = a.get("query"), a.get("key"), a.get("value")
    if not all(isinstance(t, torch.Tensor) and t.is_meta for t in (q, k, v)):
        return sdpa(*args, **kwargs)
    with _disable_current_modes():                          # the choice is not part of the recorded pass
        choice = torch._fused_sdp_choice(
            _like_on_cpu(q), _like_on_cpu(k), _like_on_cpu(v), attn_mask=_like_on_cpu(a.get("attn_mask"), mask=True),
            dropout_p=a.get("dropout_p", 0.0), is_causal=a.get("is_causal", False), scale=a.get("scale"),
            enable_gqa=a.get("enable_gqa", False))
    if choice != _SDP_FLASH:
        return sdpa(*args, **kwargs)
    mask = _as_additive(a.get("attn_mask"), q.dtype)
    three = q.dim() == 3                      # a torch that fuses 3-D inputs runs them as one batch
    if three:
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
        mask = mask.unsqueeze(0) if isinstance(mask, torch.Tensor) and mask.dim() == 3 else mask
    out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, a.get("dropout_p", 0.0), a.get("is_causal", False), attn_mask=mask, scale=a.get("scale"))[0]
    return out.squeeze(0) if three else out


class AttentionAsOnCpu(TorchFunctionMode):
    """Attention on meta tensors counted as on the CPU (:func:`sdpa_as_on_cpu`), wherever it is
    called from: direct calls reach this mode; calls from inside another torch function (such as
    ``F.multi_head_attention_forward``, which runs with the mode stashed) reach
    ``torch.nn.functional.scaled_dot_product_attention``, replaced for the trace and restored after."""

    def __enter__(self) -> AttentionAsOnCpu:
        original = self._original = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = lambda *a, **kw: sdpa_as_on_cpu(original, a, kw)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            F.scaled_dot_product_attention = self._original

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if getattr(func, "__name__", "") == "scaled_dot_product_attention":
            return sdpa_as_on_cpu(func, args, dict(kwargs or {}))
        return func(*args, **(kwargs or {}))


#: Held for a whole trace on meta tensors: the stand-ins and the patched attention are process-wide,
#: so two threads counting at once take turns (a trace takes milliseconds).
_TRACE_LOCK = threading.RLock()


@contextlib.contextmanager
def meta_mode(backward: bool = False) -> Iterator[None]:
    """The context for a trace on meta tensors: the stand-ins (where the real modules are not
    imported yet) and attention dispatched as on the CPU; one such trace at a time. ``backward``: the
    trace runs autograd's backward too (:class:`_BackwardSymbolicShapes`)."""
    shapes = _BackwardSymbolicShapes() if backward else _SymbolicShapes()
    with _TRACE_LOCK, _standing_in(_Dynamo()), _standing_in(shapes), _standing_in(_Sympy()), AttentionAsOnCpu():
        yield
