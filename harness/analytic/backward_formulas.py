"""The canonical convention for the backward pass: a formula per backward aten op.

Same units and rules as the forward (``harness.analytic.canonical``): ``macs`` counts
multiply-accumulates, FLOPs = 2 x MACs for products, 1 FLOP per elementwise operation
(exp/erf/tanh count 1), per-channel O(C) terms not counted. The gradients an op computes are
the ones its ``output_mask`` asks for (``grads=`` of ``harness.count``); a gradient not asked
for costs nothing. Where a gradient is not one op, autograd's decomposition is counted op by
op with the forward's formulas (linear: ``mm`` + ``mm`` + ``sum``; bmm/matmul/einsum: ``bmm``
+ ``bmm``; unfused attention: its ``bmm``, ``_softmax_backward_data``, ``mul``, ...).

The rules, with the derivatives of PyTorch's ``tools/autograd/derivatives.yaml`` and the ATen
kernels that compute them (``g`` = grad_out, ``y`` = the forward's output):

* Convolution and conv-transpose (``convolution_backward``, any groups, stride, dilation,
  padding): grad-input is a transposed convolution of ``g`` with the weight and grad-weight a
  convolution of the input with ``g`` over batch and space; each is the forward's MACs,
  ``F = N * Cout * prod(out) * (Cin/g) * prod(k)`` (conv-transpose: ``N * Cin * prod(in) *
  (Cout/g) * prod(k)``), for any groups (each of the ``g`` groups correlates ``Cin/g`` input
  channels with ``Cout/g`` output channels). grad-bias is the sum of ``g`` over batch and space:
  1 addition per element of ``g`` (as ``sum`` counts 1 per input element), no MACs.
* Fused attention backward (CPU ``_scaled_dot_product_flash_attention_for_cpu_backward``; CUDA
  flash, efficient and cuDNN backward): FlashAttention-2's convention (Dao 2023, section 3.2:
  the backward recomputes the scores): five products, S = QK^T, dP = dO V^T, dV = P^T dO,
  dQ = dS K, dK = dS^T Q: ``2 * pairs * (3 * d_qk + 2 * d_v)`` FLOPs per batch-head, which is
  2.5x the forward's ``2 * pairs * (d_qk + d_v)`` when ``d_qk == d_v``; ``pairs`` as in the
  forward (the lower triangle for ``is_causal``). The softmax gradient inside is not added.
* Activations, per element: relu (``threshold_backward``) 1 (select); hardtanh/ReLU6 2
  (two comparisons); leaky_relu 2 (compare, scale); sigmoid ``g*(1-y)*y`` 3; tanh
  ``g*(1-y*y)`` 3; silu 9 (sigmoid 4, then ``g*s*(1+x*(1-s))`` 5); gelu 11 (erf form: cdf 4,
  pdf 4, ``g*(cdf+x*pdf)`` 3) or 18 (tanh form); hardswish 5; hardsigmoid 3; dropout
  (``native_dropout_backward``: ``g*mask*scale``) 2.
* Softmax backward ``y*(g - sum(g*y))``: 4 per element; log-softmax ``g - exp(y)*sum(g)``: 4.
* Norms, per element of the input (statistics shared between the gradients that need them):
  batch norm in training: grad-input 9 (the two reductions ``sum(g)`` 1 and
  ``sum((x-mean)*g)`` 3, the projection ``(x-mean)*k`` 2, ``(g-proj-mean(g))*scale`` 3), else
  grad-weight 3 (``sum((x-mean)*g)``) and grad-bias 1 (``sum(g)``); batch norm in eval:
  grad-input 1 (``g*weight*invstd``), grad-weight 3, grad-bias 1. Layer and group norm: xhat
  2 (for grad-input or grad-weight); grad-input 7 (+1 for ``g*weight`` when affine: two
  reductions 3, ``rstd*(g - c1 - xhat*c2)`` 4); grad-weight 2 (``sum(g*xhat)``); grad-bias 1.
  Instance norm runs as a batch norm in training (and sums its per-instance weight gradients).
* Pooling, per element of ``g``: max (with indices, adaptive too) 1 (scatter-add at the argmax;
  zero-filling grad-input is data movement); avg: the window's additions + 1 divide, as the
  forward; adaptive avg: its exact windows + 1 divide per output, as the forward.
* Data movement (``select_backward``, ``slice_backward``): 0 FLOPs, bytes counted; an
  embedding's weight gradient (``embedding_dense_backward``): 1 addition per element of ``g``.
"""

from __future__ import annotations

from math import prod

