"""Counting the backward pass: autograd's ops, one row each, with the forward's table columns.

``harness.count(model, *inputs, passes="backward", grads=...)`` lands here. The forward runs on
meta tensors (or fake ones, as the forward count does) with autograd on, *unrecorded* unless
``passes="forward+backward"``; then ``torch.autograd.grad`` computes the gradients asked for
under the same recorder, op by op: each row is one aten op autograd dispatched, priced by the
convention's formulas (the backward ops' canonical formulas: ``backward_formulas``) and by
``torch.utils.flop_counter`` as the independent count (``disagreements`` says why they differ).

* ``passes``: ``"forward"`` (the forward table, unchanged), ``"backward"``, or
  ``"forward+backward"`` (the forward recorded with autograd on, then the backward; every
  additive column is the sum of the two passes; ``params`` counts each parameter once).
* ``grads``: which gradients the backward computes. ``None`` (default): every gradient the layer
  has (its floating-point inputs', and its parameters' if it has any). ``("input", "weight")``:
  both, and both must exist; ``("weight",)``: the parameters' only (weights and biases; a first
  layer: the input does not require grad); ``("input",)``: the inputs' only (parameters frozen with
  ``requires_grad_(False)`` for the trace, then restored). Asking for a gradient the layer
  cannot have is a :class:`~harness.errors.SpecError`.

Gradients are returned by ``torch.autograd.grad`` (nothing is accumulated into ``.grad``, so the
model is left as it was, and no ``AccumulateGrad`` copy is counted). The backward rows carry the
module whose forward made the autograd node that ran them (``torch._C._current_autograd_node``).

**Saved activations**: every tensor autograd saves for the backward during the forward
(``torch.autograd.graph.saved_tensors_hooks``), each storage once at its size in bytes,
parameters and buffers left out (they live anyway): what a training step keeps alive between its
forward and backward for this layer, the layer's input included when the backward reads it.

On meta tensors nothing heavy is imported (``harness.analytic.meta`` answers the helpers the
backward's meta kernels ask, ``free_unbacked_symbols`` included).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from harness.analytic.canonical import CANONICAL
from harness.analytic.conventions import Convention
from harness.analytic.counter import (
    InputLike,
    ModuleCall,
    OpRecord,
    RawCall,
    _all_meta,
    _device_of,
    _fake_mode,
    _make_input,
    _ModuleStack,
    _Recorder,
    to_frame,
)
from harness.analytic.disagreements import ZERO_IN_FLOP_COUNTER, explain
from harness.analytic.meta import meta_mode
from harness.errors import CountError, SpecError
from harness.layers.dtypes import parse_dtype
from harness.record.row import GRADIENTS as GRADS
from harness.record.row import PASSES

# --- arguments ----------------------------------------------------------------------------------

def parse_passes(value: str) -> str:
    """``value`` if it names a pass (:data:`PASSES`), else a SpecError."""
    if value not in PASSES:
        raise SpecError("passes", value, "one of " + ", ".join(PASSES))
    return value


def parse_grads(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """The gradients asked for, in :data:`GRADS` order (``None``: every gradient the layer has).
    A single name is one gradient (``"weight"``); anything else is a SpecError."""
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or any(n not in GRADS for n in names):
        raise SpecError("grads", value, "a non-empty subset of ('input', 'weight'), e.g. ('weight',)")
    return tuple(g for g in GRADS if g in names)


def check_convention(convention: Convention) -> None:
    """Module-level conventions (thop, ptflops, ...) price forward calls of modules: no backward."""
    if convention.modules:
        raise SpecError("convention", convention.name, "an op-level convention (canonical, flop_counter or "
                        "fvcore) for a backward pass: module-level tools count forward module calls only")


# --- the trace ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TrainingTrace:
    """The recorded passes: ``forward`` empty unless it was asked for; ``grads`` the gradients the
    backward computed; ``saved_bytes`` the analytic saved-activation bytes (module docstring)."""

    forward: tuple[RawCall, ...]
    forward_modules: tuple[ModuleCall, ...]
    backward: tuple[RawCall, ...]
    grads: tuple[str, ...]
    saved_bytes: int


class _NodeOwners:
    """Which module made each autograd node: after each module's forward, the nodes reachable from its
    outputs that no inner module claimed are its own. Answers ``current()`` for the node running."""

    def __init__(self, model: nn.Module | None) -> None:
        self.owner: dict[int, str] = {}
        self.keep: list[Any] = []                      # the nodes, alive so their ids stay theirs
        self.modules = dict(model.named_modules()) if model is not None else {}
        self.handles = [m.register_forward_hook(self._claimer(name), always_call=True)
                        for name, m in self.modules.items()]

    def _claimer(self, name: str) -> Callable[..., None]:
        def hook(_mod: nn.Module, _args: Any, out: Any) -> None:
            stack = [t.grad_fn for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.grad_fn]
            while stack:
                node = stack.pop()
                if node is None or id(node) in self.owner:
                    continue
                self.owner[id(node)] = name
                self.keep.append(node)
                stack.extend(n for n, _ in node.next_functions)
        return hook

    def current(self) -> tuple[str, nn.Module | None]:
        node = torch._C._current_autograd_node()
        path = self.owner.get(id(node)) if node is not None else None
        return ("", None) if path is None else (path, self.modules.get(path))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):   # a tensor without storage (some subclasses)
        return None


class _SavedTensors:
    """Every tensor autograd saves during the forward, by storage: the saved-activation bytes."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude                          # storages of parameters and buffers
        self.sizes: dict[int, int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key is not None and key not in self.exclude:
            self.sizes[key] = t.untyped_storage().nbytes()
        return t                                        # no op dispatched: the forward's rows stay as they are

    def hooks(self) -> contextlib.AbstractContextManager[None]:
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    @property
    def nbytes(self) -> int:
        return sum(self.sizes.values())


class _BackwardRecorder(_Recorder):
    """The forward's recorder, with parameters also recognised by storage: the backward reads them
    through views that autograd saved (``t(weight)`` of a linear layer)."""

    def __init__(self, modules: _NodeOwners, params: dict[int, tuple[str, int]],
                 by_storage: dict[int, tuple[str, int]]) -> None:
        super().__init__(modules, params)
        self.by_storage = by_storage

    def _params_read(self, args: Any, kwargs: Any) -> list[tuple[str, int]]:
        found = []
        for t in tree_flatten((args, kwargs))[0]:
            if not isinstance(t, torch.Tensor):
                continue
            hit = self.params.get(id(t)) or self.by_storage.get(_storage_key(t))
            if hit is not None:
                found.append(hit)
        return list(dict.fromkeys(found))


@contextlib.contextmanager
def _requires_grad(params: Sequence[torch.Tensor], flag: bool) -> Iterator[None]:
    """``requires_grad_(flag)`` on ``params`` for the block, each restored after."""
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(flag)
        yield
    finally:
        for p, b in zip(params, before):
            p.requires_grad_(b)


def _differentiable(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())


def _resolve_grads(asked: tuple[str, ...] | None, inputs: Sequence[Any], params: Sequence[torch.Tensor],
                   where: str) -> tuple[str, ...]:
    """The gradients to compute, or a SpecError naming what cannot be had."""
    has_input = any(_differentiable(x) for x in inputs)
    if asked is None:
        found = tuple(g for g, ok in (("input", has_input), ("weight", bool(params))) if ok)
        if not found:
            raise SpecError("grads", None, "a layer with a floating-point input or parameters to differentiate",
                            where)
        return found
    if "weight" in asked and not params:
        raise SpecError("grads", asked, "('input',): the layer has no parameters, so no weight gradient", where)
    if "input" in asked and not has_input:
        dtypes = ", ".join(sorted({str(x.dtype).removeprefix("torch.") for x in inputs
                                   if isinstance(x, torch.Tensor)})) or "no tensor"
        raise SpecError("grads", asked, f"('weight',): the input ({dtypes}) cannot take a gradient", where)
    return asked


def _param_maps(model: nn.Module | Callable[..., Any]) -> tuple[dict[int, tuple[str, int]], dict[int, tuple[str, int]],
                                                                 list[torch.Tensor], set[int]]:
    """Parameters by id and by storage, the floating-point ones, and the storages of every parameter
    and buffer (left out of the saved-activation bytes)."""
    by_id: dict[int, tuple[str, int]] = {}
    by_storage: dict[int, tuple[str, int]] = {}
    floating: list[torch.Tensor] = []
    held: set[int] = set()
    if not isinstance(model, nn.Module):
        return by_id, by_storage, floating, held
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in by_id:
            continue
        by_id[id(p)] = (name, p.numel())
        key = _storage_key(p)
        if key is not None:
            by_storage.setdefault(key, (name, p.numel()))
            held.add(key)
        if p.is_floating_point():
            floating.append(p)
    for b in model.buffers():
        key = _storage_key(b)
        if key is not None:
            held.add(key)
    return by_id, by_storage, floating, held


def _annotate(raw: RawCall, backward: bool) -> RawCall:
    """``flop_counter_reason`` (canonical against torch) and, for the backward's product ops torch has
    no formula for, the 0 FlopCounterMode counts them as."""
    torch_flops = raw.flop_counter_flops
    if backward and torch_flops is None and raw.call.op.__name__ in ZERO_IN_FLOP_COUNTER:
        torch_flops = 0
    entry = None if raw.is_view else CANONICAL.lookup(raw.call.op)
    ours = 0 if raw.is_view else (entry.formula(raw.call).flops if entry is not None else None)
    return replace(raw, flop_counter_flops=torch_flops, flop_counter_reason=explain(raw.call, ours, torch_flops))


def _trace_training(model: nn.Module | Callable[..., Any], inputs: Sequence[Any], torch_dtype: torch.dtype,
                    device: torch.device, mode: Any, record_forward: bool, asked: tuple[str, ...] | None,
                    kwargs: dict[str, Any]) -> TrainingTrace:
    """One forward (recorded if ``record_forward``) and one recorded backward under ``mode``."""
    params, by_storage, floating, held = _param_maps(model)
    where = type(model).__name__ if isinstance(model, nn.Module) else getattr(model, "__name__", "model")
    with mode:
        args = [_make_input(x, torch_dtype, device, i) for i, x in enumerate(inputs)]
    grads = _resolve_grads(asked, args, floating, where)
    module = model if isinstance(model, nn.Module) else None
    stack = _ModuleStack(model) if record_forward and module is not None else None
    owners = _NodeOwners(module)
    saved = _SavedTensors(held)
    try:
        with mode:
            args = [x.detach().requires_grad_("input" in grads) if _differentiable(x) else x for x in args]
        forward = _Recorder(stack, dict(params)) if record_forward else None
        if stack is not None and forward is not None:
            stack.position = lambda: len(forward.calls)
        with _requires_grad(floating, "weight" in grads), torch.enable_grad():
            with mode, forward or contextlib.nullcontext(), saved.hooks():
                out = model(*args, **kwargs)
            outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
            wrt = ([x for x in args if _differentiable(x)] if "input" in grads else []) + \
                  (floating if "weight" in grads else [])
            if not outs:
                raise SpecError("grads", grads, f"gradients that reach the output of {where}", where)
            with mode:
                grad_outs = [torch.empty_like(t) for t in outs]
            backward = _BackwardRecorder(owners, dict(params), by_storage)
            if forward is not None:
                backward.first_read = forward.first_read   # parameters counted once over both passes
            with mode, backward:
                torch.autograd.grad(outs, wrt, grad_outs, allow_unused=True)
    finally:
        owners.remove()
        if stack is not None:
            stack.remove()
    module_calls = sorted(stack.finished, key=lambda m: m.start) if stack is not None else []
    return TrainingTrace(
        forward=tuple(_annotate(r, False) for r in (forward.calls if forward is not None else [])),
        forward_modules=tuple(module_calls),
        backward=tuple(_annotate(r, True) for r in backward.calls),
        grads=grads, saved_bytes=saved.nbytes)


def record_training(model: nn.Module | Callable[..., Any], *inputs: InputLike, dtype: str | torch.dtype = "fp32",
                    passes: str = "backward", grads: str | Sequence[str] | None = None,
                    **kwargs: Any) -> TrainingTrace:
    """Trace ``model(*inputs, **kwargs)`` and its backward for ``grads`` (module docstring): on meta
    tensors when the model and inputs allow it (no heavy import), else on fake tensors."""
    record_forward = parse_passes(passes) == "forward+backward"
    asked = parse_grads(grads)
    torch_dtype = parse_dtype(dtype)
    try:
        if _all_meta(model, inputs):
            try:
                with meta_mode(backward=True):
                    return _trace_training(model, inputs, torch_dtype, torch.device("meta"),
                                           contextlib.nullcontext(), record_forward, asked, kwargs)
            except SpecError:
                raise
            except Exception:  # noqa: BLE001 -- an op without a meta kernel: the fake mode has fallbacks
                pass
        return _trace_training(model, inputs, torch_dtype, _device_of(model), _fake_mode(), record_forward,
                               asked, kwargs)
    except SpecError:
        raise
    except Exception as e:
        raise CountError(f"counting failed while tracing the backward pass on fake tensors: "
                         f"{type(e).__name__}: {e}") from e


# --- pricing ------------------------------------------------------------------------------------

#: The fused attention kernels' backward ops (CPU flash, CUDA flash, efficient, cuDNN): each recomputes
#: the scores and does five products per (query, key) pair (FlashAttention-2, Algorithm 2).
FUSED_ATTENTION_BACKWARD = frozenset({
    "_scaled_dot_product_flash_attention_for_cpu_backward", "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_efficient_attention_backward", "_scaled_dot_product_cudnn_attention_backward"})


def attention_convention(trace: TrainingTrace) -> str | None:
    """Which attention backward a count followed, in words (``None``: the backward has no attention):
    a fused kernel's (scores recomputed: 2.5x the forward's FLOPs when ``d_qk == d_v``) or the math
    path's ops as dispatched (two products per forward product: 2x)."""
    names = {r.call.op.__name__ for r in trace.backward}
    fused = sorted(names & FUSED_ATTENTION_BACKWARD)
    if fused:
        return (f"attention backward counted as the fused kernel {fused[0]}: scores recomputed, 5 products per "
                "(query, key) pair, 2.5x the forward's FLOPs when d_qk = d_v (FlashAttention-2)")
    if "_softmax_backward_data" in names and "bmm" in names:
        return ("attention backward counted as the math path as dispatched (bmm, _softmax_backward_data): 2 "
                "products per forward product, 2x the forward's product FLOPs")
    return None


def training_records(convention: Convention, trace: TrainingTrace) -> tuple[list[OpRecord], list[str]]:
    """The priced rows of both passes, in order, and each row's pass (``forward`` or ``backward``)."""
    check_convention(convention)
    forward = convention.price(trace.forward, trace.forward_modules) if trace.forward else []
    backward = convention.price(trace.backward, ())
    return forward + backward, ["forward"] * len(forward) + ["backward"] * len(backward)


def training_table(convention: Convention, trace: TrainingTrace) -> pd.DataFrame:
    """The count table of a traced training step: the forward table's columns, then ``pass`` and
    ``flop_counter_reason`` (why a canonical row disagrees with torch.utils.flop_counter; canonical
    convention only). ``attrs["saved_activation_bytes"]`` holds the trace's saved bytes."""
    records, passes = training_records(convention, trace)
    frame = to_frame(records, convention.name)
    frame["pass"] = passes
    shown = (frame["flop_counter_agrees"] == False).fillna(False).tolist()  # noqa: E712
    canonical = convention.name == "canonical"
    frame["flop_counter_reason"] = pd.Series(
        [r.flop_counter_reason if canonical and disagrees else None for r, disagrees in zip(records, shown)],
        dtype=object)
    frame.attrs["saved_activation_bytes"] = trace.saved_bytes
    frame.attrs["grads"] = trace.grads
    frame.attrs["count_note"] = attention_convention(trace)
    return frame


def saved_activation_bytes(model: nn.Module | Callable[..., Any], *inputs: InputLike,
                           dtype: str | torch.dtype = "fp32", grads: str | Sequence[str] | None = None,
                           **kwargs: Any) -> int:
    """Bytes autograd keeps from the forward for the backward of ``grads`` (module docstring): the
    analytic peak-memory figure of a training step's saved activations."""
    return record_training(model, *inputs, dtype=dtype, passes="backward", grads=grads, **kwargs).saved_bytes
