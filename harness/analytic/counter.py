"""Count a model's forward pass at the dispatcher, on meta or fake tensors: one row per aten op.

Nothing real is computed: a module whose weights are all on the meta device runs on meta
tensors (``harness.analytic.meta``: no heavy imports, attention dispatched as on the CPU); any
other model runs with inputs as ``FakeTensor``s (shape, dtype, device and strides only) and
parameters faked on first use. A ``TorchDispatchMode`` above either records each op with its
shapes, the innermost ``nn.Module`` it ran under (forward hooks, removed in ``finally``) and
the parameters it read. Each record is priced by a convention's
formula registry, and by ``torch.utils.flop_counter``'s own registry as an independent check.

Bytes are the minimum traffic of the op as dispatched (ShuffleNet V2's memory access cost): each
tensor it reads counted once, each tensor it writes counted once, at the dtype's itemsize;
broadcast (stride-0) dimensions are stored once; views move nothing. A backward op is passed
every tensor its gradients could need plus a mask of the gradients asked for; the arguments it
does not read for that mask (``_UNREAD``: the saved input of a convolution when only grad-input
is asked, the shape-only ``self`` of a pooling backward, ...) are not counted.

The backward pass is traced by :mod:`harness.analytic.backward` with the same recorder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import flop_registry

from harness.analytic.meta import meta_mode
from harness.analytic.registry import Cost, OpCall, TensorMeta, batch_norm_training
from harness.errors import CountError, SpecError
from harness.layers.dtypes import dtype_name, parse_dtype

aten = torch.ops.aten

#: Ops that are bookkeeping, not work on data: never listed.
_BOOKKEEPING = frozenset({aten.empty, aten.empty_like, aten.empty_strided, aten.sym_size,
                          aten.sym_stride, aten.sym_numel, aten.sym_storage_offset,
                          aten._local_scalar_dense, aten.lift_fresh, aten.lift_fresh_copy,
                          aten.resize_, aten.set_})
#: Ops that return a tensor sharing the input's storage although their schema does not say so.
_UNSAFE_VIEWS = frozenset({aten._unsafe_view, aten.detach, aten.alias, aten._reshape_alias})

COLUMNS = ["index", "op", "category", "module", "module_type", "input_shapes", "output_shapes",
           "dtype", "flops", "macs", "params", "param_names", "bytes_read", "bytes_written",
           "intensity", "counted", "flop_counter_flops", "flop_counter_agrees", "convention"]


@dataclass(frozen=True, slots=True)
class RawCall:
    """One dispatched op as recorded, before any convention prices it."""

    call: OpCall
    module: str
    module_type: str
    param_names: tuple[str, ...]
    params: int
    bytes_read: int
    bytes_written: int
    flop_counter_flops: int | None
    is_view: bool
    #: Why the canonical count differs from ``flop_counter_flops`` (``harness.analytic.disagreements``);
    #: filled for traced backward passes only.
    flop_counter_reason: str | None = None


@dataclass(frozen=True, slots=True)
class OpRecord:
    """One row of the count table: a :class:`RawCall` (or a module that dispatched no op)
    priced under one convention."""

    op: str
    category: str
    module: str
    module_type: str
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    cost: Cost | None
    params: int = 0
    param_names: tuple[str, ...] = ()
    bytes_read: int = 0
    bytes_written: int = 0
    flop_counter_flops: int | None = None
    flop_counter_reason: str | None = None

    @classmethod
    def of(cls, raw: RawCall, cost: Cost | None, category: str) -> OpRecord:
        return cls(str(raw.call.op), category, raw.module, raw.module_type, tuple(raw.call.tensors),
                   raw.call.outputs, cost, raw.params, raw.param_names, raw.bytes_read,
                   raw.bytes_written, raw.flop_counter_flops, raw.flop_counter_reason)


@dataclass(frozen=True, slots=True)
class ModuleCall:
    """One ``nn.Module`` forward call: what module-level conventions (thop, ptflops, ...) price.

    ``start``/``end`` delimit the raw calls (by index) that ran inside it.
    """

    path: str
    module: nn.Module
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    start: int
    end: int

    @property
    def is_leaf(self) -> bool:
        return next(iter(self.module.children()), None) is None


def _metas(value: Any) -> tuple[TensorMeta, ...]:
    return tuple(TensorMeta.of(t) for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor))


class _ModuleStack:
    """Forward pre/post hooks on every submodule; handles removed by :meth:`remove`."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: list[tuple[str, nn.Module, tuple[TensorMeta, ...], int]] = []
        self.finished: list[ModuleCall] = []
        self.position: Callable[[], int] = lambda: 0
        self.handles = []
        for name, mod in model.named_modules():
            self.handles.append(mod.register_forward_pre_hook(self._push(name), with_kwargs=True))
            self.handles.append(mod.register_forward_hook(self._pop, always_call=True))

    def _push(self, name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: Any, kwargs: Any) -> None:
            self.stack.append((name, mod, _metas((args, kwargs)), self.position()))
        return hook

    def _pop(self, _mod: nn.Module, _args: Any, out: Any) -> None:
        if self.stack:
            name, mod, inputs, start = self.stack.pop()
            self.finished.append(ModuleCall(name, mod, inputs, _metas(out), start, self.position()))

    def current(self) -> tuple[str, nn.Module | None]:
        return (self.stack[-1][0], self.stack[-1][1]) if self.stack else ("", None)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


