"""Presets that reproduce other tools' totals, rule for rule, for the layers each covers.

Each rule cites the tool's own code (versions: thop 0.1.1.post2209072238, ptflops 0.7.5
pytorch backend, fvcore 0.1.5.post20221221, torchinfo 1.8.0, torchstat 0.0.7, torch
2.13 ``torch.utils.flop_counter``). Tools that report MACs put them in ``macs`` (with
``flops = 2 * macs``); ``headline`` names the column the tool itself prints. Where a tool
disagrees with its own stated definition, docs/conventions.md, "Where the tools disagree", says so.
The module-level presets (thop, ptflops, torchinfo, torchstat) put a module's cost on the row of
the op that computes it (``ModuleConvention``: nn.Linear's on its ``addmm``, not its ``t`` view).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from math import prod

import torch
from torch import nn
from torch.utils.flop_counter import flop_registry

from harness.analytic.canonical import CANONICAL, aten, convolution, ops
from harness.analytic.conventions import Convention, _root_batch, register_convention
from harness.analytic.counter import ModuleCall, OpRecord, RawCall
from harness.analytic.registry import Cost, FormulaRegistry, OpCall, TensorMeta

register_convention(Convention("canonical", CANONICAL.description, "flops", CANONICAL))


def _macs(n: float) -> Cost:
    """A tool that counts MACs: the number goes to ``macs``, ``flops`` is twice it."""
    n = int(n)
    return Cost(flops=2 * n, macs=n)


def _on(modules: dict, classes: tuple[type, ...], rule) -> None:  # noqa: ANN001
    for cls in classes:
        modules[cls] = rule


CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
INS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
MAXPOOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
AVGPOOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
ADAPTIVE_MAX = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
ADAPTIVE_AVG = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


# --- torch.utils.flop_counter ---------------------------------------------------------------

def _as_shape(v: object) -> object:
    return torch.Size(v.shape) if isinstance(v, TensorMeta) else v


def _flop_counter_formula(call: OpCall) -> Cost | None:
    formula = flop_registry[call.op]
    args = [[_as_shape(x) for x in a] if isinstance(a, (list, tuple)) else _as_shape(a) for a in call.args]
    kwargs = {k: _as_shape(v) for k, v in call.kwargs.items()}
    out = tuple(torch.Size(o.shape) for o in call.outputs)
    try:
        n = int(formula(*args, **kwargs, out_val=out[0] if len(out) == 1 else out))
    except Exception:  # raw (get_raw) formulas need real tensors: nested/varlen variants
        return None
    return Cost(flops=n, macs=n // 2)


FLOP_COUNTER = FormulaRegistry("flop_counter", "torch.utils.flop_counter.FlopCounterMode: 2 FLOPs per MAC, "
                                               "products only")
FLOP_COUNTER.register([op for op in flop_registry if isinstance(op, torch._ops.OpOverloadPacket)],
                      "product")(_flop_counter_formula)
register_convention(Convention("flop_counter", FLOP_COUNTER.description, "flops", FLOP_COUNTER))


# --- fvcore (fvcore/nn/jit_handles.py; counts one fused multiply-add as one "flop") -----------

FVCORE = FormulaRegistry("fvcore", "fvcore FlopCountAnalysis: MACs for products and norms; "
                                   "elementwise, activations, pooling (but adaptive-avg) ignored")


@FVCORE.register([aten.convolution, aten._convolution], "conv")
def _fv_conv(call: OpCall) -> Cost:
    """conv_flop_count: prod(out or, transposed, in spatial) * prod(w) * batch (jit_handles.py)."""
    return _macs(convolution(call).macs)


@FVCORE.register([aten.mm, aten.addmm, aten.bmm, aten.baddbmm], "matmul")
def _fv_matmul(call: OpCall) -> Cost:
    """addmm/matmul/linear/bmm handlers: MACs (bias ignored)."""
    return _macs(CANONICAL.lookup(call.op).formula(call).macs)


def _fv_norm(numel: int, affine: bool) -> Cost:
    """norm_flop_counter: numel * (5 if affine else 4)."""
    return _macs(numel * (5 if affine else 4))


@FVCORE.register(ops("native_batch_norm", "_native_batch_norm_legit_no_training"), "norm")
def _fv_batch_norm(call: OpCall) -> Cost:
    """batchnorm_flop_jit: training -> norm rule; eval -> numel * (2 if affine else 1)."""
    x, weight = call.args[0], call.args[1]
    training = call.op is aten.native_batch_norm and bool(call.arg(5, "training", False))
    if training:
        return _fv_norm(x.numel, weight is not None)
    return _macs(x.numel * (2 if weight is not None else 1))


@FVCORE.register(aten.native_layer_norm, "norm")
def _fv_layer_norm(call: OpCall) -> Cost:
    return _fv_norm(call.args[0].numel, call.arg(2, "weight") is not None)


@FVCORE.register(aten.native_group_norm, "norm")
def _fv_group_norm(call: OpCall) -> Cost:
    return _fv_norm(call.args[0].numel, call.arg(1, "weight") is not None)


@FVCORE.register([aten._adaptive_avg_pool2d, aten.mean], "pool")
def _fv_adaptive_avg(call: OpCall) -> Cost | None:
    """adaptive_avg_pool2d: input numel. (AdaptiveAvgPool2d(1) dispatches aten.mean on CPU;
    a bare ``x.mean()`` is not counted by fvcore.)"""
    if call.op is aten.mean and call.module_class is not nn.AdaptiveAvgPool2d:
        return None
    if len(call.args[0].shape) != 4 and call.op is aten.mean:
        return None
    return _macs(call.args[0].numel)


register_convention(Convention("fvcore", FVCORE.description, "macs", FVCORE))


# --- module-level presets: where a module's cost lands ---------------------------------------

def computing_op(calls: Sequence[RawCall], start: int, end: int) -> int:
    """The index of the op that does a module call's work among ``calls[start:end]``: the non-view
    op with the most canonical FLOPs (the last of equals), so nn.Linear's cost lands on its
    ``addmm``, not on the ``t`` view of its weight; ``start`` when the call dispatched only views."""
    candidates = [i for i in range(start, end) if not calls[i].is_view]
    if len(candidates) <= 1:
        return candidates[0] if candidates else start
    return max(candidates, key=lambda i: (_canonical_flops(calls[i]), i))


def _canonical_flops(raw: RawCall) -> int:
    entry = CANONICAL.lookup(raw.call.op)
    if entry is None:
        return 0
    try:
        cost = entry.formula(raw.call)
    except Exception:  # an op variant its formula does not cover: it does no work we can rank
        return 0
    return cost.flops if cost is not None else 0


class ModuleConvention(Convention):
    """A module-level convention (thop, ptflops, torchinfo, torchstat) whose module costs land on
    the row of the op that computes them (:func:`computing_op`) rather than on the first row the
    module dispatched. Only the rows change: the totals are :class:`Convention`'s."""

    def price(self, calls: Sequence[RawCall], module_calls: Sequence[ModuleCall]) -> list[OpRecord]:
        records = super().price(calls, module_calls)
        rows = [i for i, r in enumerate(records) if r.category != "none"]   # rows[k] is calls[k]'s row
        divisor = _root_batch(module_calls) if self.per_sample_modules else 1
        for mc in module_calls:
            rule = self._rule(mc.module)
            if rule is None or mc.start == mc.end or (self.leaf_only and not mc.is_leaf):
                continue
            target = computing_op(calls, mc.start, mc.end)
            cost = rule(mc) if target != mc.start else None
            if cost is None:
                continue
            if divisor != 1:
                cost = Cost(cost.flops // divisor, cost.macs // divisor)
            src, dst = records[rows[mc.start]], records[rows[target]]
            records[rows[mc.start]] = replace(src, cost=Cost(src.cost.flops - cost.flops, src.cost.macs - cost.macs))
            records[rows[target]] = replace(dst, cost=Cost(dst.cost.flops + cost.flops, dst.cost.macs + cost.macs))
        return records


# --- thop (thop/profile.py register_hooks, thop/vision/basic_hooks.py; type(m) exact) ---------

def _thop_conv(mc: ModuleCall) -> Cost:
    """calculate_conv2d_flops: out.numel * (in_c // g) * prod(k) -- also for ConvTranspose."""
    x, y, m = mc.inputs[0], mc.outputs[0], mc.module
    return _macs(y.numel * (x.shape[1] // m.groups) * prod(m.weight.shape[2:]))


def _thop_norm(mc: ModuleCall) -> Cost:
    """count_normalization: calculate_norm = 2 * numel, doubled again when affine."""
    m = mc.module
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return _macs(2 * mc.inputs[0].numel * (2 if affine else 1))


def _thop_softmax(mc: ModuleCall) -> Cost:
    """calculate_softmax: rows * (exp n + add n-1 + div n)."""
    x = mc.inputs[0]
    n = x.shape[mc.module.dim]
    return _macs((x.numel // n) * (3 * n - 1))


def _thop_adaptive_avg(mc: ModuleCall) -> Cost:
    """calculate_adaptive_avg: (prod(in/out spatial, as floats) + 1) * out.numel."""
    x, y = mc.inputs[0], mc.outputs[0]
    spatial = len(y.shape) - 2
    kernel = prod(i / o for i, o in zip(x.shape[-spatial:], y.shape[-spatial:]))
    return _macs((kernel + 1) * y.numel)


_THOP: dict = {}
_on(_THOP, CONVS + CONV_TS, _thop_conv)
_on(_THOP, BNS + INS + (nn.LayerNorm, nn.SyncBatchNorm), _thop_norm)
_on(_THOP, (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Dropout, nn.ZeroPad2d, nn.PixelShuffle)
    + MAXPOOLS + ADAPTIVE_MAX, lambda mc: _macs(0))
_on(_THOP, (nn.PReLU,), lambda mc: _macs(0 if mc.module.training else mc.inputs[0].numel))
_on(_THOP, (nn.Softmax,), _thop_softmax)
_on(_THOP, AVGPOOLS, lambda mc: _macs(mc.outputs[0].numel))
_on(_THOP, ADAPTIVE_AVG, _thop_adaptive_avg)
_on(_THOP, (nn.Linear,), lambda mc: _macs(mc.module.in_features * mc.outputs[0].numel))
register_convention(ModuleConvention(
    "thop", "thop.profile: MACs of registered module types only (exact type); functionals "
            "and unregistered modules (GELU, SiLU, GroupNorm, MultiheadAttention) count 0",
    "macs", FormulaRegistry("thop-functional"), _THOP))


# --- ptflops, pytorch backend (ptflops/pytorch_ops.py, pytorch_engine.py) -----------------------

def _pt_conv(mc: ModuleCall, transpose: bool = False) -> Cost:
    """conv_flops_counter_hook: prod(k) * Cin * Cout/g per position, positions over the output
    (input when transposed), plus N * out.numel/N for the bias."""
    x, y, m = mc.inputs[0], mc.outputs[0], mc.module
    per_position = prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
    positions = x.shape[0] * prod((x if transpose else y).shape[2:])
    bias = x.shape[0] * prod(y.shape[1:]) if m.bias is not None else 0
    return _macs(per_position * positions + bias)


def _pt_linear(mc: ModuleCall) -> Cost:
    """linear_flops_counter_hook: (in * out + bias out) * prod(input.shape[:-1])."""
    x, y, m = mc.inputs[0], mc.outputs[0], mc.module
    return _macs((x.shape[-1] * y.shape[-1] + (y.shape[-1] if m.bias is not None else 0))
                 * prod(x.shape[:-1]))


def _pt_norm(mc: ModuleCall) -> Cost:
    """bn_flops_counter_hook: numel, doubled when ``module.affine`` (LayerNorm has none)."""
    return _macs(mc.inputs[0].numel * (2 if getattr(mc.module, "affine", False) else 1))


_PTFLOPS: dict = {}
_on(_PTFLOPS, CONVS, _pt_conv)
_on(_PTFLOPS, CONV_TS, lambda mc: _pt_conv(mc, transpose=True))
_on(_PTFLOPS, (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6, nn.GELU),
    lambda mc: _macs(mc.outputs[0].numel))
_on(_PTFLOPS, MAXPOOLS + AVGPOOLS + ADAPTIVE_MAX + ADAPTIVE_AVG, lambda mc: _macs(mc.inputs[0].numel))
_on(_PTFLOPS, BNS + INS + (nn.GroupNorm, nn.LayerNorm), _pt_norm)
_on(_PTFLOPS, (nn.Linear,), _pt_linear)

# Patched functionals (FUNCTIONAL_MAPPING): input.numel, counted inside modules as well --
# nn.ReLU's forward calls the patched F.relu, so an nn.ReLU counts twice.
PTFLOPS_FUNCTIONAL = FormulaRegistry("ptflops-functional")
PTFLOPS_FUNCTIONAL.register([aten.relu, aten.relu_, aten.gelu, aten.silu, aten.silu_, aten.elu,
                             aten.max_pool2d_with_indices, aten.max_pool3d_with_indices,
                             aten.avg_pool2d, aten.avg_pool3d, aten._adaptive_avg_pool2d,
                             aten._adaptive_avg_pool3d, aten.adaptive_max_pool2d,
                             aten.adaptive_max_pool3d, aten._softmax], "functional")(
    lambda call: _macs(call.args[0].numel))


@PTFLOPS_FUNCTIONAL.register(aten.mean, "functional")
def _pt_adaptive_mean(call: OpCall) -> Cost | None:
    """AdaptiveAvgPool(1) runs F.adaptive_avg_pool (patched) which dispatches aten.mean."""
    return _macs(call.args[0].numel) if call.module_class in ADAPTIVE_AVG else None


# Patched tensor ops (TENSOR_OPS_MAPPING), priced outside hooked modules only.
PTFLOPS_OPS = PTFLOPS_FUNCTIONAL.derive("ptflops-ops")


@PTFLOPS_OPS.register([aten.mm, aten.bmm], "functional")
def _pt_matmul(call: OpCall) -> Cost:
    """_matmul_tensor_flops_hook: prod(input.shape) * other.shape[-1]."""
    return _macs(call.args[0].numel * call.args[1].shape[-1])


@PTFLOPS_OPS.register([aten.addmm, aten.baddbmm], "functional")
def _pt_addmm(call: OpCall) -> Cost:
    """_addmm_tensor_flops_hook: prod(mat1.shape) * mat2.shape[-1] + bias numel."""
    return _macs(call.args[1].numel * call.args[2].shape[-1] + call.args[0].numel)


@PTFLOPS_OPS.register([aten.add, aten.mul], "functional")
def _pt_elementwise(call: OpCall) -> Cost:
    """_elementwise_tensor_flops_hook: numel of the broadcast shape."""
    return _macs(call.out.numel)


register_convention(ModuleConvention(
    "ptflops", "ptflops get_model_complexity_info (pytorch backend, count_functional=True): "
               "MACs of hooked modules per sample (divided by the batch) plus patched functionals "
               "and tensor ops for the whole batch",
    "macs", PTFLOPS_OPS, _PTFLOPS, inside_ops=PTFLOPS_FUNCTIONAL, per_sample_modules=True))


# --- torchinfo (torchinfo/layer_info.py LayerInfo.calculate_macs; leaf layers summed) ---------

def _torchinfo(mc: ModuleCall) -> Cost | None:
    """Conv*: params * prod(out[:1] + out[2:]); other weight/bias: out[0] * params;
    other parameters with weight/bias in the name: prod(out[:2]) * params."""
    if not mc.outputs:
        return None
    out = mc.outputs[0].shape
    macs = 0
    for name, p in mc.module.named_parameters():
        if name in ("weight", "bias"):
            if "Conv" in type(mc.module).__name__:
                macs += p.numel() * prod(out[:1] + out[2:])
            else:
                macs += out[0] * p.numel()
        elif "weight" in name or "bias" in name:
            macs += prod(out[:2]) * p.numel()
    return _macs(macs)


register_convention(ModuleConvention(
    "torchinfo", "torchinfo.summary total_mult_adds: parameters x output positions per leaf "
                 "layer; parameter-free layers and functionals count 0",
    "macs", FormulaRegistry("torchinfo-functional"), {nn.Module: _torchinfo},
    subclasses=True, leaf_only=True))


# --- torchstat (torchstat/compute_madd.py, compute_flops.py; leaf modules, isinstance) --------

def _ts_conv2d(mc: ModuleCall) -> Cost:
    """MAdd: (k*k*Cin/g mul + (that - 1 + bias) add) * out; Flops: mul * N*Ho*Wo + bias."""
    x, y, m = mc.inputs[0], mc.outputs[0], mc.module
    kh, kw = m.kernel_size
    mul = kh * kw * (x.shape[1] // m.groups)
    add = mul - 1 + (0 if m.bias is None else 1)
    _, out_c, out_h, out_w = y.shape
    madd = (mul + add) * out_h * out_w * out_c
    flops = kh * kw * x.shape[1] * (out_c // m.groups) * x.shape[0] * out_h * out_w
    flops += out_c * x.shape[0] * out_h * out_w if m.bias is not None else 0
    return Cost(flops=madd, macs=flops)


def _ts_conv_t2d(mc: ModuleCall) -> Cost:
    """MAdd over the input positions (compute_ConvTranspose2d_madd); Flops: not supported (0)."""
    x, y, m = mc.inputs[0], mc.outputs[0], mc.module
    kh, kw = m.kernel_size
    mul = kh * kw * (x.shape[1] // m.groups)
    add = mul - 1 + (0 if m.bias is None else 1)
    return Cost(flops=(mul + add) * x.shape[2] * x.shape[3] * y.shape[1], macs=0)


def _ts_bn2d(mc: ModuleCall) -> Cost:
    x = mc.inputs[0]
    return Cost(flops=4 * prod(x.shape[1:]), macs=x.numel * (2 if mc.module.affine else 1))


def _ts_pool2d(mc: ModuleCall) -> Cost:
    x, y, m = mc.inputs[0], mc.outputs[0], mc.module
    k = m.kernel_size if isinstance(m.kernel_size, (tuple, list)) else (m.kernel_size,) * 2
    window = k[0] * k[1]
    madd = (window - 1 if isinstance(m, nn.MaxPool2d) else window) * prod(y.shape[1:])
    return Cost(flops=madd, macs=x.numel)


def _ts_relu(mc: ModuleCall) -> Cost:
    """compute_ReLU_madd covers ReLU/ReLU6 only; compute_ReLU_flops also PReLU/ELU/LeakyReLU."""
    x = mc.inputs[0]
    madd = prod(x.shape[1:]) if isinstance(mc.module, (nn.ReLU, nn.ReLU6)) else 0
    return Cost(flops=madd, macs=x.numel)


def _ts_softmax(mc: ModuleCall) -> Cost:
    count = prod(mc.inputs[0].shape[1:])
    return Cost(flops=3 * count - 1, macs=0)


def _ts_linear(mc: ModuleCall) -> Cost | None:
    """2-D input only (torchstat asserts it): MAdd out * (2 in - 1); Flops N * in * out."""
    x, y = mc.inputs[0], mc.outputs[0]
    if len(x.shape) != 2:
        return None
    return Cost(flops=y.shape[1] * (2 * x.shape[1] - 1), macs=x.shape[0] * x.shape[1] * y.shape[1])


_TORCHSTAT: dict = {}
_on(_TORCHSTAT, (nn.Conv2d,), _ts_conv2d)
_on(_TORCHSTAT, (nn.ConvTranspose2d,), _ts_conv_t2d)
_on(_TORCHSTAT, (nn.BatchNorm2d,), _ts_bn2d)
_on(_TORCHSTAT, (nn.MaxPool2d, nn.AvgPool2d), _ts_pool2d)
_on(_TORCHSTAT, (nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.LeakyReLU), _ts_relu)
_on(_TORCHSTAT, (nn.Softmax,), _ts_softmax)
_on(_TORCHSTAT, (nn.Linear,), _ts_linear)
register_convention(ModuleConvention(
    "torchstat", "torchstat.stat: 'MAdd' (the 2n-1 convention) in flops, its 'Flops' "
                 "(multiplications, + bias) in macs; 2-D layers only",
    "flops", FormulaRegistry("torchstat-functional"), _TORCHSTAT, subclasses=True, leaf_only=True))