from harness.analytic.canonical import (
    CANONICAL,
    adaptive_window_sum,
    attention_pairs,
    ops,
    per_element,
    products,
)
from harness.analytic.registry import Cost, Formula, OpCall, TensorMeta

register = CANONICAL.register


def mask(call: OpCall, index: int, name: str = "output_mask") -> tuple[bool, ...]:
    """The op's gradient mask (which gradients it computes), as booleans."""
    return tuple(bool(m) for m in call.arg(index, name))


# --- products ---------------------------------------------------------------------------

def conv_forward_macs(grad_out: TensorMeta, x: TensorMeta, w: TensorMeta, transposed: bool) -> int:
    """The forward's MACs from the backward's tensors: ``grad_out`` has the forward output's shape.
    Conv: N*Cout*prod(out)*(Cin/g)*prod(k); conv-transpose: N*Cin*prod(in)*(Cout/g)*prod(k) (the
    weight is (Cout, Cin/g, *k) for conv and (Cin, Cout/g, *k) for conv-transpose)."""
    positions = x.numel if transposed else grad_out.numel
    return positions * w.shape[1] * prod(w.shape[2:])


@register(ops("convolution_backward"), "conv")
def convolution_backward(call: OpCall) -> Cost:
    """grad-input (transposed conv of grad_out with the weight) and grad-weight (conv of the input
    with grad_out over batch and space) each the forward's MACs, for any groups; grad-bias 1
    addition per grad_out element. Only the gradients of ``output_mask`` are counted.
    Source: derivatives.yaml ``convolution: convolution_backward(...)``; the transposed-conv form
    of the input gradient as in torch.utils.flop_counter's ``conv_backward_flop`` docstring."""
    grad_out, x, w = call.args[0], call.args[1], call.args[2]
    grad_input, grad_weight, grad_bias = mask(call, 10)
    forward = conv_forward_macs(grad_out, x, w, bool(call.arg(7, "transposed")))
    macs = forward * (int(grad_input) + int(grad_weight))
    return Cost(flops=2 * macs + (grad_out.numel if grad_bias else 0), macs=macs)


def sdpa_backward_macs(q: TensorMeta, k: TensorMeta, v: TensorMeta, causal: bool) -> int:
    """MACs of the five products of a fused attention backward (FlashAttention-2, Dao 2023, Algorithm
    2: S = QK^T recomputed, dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q) over the unmasked pairs:
    pairs * (3 * d_qk + 2 * d_v) per batch-head (2.5x the forward's pairs * (d_qk + d_v) when
    d_qk == d_v). Query heads count (grouped-query K/V are read by every query head)."""
    *batch, s_q, d_qk = q.shape
    s_k, d_v = k.shape[-2], v.shape[-1]
    return prod(batch) * attention_pairs(s_q, s_k, causal) * (3 * d_qk + 2 * d_v)


def _sdpa_backward(causal_index: int) -> Formula:
    def formula(call: OpCall) -> Cost:
        q, k, v = call.args[1], call.args[2], call.args[3]
        return products(sdpa_backward_macs(q, k, v, bool(call.arg(causal_index, "is_causal", False))))
    formula.__doc__ = (f"Fused attention backward: 5 products (sdpa_backward_macs), is_causal at argument "
                       f"{causal_index}. Source: FlashAttention-2 (Dao 2023), Algorithm 2.")
    return formula


register(ops("_scaled_dot_product_flash_attention_for_cpu_backward"), "attention")(_sdpa_backward(7))
register(ops("_scaled_dot_product_flash_attention_backward"), "attention")(_sdpa_backward(11))
register(ops("_scaled_dot_product_efficient_attention_backward"), "attention")(_sdpa_backward(11))
register(ops("_scaled_dot_product_cudnn_attention_backward"), "attention")(_sdpa_backward(14))


# --- activations, dropout, softmax: per element of grad_out ------------------------------------

_ACTIVATION_BACKWARD = {
    # derivatives.yaml: relu -> threshold_backward(grad, result, 0): x <= t ? 0 : g (one select)
    1: ["threshold_backward"],
    # hardtanh_backward: (x <= min || x >= max) ? 0 : g; leaky_relu_backward: x > 0 ? g : g * slope
    2: ["hardtanh_backward", "leaky_relu_backward"],
    # sigmoid_backward(g, y) = g * (1 - y) * y; tanh_backward(g, y) = g * (1 - y * y);
    # hardsigmoid_backward: -3 < x < 3 ? g / 6 : 0
    3: ["sigmoid_backward", "tanh_backward", "hardsigmoid_backward"],
    # hardswish_backward: x < -3 ? 0 : x <= 3 ? g * (x / 3 + 0.5) : g (two compares, div, add, mul)
    5: ["hardswish_backward"],
    # silu_backward: s = sigmoid(x) (4, as the forward's sigmoid); g * s * (1 + x * (1 - s)) (5)
    9: ["silu_backward"],
}
for _n, _names in _ACTIVATION_BACKWARD.items():
    register(ops(*_names), "activation")(per_element(_n))