class ModuleLocator(Protocol):
    """Where an op runs: the innermost module's path and the module (``("", None)`` outside any).
    :class:`_ModuleStack` answers for a forward pass; ``harness.analytic.backward`` for a backward one."""

    def current(self) -> tuple[str, nn.Module | None]: ...


class _Recorder(TorchDispatchMode):
    """Records each op; knows nothing of conventions (they price records afterwards)."""

    def __init__(self, modules: ModuleLocator | None, params: dict[int, tuple[str, int]]) -> None:
        super().__init__()
        self.modules = modules
        self.params = params          # id(tensor) -> (parameter name, numel); views inherit
        self.first_read: set[str] = set()
        self.keep: list[Any] = []     # keep view outputs alive so their ids stay unique
        self.calls: list[RawCall] = []

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # NB: otherwise torch wraps __torch_dispatch__ in torch._dynamo.disable, whose first call
        # imports torch._dynamo (about 1 s); nothing under this mode is ever compiled.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None) -> Any:  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if func.namespace == "prim" or packet in _BOOKKEEPING:
            return out
        is_view = func.is_view or packet in _UNSAFE_VIEWS
        read_params = self._params_read(args, kwargs)
        viewed = self.params.get(id(_first_tensor(args))) if is_view and read_params else None
        if viewed is not None:       # (the backward's recorder also knows parameters by storage, not id)
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.params[id(t)] = viewed
                    self.keep.append(t)
        bytes_read, bytes_written = (0, 0) if is_view else _traffic(func, args, kwargs, out)
        path, mod = self.modules.current() if self.modules else ("", None)
        call = OpCall(
            op=packet,
            args=tree_map(_meta, tuple(args)),
            kwargs=tree_map(_meta, dict(kwargs)),
            outputs=tuple(TensorMeta.of(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)),
            module_class=type(mod) if mod is not None else None,
        )
        self.calls.append(RawCall(
            call=call, module=path, module_type=type(mod).__name__ if mod is not None else "",
            param_names=() if is_view else tuple(n for n, _ in read_params),
            params=0 if is_view else self._first_reads(read_params),
            bytes_read=bytes_read, bytes_written=bytes_written,
            flop_counter_flops=_independent(func, args, kwargs, out), is_view=is_view))
        return out

    def _first_reads(self, read: list[tuple[str, int]]) -> int:
        """Numel of the parameters this op is the first to read (so the column sums to the
        model's parameters used in the forward pass, shared weights once)."""
        new = [(n, k) for n, k in read if n not in self.first_read]
        self.first_read.update(n for n, _ in new)
        return sum(k for _, k in new)

    def _params_read(self, args: Any, kwargs: Any) -> list[tuple[str, int]]:
        found = [self.params[id(t)] for t in tree_flatten((args, kwargs))[0]
                 if isinstance(t, torch.Tensor) and id(t) in self.params]
        return list(dict.fromkeys(found))


