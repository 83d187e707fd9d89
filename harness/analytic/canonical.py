"""The canonical convention: what layerbench counts for each aten op.

Units: ``macs`` = multiply-accumulates; ``flops`` = floating-point operations, where one
MAC is 2 FLOPs (a fused multiply-add does both). The rules, stated once (docs/conventions.md
has the same table):

* Products (conv, conv-transpose, linear/addmm, mm, bmm, baddbmm, attention's QK^T and AV):
  FLOPs = 2 * MACs. The bias is *not* an extra FLOP: the accumulation starts from the bias
  instead of zero, so a dot product of n terms is n FMAs with or without it (no "-1"; the
  tutorials' with-bias formula, and FlopCounterMode's). Bias still counts as parameters.
* Conv: MACs = N * Cout * prod(out spatial) * (Cin/g) * prod(k)  (the CondenseNet utilities).
* Conv-transpose: MACs = N * Cin * prod(in spatial) * (Cout/g) * prod(k)  (zhuanlan.zhihu.com/p/65248401: every
  input pixel scatters a (Cout/g) x k x k patch; padding crops outputs but not work).
* Fused attention (SDPA kernels): the two products only, 2 * pairs * (d_qk + d_v) FLOPs per
  batch-head, ``pairs`` being the unmasked (query, key) pairs: Sq*Sk, or for ``is_causal``
  the lower triangle sum_i min(i+1, Sk) (FlashAttention's convention, Dao et al. 2022; the
  softmax inside the kernel is not added). Unfused attention counts its bmm and softmax ops.
* Elementwise and activations, per output element: add/sub/mul/div 1; relu 1 (max);
  hardtanh/ReLU6 2; leaky_relu 2; sigmoid 4 (neg, exp, add, div); tanh 1; silu 5;
  gelu 5 (erf form) or 9 (tanh form); hardswish 5; hardsigmoid 4. exp/erf/tanh/sqrt count 1.
* Softmax / log-softmax: 5 per element (max, subtract, exp, sum, divide).
* Norms, per element: training-mode statistics 6 (mean 1; variance 3; normalise 2), plus 2
  for the affine scale-and-shift; BatchNorm in eval folds into one scale-and-shift: 2.
  Per-channel O(C) terms are not counted. InstanceNorm runs as a batch norm in training mode.
* Pooling: max 1 comparison per window element; avg window elements + 1 divide per output;
  adaptive pools by their exact (overlapping) windows. Mean: 1 per input + 1 per output.
* Data movement (clone, copy, cat, pad, repeat, where, ...): 0 FLOPs, bytes counted.
  Views (view, reshape, transpose, expand, flatten, ...): 0 FLOPs, 0 bytes.
* Backward ops (``convolution_backward``, ``threshold_backward``, the norms' and pools'
  backward, fused attention backward, ...): :mod:`harness.analytic.backward_formulas`, which
  registers them here; ``harness.analytic.conventions`` imports it before any convention is built
  from this registry, so every convention derived from it holds them.
"""

from __future__ import annotations

from math import ceil, prod

import torch

from harness.analytic.registry import Cost, Formula, FormulaRegistry, OpCall, TensorMeta, batch_norm_training

aten = torch.ops.aten


def ops(*names: str) -> list[torch._ops.OpOverloadPacket]:
    """The aten ops of these names that this torch build has (newer ops are skipped on older torch)."""
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


CANONICAL = FormulaRegistry(
    "canonical",
    "layerbench's convention: FLOPs = 2 x MACs for products, bias absorbed, stated per-op rules",
)
register = CANONICAL.register


def gemm_macs(m: int, n: int, k: int, batch: int = 1) -> int:
    """MACs of a (batch x) [m, k] @ [k, n] product."""
    return batch * m * n * k


def products(macs: int) -> Cost:
    """Cost of ops that are pure multiply-accumulates: FLOPs = 2 * MACs."""
    return Cost(flops=2 * macs, macs=macs)


# --- products ---------------------------------------------------------------------------

@register(ops("convolution", "_convolution", "cudnn_convolution", "cudnn_convolution_transpose",
             "_slow_conv2d_forward", "mkldnn_convolution", "convolution_overrideable"), "conv")
def convolution(call: OpCall) -> Cost:
    """Conv MACs = out.numel * (Cin/g) * prod(k); transposed: in.numel * (Cout/g) * prod(k)."""
    x, w = call.args[0], call.args[1]
    transposed = bool(call.arg(6, "transposed", False)) or call.op is aten.cudnn_convolution_transpose
    # weight is (Cout, Cin/g, *k) for conv and (Cin, Cout/g, *k) for conv-transpose
    per_position = w.shape[1] * prod(w.shape[2:])
    positions = x.numel if transposed else call.out.numel
    return products(positions * per_position)


