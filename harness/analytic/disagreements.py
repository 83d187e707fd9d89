"""Where ``torch.utils.flop_counter`` (torch 2.13) and the canonical count differ, and why.

Each :class:`Disagreement` names an op, the condition under which it applies and its reason,
and gives the difference as a figure: ``delta(call)`` = torch's FLOPs minus canonical FLOPs for
that part of the op. A row's difference is explained when the canonical FLOPs plus the deltas
of every entry that applies equal torch's figure exactly; :func:`explain` then returns the
reasons, and otherwise says the difference is unexplained (a test keeps that from happening on
any layer kind). Nothing is hidden: ``flop_counter_agrees`` stays False on such rows; the
reason only says why.

FlopCounterMode counts an op it has no formula for as 0 FLOPs. The backward table shows that 0
(instead of "not covered") for the product ops named in :data:`ZERO_IN_FLOP_COUNTER`, so that
the row states the disagreement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod

from harness.analytic.backward_formulas import conv_forward_macs, mask, sdpa_backward_macs
from harness.analytic.canonical import attention_pairs
from harness.analytic.registry import OpCall


@dataclass(frozen=True, slots=True)
class Disagreement:
    """One known difference: ``delta`` is torch's FLOPs minus the canonical FLOPs it accounts for
    (0 where the condition does not hold)."""

    op: str
    condition: str
    reason: str
    delta: Callable[[OpCall], int]


def _grouped_grad_weight(call: OpCall) -> int:
    """torch's grad-weight = groups x the forward's FLOPs; canonical: 1 x."""
    if not mask(call, 10)[1]:
        return 0
    groups = int(call.arg(9, "groups", 1))
    grad_out, x, w = call.args[0], call.args[1], call.args[2]
    return (groups - 1) * 2 * conv_forward_macs(grad_out, x, w, bool(call.arg(7, "transposed")))


def _conv_bias_gradient(call: OpCall) -> int:
    """torch counts no FLOP for grad-bias; canonical: 1 per grad_out element."""
    return -call.args[0].numel if mask(call, 10)[2] else 0


def _uncounted(formula: Callable[[OpCall], int]) -> Callable[[OpCall], int]:
    """torch counts 0: the delta is minus the whole canonical count."""
    return lambda call: -formula(call)


def _cpu_flash_backward(call: OpCall) -> int:
    q, k, v = call.args[1], call.args[2], call.args[3]
    return 2 * sdpa_backward_macs(q, k, v, bool(call.arg(7, "is_causal", False)))


def _full_pairs(per_pair: Callable[[int, int], int], q_index: int, causal_index: int) -> Callable[[OpCall], int]:
    """torch prices every (query, key) pair; canonical only the unmasked ones when ``is_causal``."""
    def delta(call: OpCall) -> int:
        if not bool(call.arg(causal_index, "is_causal", False)):
            return 0
        q, k, v = call.args[q_index], call.args[q_index + 1], call.args[q_index + 2]
        *batch, s_q, d_qk = q.shape
        s_k, d_v = k.shape[-2], v.shape[-1]
        masked = s_q * s_k - attention_pairs(s_q, s_k, True)
        return 2 * prod(batch) * masked * per_pair(d_qk, d_v)
    return delta


_FORWARD_PAIR = lambda d_qk, d_v: d_qk + d_v          # noqa: E731 -- QK^T and AV
_BACKWARD_PAIR = lambda d_qk, d_v: 3 * d_qk + 2 * d_v  # noqa: E731 -- the five products of the backward

_CAUSAL_REASON = ("torch.utils.flop_counter ignores is_causal and prices all Sq x Sk (query, key) pairs; "
                  "canonical counts the unmasked lower triangle, as the kernel skips masked blocks")

#: The known differences, in the order their reasons are given.
FLOP_COUNTER_DISAGREEMENTS: tuple[Disagreement, ...] = (
    Disagreement(
        "convolution_backward", "groups > 1 and grad-weight asked (output_mask[1])",
        "torch.utils.flop_counter's conv_backward_flop prices grad-weight as a dense convolution of the "
        "transposed input with the transposed grad_out, ignoring groups: groups x the true count (each "
        "output channel only correlates with its group's Cin/groups input channels)",
        _grouped_grad_weight),
    Disagreement(
        "convolution_backward", "a bias gradient asked (output_mask[2])",
        "torch.utils.flop_counter counts products only: the bias gradient, a sum of grad_out over batch and "
        "space (1 addition per grad_out element in the canonical count), is not counted",
        _conv_bias_gradient),
    Disagreement(
        "_scaled_dot_product_flash_attention_for_cpu_backward", "always",
        "torch.utils.flop_counter has no formula for the fused CPU flash-attention backward: FlopCounterMode "
        "counts it as 0 FLOPs (canonical: the 5 products of FlashAttention-2's backward)",
        _uncounted(_cpu_flash_backward)),
    Disagreement("_scaled_dot_product_flash_attention_backward", "is_causal", _CAUSAL_REASON,
                 _full_pairs(_BACKWARD_PAIR, 1, 11)),
    Disagreement("_scaled_dot_product_efficient_attention_backward", "is_causal", _CAUSAL_REASON,
                 _full_pairs(_BACKWARD_PAIR, 1, 11)),
    Disagreement("_scaled_dot_product_cudnn_attention_backward", "is_causal", _CAUSAL_REASON,
                 _full_pairs(_BACKWARD_PAIR, 1, 14)),
    Disagreement("_scaled_dot_product_flash_attention", "is_causal", _CAUSAL_REASON,
                 _full_pairs(_FORWARD_PAIR, 0, 4)),
    Disagreement("_scaled_dot_product_efficient_attention", "is_causal", _CAUSAL_REASON,
                 _full_pairs(_FORWARD_PAIR, 0, 5)),
    Disagreement("_scaled_dot_product_cudnn_attention", "is_causal", _CAUSAL_REASON,
                 _full_pairs(_FORWARD_PAIR, 0, 6)),
)

#: Product ops torch has no formula for, shown as FlopCounterMode counts them (0) in backward tables.
ZERO_IN_FLOP_COUNTER = frozenset({"_scaled_dot_product_flash_attention_for_cpu_backward"})

UNEXPLAINED = "unexplained: no known disagreement of torch.utils.flop_counter accounts for this difference"


def applying(call: OpCall) -> list[tuple[Disagreement, int]]:
    """The entries for this op whose condition holds (non-zero delta), with their deltas."""
    name = call.op.__name__
    found = [(d, d.delta(call)) for d in FLOP_COUNTER_DISAGREEMENTS if d.op == name]
    return [(d, delta) for d, delta in found if delta]


def expected_flop_counter(call: OpCall, canonical_flops: int) -> int:
    """What torch.utils.flop_counter reports for this op, from the canonical count and the stated
    corrections (equal to torch's figure whenever every difference is a known one)."""
    return canonical_flops + sum(delta for _, delta in applying(call))


def explain(call: OpCall, canonical_flops: int | None, torch_flops: int | None) -> str | None:
    """Why the canonical FLOPs and torch's differ for this op (``None`` where they agree or one of
    them does not count it): the reasons of the applying entries when their deltas account for the
    whole difference, else :data:`UNEXPLAINED`."""
    if canonical_flops is None or torch_flops is None or canonical_flops == torch_flops:
        return None
    entries = applying(call)
    if canonical_flops + sum(delta for _, delta in entries) != torch_flops:
        return UNEXPLAINED
    return "; ".join(d.reason for d, _ in entries)