def _first_tensor(args: Any) -> torch.Tensor:
    return next(t for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor))


def _meta(v: Any) -> Any:
    return TensorMeta.of(v) if isinstance(v, torch.Tensor) else v


def _nbytes(t: torch.Tensor) -> int:
    return TensorMeta.of(t).distinct_numel * t.element_size()


def _masked(a: Mapping[str, Any], key: str = "output_mask") -> tuple[bool, ...]:
    return tuple(bool(m) for m in a[key])


def _conv_backward_unread(a: Mapping[str, Any]) -> frozenset[str]:
    """grad-input = conv_transpose(grad_out, weight); grad-weight = conv(input, grad_out); grad-bias =
    sum(grad_out): the weight is read for grad-input only, the saved input for grad-weight only."""
    grad_input, grad_weight, _ = _masked(a)
    return frozenset(({"weight"} if not grad_input else set()) | ({"input"} if not grad_weight else set()))


def _batch_norm_backward_unread(a: Mapping[str, Any]) -> frozenset[str]:
    """Training reads the saved batch statistics, eval the running ones; the weight scales grad-input
    only; grad-bias (sum of grad_out) reads neither the input nor the statistics."""
    grad_input, grad_weight, _ = _masked(a)
    train = bool(a["train"] if "train" in a else a["update"])       # batch_norm_backward: update, save_var
    saved = {"save_mean", "save_invstd" if "save_invstd" in a else "save_var"}
    unread = {"running_mean", "running_var"} if train else set(saved)
    if not grad_input:
        unread.add("weight")
    if not (grad_weight or (train and grad_input)):
        unread |= {"input"} | saved if train else {"input", "running_mean"}
    if not train and not (grad_input or grad_weight):
        unread.add("running_var")
    return frozenset(unread)


def _row_norm_backward_unread(a: Mapping[str, Any]) -> frozenset[str]:
    """Layer and group norm: the weight scales grad-input only, the bias is never read (grad-bias is a
    sum of grad_out); the input and its statistics serve grad-input and grad-weight."""
    grad_input, grad_weight, _ = _masked(a)
    unread = {"bias"}
    if not grad_input:
        unread.add("weight")
    if not (grad_input or grad_weight):
        unread |= {"input", "mean", "rstd"}
    return frozenset(unread)


def _self_is_shape_only(a: Mapping[str, Any]) -> frozenset[str]:
    """Pooling backward ops take the forward input ``self`` for its shape; its values are not read."""
    return frozenset({"self"})


#: Arguments an op is passed but does not read, by op: a rule of the bound arguments (name -> value)
#: giving the names not read. Only backward ops are here, so forward counts never consult it.
_UNREAD: dict[torch._ops.OpOverloadPacket, Callable[[Mapping[str, Any]], frozenset[str]]] = {
    aten.convolution_backward: _conv_backward_unread,
    aten.native_batch_norm_backward: _batch_norm_backward_unread,
    aten.batch_norm_backward: _batch_norm_backward_unread,
    aten.native_layer_norm_backward: _row_norm_backward_unread,
    aten.native_group_norm_backward: _row_norm_backward_unread,
    **{op: _self_is_shape_only for op in (
        aten.max_pool2d_with_indices_backward, aten.max_pool3d_with_indices_backward,
        aten.avg_pool2d_backward, aten.avg_pool3d_backward, aten._adaptive_avg_pool2d_backward,
        aten._adaptive_avg_pool3d_backward, aten.adaptive_max_pool2d_backward,
        aten.adaptive_max_pool3d_backward)},
}