@register(aten.mm, "matmul")
def mm(call: OpCall) -> Cost:
    (m, k), (_, n) = call.args[0].shape, call.args[1].shape
    return products(gemm_macs(m, n, k))


@register(aten.addmm, "matmul")
def addmm(call: OpCall) -> Cost:
    """addmm(bias, a, b): the bias seeds the accumulator -- no extra FLOPs (module docstring)."""
    (m, k), (_, n) = call.args[1].shape, call.args[2].shape
    return products(gemm_macs(m, n, k))


@register(aten.bmm, "matmul")
def bmm(call: OpCall) -> Cost:
    (b, m, k), (_, _, n) = call.args[0].shape, call.args[1].shape
    return products(gemm_macs(m, n, k, b))


@register(aten.baddbmm, "matmul")
def baddbmm(call: OpCall) -> Cost:
    (b, m, k), (_, _, n) = call.args[1].shape, call.args[2].shape
    return products(gemm_macs(m, n, k, b))


def attention_pairs(s_q: int, s_k: int, causal: bool) -> int:
    """Unmasked (query, key) pairs; torch's is_causal mask is tril() aligned to the top left."""
    if not causal:
        return s_q * s_k
    return sum(min(i + 1, s_k) for i in range(s_q))


def sdpa_macs(q: TensorMeta, k: TensorMeta, v: TensorMeta, causal: bool) -> int:
    """MACs of QK^T plus AV over the unmasked pairs, for [B, H, S, D] (GQA: H_kv divides H_q)."""
    *batch, s_q, d_qk = q.shape
    s_k, d_v = k.shape[-2], v.shape[-1]
    return prod(batch) * attention_pairs(s_q, s_k, causal) * (d_qk + d_v)


def _sdpa(causal_index: int, causal_name: str = "is_causal") -> Formula:
    def formula(call: OpCall) -> Cost:
        q, k, v = call.args[:3]
        return products(sdpa_macs(q, k, v, bool(call.arg(causal_index, causal_name, False))))
    return formula


register(ops("_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu"),
         "attention")(_sdpa(4))
register(ops("_scaled_dot_product_efficient_attention"), "attention")(_sdpa(5))
register(ops("_scaled_dot_product_cudnn_attention"), "attention")(_sdpa(6))


# --- elementwise and activations --------------------------------------------------------

def per_element(flops_per_element: int) -> Formula:
    """Formula: a fixed number of FLOPs per output element."""
    def formula(call: OpCall) -> Cost:
        return Cost(flops=flops_per_element * call.out.numel)
    formula.__doc__ = f"{flops_per_element} FLOP(s) per output element."
    return formula


_ELEMENTWISE = {
    1: [aten.add, aten.add_, aten.sub, aten.sub_, aten.mul, aten.mul_, aten.div, aten.div_,
        aten.rsub, aten.neg, aten.reciprocal, aten.sqrt, aten.rsqrt, aten.exp, aten.log,
        aten.pow, aten.maximum, aten.minimum, aten.abs, aten.eq, aten.ne, aten.lt, aten.gt,
        aten.le, aten.ge],
}
_ACTIVATIONS = {
    1: [aten.relu, aten.relu_, aten.tanh, aten.tanh_, aten.threshold],
    2: [aten.hardtanh, aten.hardtanh_, aten.leaky_relu, aten.leaky_relu_, aten.clamp, aten.clamp_],
    4: [aten.sigmoid, aten.sigmoid_, aten.hardsigmoid, aten.hardsigmoid_],
    5: [aten.silu, aten.silu_, aten.hardswish, aten.hardswish_],
}
for _n, _ops in _ELEMENTWISE.items():
    register(_ops, "elementwise")(per_element(_n))
for _n, _ops in _ACTIVATIONS.items():
    register(_ops, "activation")(per_element(_n))


@register([aten.gelu, aten.gelu_], "activation")
def gelu(call: OpCall) -> Cost:
    """5 per element for 0.5x(1+erf(x/sqrt2)); 9 for the tanh approximation."""
    approximate = call.arg(1, "approximate", "none")
    return Cost(flops=(9 if approximate == "tanh" else 5) * call.out.numel)


@register(ops("_softmax", "_log_softmax", "_safe_softmax"), "softmax")
def softmax(call: OpCall) -> Cost:
    """5 per element: max, subtract, exp, sum, divide (log-softmax: log instead of divide)."""
    return Cost(flops=5 * call.out.numel)


# --- normalisation ----------------------------------------------------------------------

STATS_FLOPS = 6   # mean 1, variance 3 (subtract, square, accumulate), normalise 2
AFFINE_FLOPS = 2  # scale and shift
EVAL_BN_FLOPS = 2  # running statistics and affine fold into one scale-and-shift


@register(ops("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
             "cudnn_batch_norm", "miopen_batch_norm"), "norm")