# ATen native_dropout_backward: g * mask * scale
register(ops("native_dropout_backward"), "elementwise")(per_element(2))

GELU_BACKWARD_FLOPS = 11       # cdf 0.5*(1+erf(x/sqrt2)) 4, pdf c*exp(-x*x/2) 4, g*(cdf + x*pdf) 3
GELU_TANH_BACKWARD_FLOPS = 18  # ATen GeluBackwardKernelImpl, tanh branch (gelu_backward's docstring)


@register(ops("gelu_backward"), "activation")
def gelu_backward(call: OpCall) -> Cost:
    """11 per element (erf form) or 18 (tanh form): the derivative of GELU (Hendrycks & Gimpel 2016)
    as ATen's ``GeluBackwardKernelImpl`` (aten/src/ATen/native/cpu/Activation.cpp) computes it. Erf
    form: cdf 4, pdf 4, ``g * (cdf + x * pdf)`` 3. Tanh form: x^2, x^3 (2), inner 3, tanh 1, 0.5x,
    1+t, 0.5(1+t) (3), 1-t^2 (2), inner' 3, right' (2 products), ``g * (left' + right')`` 2."""
    approximate = call.arg(2, "approximate", "none")
    return Cost(flops=(GELU_TANH_BACKWARD_FLOPS if approximate == "tanh" else GELU_BACKWARD_FLOPS) * call.out.numel)


SOFTMAX_BACKWARD_FLOPS = 4  # softmax: g*y, sum, g - s, y * (...); log-softmax: sum(g), exp(y), multiply, subtract

register(ops("_softmax_backward_data", "_log_softmax_backward_data"), "softmax")(per_element(SOFTMAX_BACKWARD_FLOPS))


# --- normalisation ------------------------------------------------------------------------

BN_TRAIN_GRAD_INPUT = 9  # sum(g) 1, sum((x-mean)*g) 3, (x-mean)*k 2, (g - proj - mean(g)) * scale 3
BN_EVAL_GRAD_INPUT = 1   # g * (weight * invstd), the per-channel factor folded
NORM_GRAD_WEIGHT = 3     # sum((x-mean)*g) times invstd per channel: subtract, multiply, accumulate
NORM_GRAD_BIAS = 1       # sum(g)
XHAT = 2                 # (x - mean) * rstd, shared by grad-input and grad-weight of layer/group norm
ROW_GRAD_INPUT = 7       # sum(g') 1, sum(g'*xhat) 2, rstd * (g' - c1 - xhat * c2) 4
ROW_GRAD_WEIGHT = 2      # sum(g * xhat): multiply, accumulate


@register(ops("native_batch_norm_backward", "batch_norm_backward"), "norm")
def batch_norm_backward(call: OpCall) -> Cost:
    """Per input element. Training: grad-input 9 (its two reductions are also the weight and bias
    gradients), else grad-weight 3 and grad-bias 1; eval: grad-input 1, grad-weight 3, grad-bias 1.
    ``batch_norm_backward`` (the backward of ``_batch_norm_with_update``) has the same positions
    (``update`` for ``train``).
    Source: Ioffe & Szegedy 2015 (section 3, the chain rule through the batch statistics); ATen
    ``batch_norm_backward_cpu_template`` (aten/src/ATen/native/Normalization.cpp)."""
    x = call.args[1]
    grad_input, grad_weight, grad_bias = mask(call, 9)
    if bool(call.arg(7, "train")) and grad_input:
        per = BN_TRAIN_GRAD_INPUT
    else:
        per = (BN_EVAL_GRAD_INPUT if grad_input else 0) + NORM_GRAD_WEIGHT * grad_weight + NORM_GRAD_BIAS * grad_bias
    return Cost(flops=per * x.numel)


@register(ops("cudnn_batch_norm_backward", "miopen_batch_norm_backward"), "norm")
def cudnn_batch_norm_backward(call: OpCall) -> Cost:
    """cuDNN's and MIOpen's training backward (input first, then grad_out; no mask: all three
    gradients): 9 per input element, as ``native_batch_norm_backward`` in training."""
    return Cost(flops=BN_TRAIN_GRAD_INPUT * call.args[0].numel)