def _unread(func: torch._ops.OpOverload, bound: list[tuple[Any, Any]]) -> frozenset[str]:
    rule = _UNREAD.get(func.overloadpacket)
    if rule is None:
        return frozenset()
    return rule({arg.name: value for arg, value in bound})


def _traffic(func: torch._ops.OpOverload, args: Any, kwargs: Any, out: Any) -> tuple[int, int]:
    """Bytes read (every tensor argument except write-only out= ones and those ``_UNREAD`` names) and
    written (outputs and mutated arguments), each distinct tensor once."""
    schema = func._schema
    read: dict[int, torch.Tensor] = {}
    written: dict[int, torch.Tensor] = {}
    bound = list(zip(schema.arguments, args)) + [(a, kwargs[a.name]) for a in schema.arguments
                                                 if a.name in kwargs]
    unread = _unread(func, bound)
    for arg, value in bound:
        tensors = [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]
        for t in tensors:
            if not arg.is_out and arg.name not in unread:
                read[id(t)] = t
            if arg.alias_info is not None and arg.alias_info.is_write:
                written[id(t)] = t
    outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    if batch_norm_training(func.overloadpacket.__name__, args, kwargs) is False:
        outs = outs[:1]     # the saved mean/invstd: empty on CPU, size C on meta; never needed in eval
    for ret, t in zip(schema.returns, outs):
        if ret.alias_info is None:
            written[id(t)] = t
    if len(outs) > len(schema.returns):  # Tensor[] returns
        for t in outs:
            written.setdefault(id(t), t)
    return sum(map(_nbytes, read.values())), sum(map(_nbytes, written.values()))


def _independent(func: torch._ops.OpOverload, args: Any, kwargs: Any, out: Any) -> int | None:
    """torch.utils.flop_counter's count for this op, or None where it has no formula."""
    formula = flop_registry.get(func.overloadpacket)
    if formula is None:
        return None
    try:
        return int(formula(*args, **kwargs, out_val=out))
    except Exception:  # its formula rejects an op variant it does not cover
        return None


# --- public entry point -------------------------------------------------------------------

InputLike = torch.Tensor | Sequence[int] | torch.Size


def _device_of(model: nn.Module | Callable[..., Any]) -> torch.device:
    if isinstance(model, nn.Module):
        for t in list(model.parameters()) + list(model.buffers()):
            return t.device
    return torch.device("cpu")


def _make_input(x: Any, dtype: torch.dtype, device: torch.device, index: int) -> Any:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (list, tuple, torch.Size)) and all(isinstance(s, int) for s in x):
        for s in x:
            if s <= 0:
                raise SpecError(f"inputs[{index}]", tuple(x), "a shape of positive sizes")
        return torch.empty(tuple(x), dtype=dtype, device=device)
    return x  # non-tensor arguments (flags, None) pass through


def _all_meta(model: nn.Module | Callable[..., Any], inputs: Sequence[Any]) -> bool:
    """True when nothing real is involved: a module whose parameters and buffers are all on the meta
    device and inputs given as shapes or meta tensors."""
    if not isinstance(model, nn.Module):
        return False
    tensors = list(model.parameters()) + list(model.buffers())
    if not all(t.is_meta for t in tensors):
        return False
    return all(x.is_meta if isinstance(x, torch.Tensor) else True for x in inputs)


def _fake_mode() -> Any:
    """A ``FakeTensorMode`` (its constructor imports ``torch._dynamo``, about 1 s: only built when
    the meta device cannot stand in)."""
    from torch._subclasses.fake_tensor import FakeTensorMode  # deferred: imports torch._dynamo (~1 s)
    return FakeTensorMode(allow_non_fake_inputs=True)