def batch_norm(call: OpCall) -> Cost:
    x, weight = call.args[0], call.args[1]
    if not batch_norm_training(call.op.__name__, call.args, call.kwargs):
        return Cost(flops=EVAL_BN_FLOPS * x.numel)
    return Cost(flops=(STATS_FLOPS + (AFFINE_FLOPS if weight is not None else 0)) * x.numel)


@register(ops("_native_batch_norm_legit_no_training"), "norm")
def batch_norm_eval(call: OpCall) -> Cost:
    return Cost(flops=EVAL_BN_FLOPS * call.args[0].numel)


@register(aten.native_layer_norm, "norm")
def layer_norm(call: OpCall) -> Cost:
    affine = call.arg(2, "weight") is not None
    return Cost(flops=(STATS_FLOPS + (AFFINE_FLOPS if affine else 0)) * call.args[0].numel)


@register(aten.native_group_norm, "norm")
def group_norm(call: OpCall) -> Cost:
    affine = call.arg(1, "weight") is not None
    return Cost(flops=(STATS_FLOPS + (AFFINE_FLOPS if affine else 0)) * call.args[0].numel)


@register(ops("_fused_rms_norm"), "norm")
def rms_norm(call: OpCall) -> Cost:
    """Square, accumulate, scale: 3 per element (+1 for the weight)."""
    affine = call.arg(2, "weight") is not None
    return Cost(flops=(3 + (1 if affine else 0)) * call.args[0].numel)


# --- pooling and reductions ---------------------------------------------------------------

def _window_elements(call: OpCall, spatial: int) -> int:
    kernel = call.arg(1, "kernel_size")
    kernel = list(kernel) if isinstance(kernel, (list, tuple)) else [kernel]
    if len(kernel) == 1:
        kernel = kernel * spatial
    return prod(kernel)


@register([aten.max_pool1d, aten.max_pool2d, aten.max_pool3d, aten.max_pool2d_with_indices,
           aten.max_pool3d_with_indices, aten.max_pool1d_with_indices], "pool")
def max_pool(call: OpCall) -> Cost:
    """One comparison per window element per output."""
    x = call.args[0]
    spatial = len(x.shape) - 2 if len(x.shape) > 2 else len(x.shape) - 1
    return Cost(flops=call.out.numel * _window_elements(call, spatial))


@register([aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d], "pool")
def avg_pool(call: OpCall) -> Cost:
    """Window additions plus one divide per output."""
    x = call.args[0]
    spatial = len(x.shape) - 2 if len(x.shape) > 2 else len(x.shape) - 1
    return Cost(flops=call.out.numel * (_window_elements(call, spatial) + 1))


def adaptive_window_sum(in_size: int, out_size: int) -> int:
    """Total length of the windows adaptive pooling uses along one dim (start=floor, end=ceil)."""
    return sum(ceil((i + 1) * in_size / out_size) - (i * in_size) // out_size for i in range(out_size))


def _adaptive_reads(call: OpCall) -> int:
    x, out = call.args[0], call.out
    spatial = len(call.arg(1, "output_size"))
    lead = prod(x.shape[:-spatial])
    return lead * prod(adaptive_window_sum(i, o) for i, o in zip(x.shape[-spatial:], out.shape[-spatial:]))


@register([aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d, aten.adaptive_avg_pool1d], "pool")
def adaptive_avg_pool(call: OpCall) -> Cost:
    return Cost(flops=_adaptive_reads(call) + call.out.numel)


@register([aten.adaptive_max_pool2d, aten.adaptive_max_pool3d, aten.adaptive_max_pool1d], "pool")
def adaptive_max_pool(call: OpCall) -> Cost:
    return Cost(flops=_adaptive_reads(call))


@register(aten.mean, "reduction")
def mean(call: OpCall) -> Cost:
    """Sum every input element, divide every output element."""
    return Cost(flops=call.args[0].numel + call.out.numel)


@register([aten.sum, aten.amax, aten.amin, aten.max, aten.min], "reduction")
def reduce(call: OpCall) -> Cost:
    return Cost(flops=call.args[0].numel)


# --- data movement (0 FLOPs; bytes are counted by the counter) ---------------------------

register([aten.clone, aten.copy_, aten._to_copy, aten.cat, aten.stack, aten.repeat,
          aten.constant_pad_nd, aten.index_select, aten.masked_fill, aten.masked_fill_,
          aten.where, aten.fill_, aten.zero_, aten.zeros_like, aten.ones_like, aten.full_like,
          aten.zeros, aten.ones, aten.full, aten.scalar_tensor, aten.tril, aten.triu,
          aten.gather, aten.index, aten.embedding, aten.roll, aten.flip, aten.new_zeros,
          aten.new_ones, aten.new_empty, aten.arange, aten.bernoulli_, aten.native_dropout,
          aten.logical_not, aten.logical_and, aten.logical_or],
         "movement")(per_element(0))