def _row_norm_backward(x: TensorMeta, affine: bool, grads: tuple[bool, ...]) -> Cost:
    grad_input, grad_weight, grad_bias = grads
    per = XHAT if (grad_input or grad_weight) else 0
    per += (ROW_GRAD_INPUT + (1 if affine else 0)) * grad_input
    per += ROW_GRAD_WEIGHT * grad_weight + NORM_GRAD_BIAS * grad_bias
    return Cost(flops=per * x.numel)


@register(ops("native_layer_norm_backward"), "norm")
def layer_norm_backward(call: OpCall) -> Cost:
    """Per input element: xhat 2 (if grad-input or grad-weight), grad-input 7 (+1 for g*weight),
    grad-weight 2, grad-bias 1. Source: Ba, Kiros & Hinton 2016 (Layer Normalization) with the
    derivation of ATen ``LayerNormBackwardKernelImpl`` (aten/src/ATen/native/cpu/layer_norm_kernel.cpp):
    dx = rstd * (g' - mean(g') - xhat * mean(g' * xhat)), g' = g * weight."""
    return _row_norm_backward(call.args[1], call.arg(5, "weight") is not None, mask(call, 7))


@register(ops("native_group_norm_backward"), "norm")
def group_norm_backward(call: OpCall) -> Cost:
    """Layer norm's backward over each group of C/G channels x HxW (the weight is per channel, so it
    varies inside a group: g' = g * weight per element). Source: Wu & He 2018 (Group Normalization),
    ATen ``GroupNormBackwardKernelImpl`` (aten/src/ATen/native/cpu/group_norm_kernel.cpp)."""
    return _row_norm_backward(call.args[1], call.arg(4, "weight") is not None, mask(call, 9))


@register(ops("_fused_rms_norm_backward"), "norm")
def rms_norm_backward(call: OpCall) -> Cost:
    """RMS norm (no mean): xhat = x * rstd 1; grad-input 5 (+1 affine: sum(g'*xhat) 2,
    rstd * (g' - xhat * c) 3); grad-weight sum(g * xhat) 2. Source: Zhang & Sennrich 2019."""
    grad_input, grad_weight = mask(call, 5)
    affine = call.arg(4, "weight") is not None
    per = (1 if (grad_input or grad_weight) else 0) + (5 + (1 if affine else 0)) * grad_input + 2 * grad_weight
    return Cost(flops=per * call.args[1].numel)


# --- pooling ------------------------------------------------------------------------------

@register(ops("max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward",
              "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward"), "pool")
def max_pool_backward(call: OpCall) -> Cost:
    """1 addition per grad_out element (scatter-add at the saved argmax; the zero fill of grad-input
    is movement). Source: derivatives.yaml ``max_pool2d_with_indices: max_pool2d_with_indices_backward``."""
    return Cost(flops=call.args[0].numel)


@register(ops("avg_pool2d_backward", "avg_pool3d_backward"), "pool")
def avg_pool_backward(call: OpCall) -> Cost:
    """Per grad_out element: 1 divide and one addition per window element (the forward's count
    mirrored). Source: ATen ``avg_pool2d_backward_out_frame`` (aten/src/ATen/native/cpu/AvgPoolKernel.cpp)."""
    kernel = list(call.arg(2, "kernel_size"))
    spatial = len(call.args[0].shape) - 2
    window = prod(kernel * spatial if len(kernel) == 1 else kernel)
    return Cost(flops=call.args[0].numel * (window + 1))


@register(ops("_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward"), "pool")
def adaptive_avg_pool_backward(call: OpCall) -> Cost:
    """The forward's count mirrored: each grad_out element divided once and added to each element of
    its exact (overlapping) window."""
    g, x = call.args[0], call.args[1]
    spatial = len(x.shape) - 2 if len(x.shape) > 3 else len(x.shape) - 1
    lead = prod(x.shape[:-spatial])
    windows = prod(adaptive_window_sum(i, o) for i, o in zip(x.shape[-spatial:], g.shape[-spatial:]))
    return Cost(flops=lead * windows + g.numel)


# --- movement and scatter -----------------------------------------------------------------

register(ops("select_backward", "slice_backward"), "movement")(per_element(0))


@register(ops("embedding_dense_backward"), "reduction")
def embedding_backward(call: OpCall) -> Cost:
    """1 addition per grad_out element: each looked-up row's gradient is added into its weight row."""
    return Cost(flops=call.args[0].numel)