def _trace(model: nn.Module | Callable[..., Any], inputs: Sequence[Any], torch_dtype: torch.dtype,
           device: torch.device, mode: Any, kwargs: dict[str, Any]) -> tuple[list[RawCall], list[ModuleCall]]:
    """One traced forward pass under ``mode`` (a fake mode, or a null context on meta tensors)."""
    params: dict[int, tuple[str, int]] = {}
    if isinstance(model, nn.Module):
        for name, p in model.named_parameters(remove_duplicate=False):
            params.setdefault(id(p), (name, p.numel()))
    modules = _ModuleStack(model) if isinstance(model, nn.Module) else None
    try:
        with mode:
            args = [_make_input(x, torch_dtype, device, i) for i, x in enumerate(inputs)]
        recorder = _Recorder(modules, params)
        if modules is not None:
            modules.position = lambda: len(recorder.calls)
        with mode, recorder, torch.no_grad():
            model(*args, **kwargs)
    finally:
        if modules is not None:
            modules.remove()
    module_calls = sorted(modules.finished, key=lambda m: m.start) if modules is not None else []
    return recorder.calls, module_calls


def record(model: nn.Module | Callable[..., Any], *inputs: InputLike, dtype: str | torch.dtype = "fp32",
           **kwargs: Any) -> tuple[list[RawCall], list[ModuleCall]]:
    """Run ``model(*inputs, **kwargs)`` on fake tensors: the op records and module calls, in order.

    A module on the meta device with shape inputs runs on meta tensors directly (no
    ``FakeTensorMode``, so no ``torch._dynamo`` import); an op without a meta kernel falls back to
    the fake mode, as does everything else."""
    torch_dtype = parse_dtype(dtype)
    try:
        if _all_meta(model, inputs):
            try:
                with meta_mode():
                    return _trace(model, inputs, torch_dtype, torch.device("meta"), contextlib.nullcontext(), kwargs)
            except SpecError:
                raise
            except Exception:  # noqa: BLE001 -- an op without a meta kernel, a stand-in's limit: the fake mode
                pass           # has fallbacks for both
        return _trace(model, inputs, torch_dtype, _device_of(model), _fake_mode(), kwargs)
    except SpecError:
        raise
    except Exception as e:
        raise CountError(f"counting failed while tracing the forward pass on fake tensors: "
                         f"{type(e).__name__}: {e}") from e


def to_frame(records: Sequence[OpRecord], convention: str) -> pd.DataFrame:
    """Records -> the count table (columns: :data:`COLUMNS`, documented in docs/counting.md)."""
    rows = []
    for i, r in enumerate(records):
        tensors = list(r.inputs) + list(r.outputs)
        dtype = next((t.dtype for t in tensors if t.dtype.is_floating_point),
                     tensors[0].dtype if tensors else None)
        total_bytes = r.bytes_read + r.bytes_written
        flops = r.cost.flops if r.cost is not None else None
        rows.append({
            "index": i,
            "op": r.op,
            "category": r.category,
            "module": r.module,
            "module_type": r.module_type,
            "input_shapes": ", ".join(str(t) for t in r.inputs),
            "output_shapes": ", ".join(str(t) for t in r.outputs),
            "dtype": dtype_name(dtype) if dtype is not None else "",
            "flops": flops,
            "macs": r.cost.macs if r.cost is not None else None,
            "params": r.params,
            "param_names": ",".join(r.param_names),
            "bytes_read": r.bytes_read,
            "bytes_written": r.bytes_written,
            "intensity": (flops / total_bytes) if flops is not None and total_bytes else None,
            "counted": r.cost is not None,
            "flop_counter_flops": r.flop_counter_flops,
            "flop_counter_agrees": (None if r.flop_counter_flops is None or flops is None
                                    else flops == r.flop_counter_flops),
            "convention": convention,
        })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("flops", "macs", "flop_counter_flops"):
        frame[col] = frame[col].astype("Int64")
    for col in ("params", "bytes_read", "bytes_written", "index"):
        frame[col] = frame[col].astype("int64")
    frame["intensity"] = frame["intensity"].astype("Float64")
    frame["flop_counter_agrees"] = frame["flop_counter_agrees"].astype("boolean")
    frame["counted"] = frame["counted"].astype(bool)
    return frame
