"""The backward pass's counts against hand arithmetic and torch.utils.flop_counter, family by family.

Every figure is written as its arithmetic. ``F`` below is the forward's MACs of the layer; for a
product op FLOPs = 2 x MACs. The independent count (FlopCounterMode run for real over
``torch.autograd.grad`` on meta tensors) is taken apart from the counter's own column.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import harness
from harness.analytic.backward import GRADS, PASSES, saved_activation_bytes
from harness.analytic.count import count_totals, totals
from harness.analytic.disagreements import FLOP_COUNTER_DISAGREEMENTS, UNEXPLAINED
from harness.errors import SpecError
from harness.layers.modules import build_case, build_module
from harness.layers.spec import ACTIVATIONS, LAYERS, parse_layer

# --- helpers --------------------------------------------------------------------------------------


def backward(model, *inputs, **kw) -> pd.DataFrame:  # noqa: ANN001, ANN002, ANN003
    return harness.count(model, *inputs, passes="backward", **kw)


def work(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that are not views (views cost 0 FLOPs and 0 bytes)."""
    return table[table["category"] != "view"].reset_index(drop=True)


def one(model, *inputs, **kw) -> pd.Series:  # noqa: ANN001, ANN002, ANN003
    rows = work(backward(model, *inputs, **kw))
    assert len(rows) == 1, rows[["op", "flops"]]
    return rows.iloc[0]


def flop_counter_backward(model: nn.Module, shapes: list[tuple[int, ...]], grads: tuple[str, ...] | None = None,
                          device: str = "meta") -> int:
    """FlopCounterMode's total over the backward of ``model`` on meta tensors (nothing computed), or
    for real on small CPU tensors (``device="cpu"``: the kernels the CPU picks, fused attention's)."""
    model = model.to(device)
    want_input = grads is None or "input" in grads
    want_weight = grads is None or "weight" in grads
    params = [p for p in model.parameters()]
    before = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(want_weight)
    try:
        xs = [torch.ones(s, device=device, requires_grad=want_input) for s in shapes]
        out = model(*xs)
        wrt = (xs if want_input else []) + (params if want_weight else [])
        with FlopCounterMode(display=False) as fc:
            torch.autograd.grad([out], wrt, [torch.empty_like(out)], allow_unused=True)
    finally:
        for p, b in zip(params, before):
            p.requires_grad_(b)
    return fc.get_total_flops()


def forward_macs(model, *inputs) -> int:  # noqa: ANN001, ANN002
    return int(count_totals(model, *inputs)["macs"])


# --- convolution ------------------------------------------------------------------------------------


def test_depthwise_conv_backward_and_torchs_groups_x_grad_weight() -> None:
    # depthwise 3x3, 48 channels, input 2x48x20x20, padding 1, no bias
    conv = nn.Conv2d(48, 48, 3, padding=1, groups=48, bias=False).to("meta")
    f = 2 * 48 * 20 * 20 * 1 * 9                       # F = N*Cout*H*W*(Cin/g)*k*k = 345,600 MACs
    row = one(conv, (2, 48, 20, 20))
    assert row["op"] == "aten.convolution_backward"
    assert row["macs"] == 2 * f == 691_200              # grad-input F + grad-weight F
    assert row["flops"] == 2 * 2 * f == 1_382_400
    # torch: grad-input 2*N*H*W*Cout*(Cin/g)*9 = 691,200, right; grad-weight priced as a dense conv of
    # x^T [48, 2, 20, 20] with grad_out^T [48, 2, 20, 20] into [1, 48, 3, 3]:
    # 2 * (batch 48) * (3*3) * (Cout 48) * (Cin 2) * (20*20) = 33,177,600 = 48 x 691,200
    assert 2 * 48 * 9 * 48 * 2 * 400 == 48 * 2 * f == 33_177_600
    assert row["flop_counter_flops"] == 691_200 + 33_177_600 == 33_868_800
    assert flop_counter_backward(conv, [(2, 48, 20, 20)]) == 33_868_800
    assert not row["flop_counter_agrees"]
    assert "ignoring groups" in row["flop_counter_reason"]
    # bytes: grad_out, input (both 2*48*20*20*4 = 153,600) and the weight 48*9*4 = 1,728 read;
    # grad-input 153,600 and grad-weight 1,728 written
    assert row["bytes_read"] == 153_600 + 153_600 + 1_728
    assert row["bytes_written"] == 153_600 + 1_728


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_conv_with_bias(groups: int) -> None:
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=groups).to("meta")
    # output 4x4 from 8x8 (stride 2, padding 1): F = 2*16*4*4*(8/g)*9
    f = 2 * 16 * 4 * 4 * (8 // groups) * 9
    row = one(conv, (2, 8, 8, 8))
    bias_adds = 2 * 16 * 4 * 4                          # grad-bias: one addition per grad_out element
    assert row["macs"] == 2 * f
    assert row["flops"] == 4 * f + bias_adds
    # torch: grad-weight g x F, no bias gradient
    assert row["flop_counter_flops"] == 2 * f + 2 * groups * f
    assert flop_counter_backward(conv, [(2, 8, 8, 8)]) == 2 * f + 2 * groups * f
    reason = row["flop_counter_reason"]
    assert ("ignoring groups" in reason) == (groups > 1) and "bias gradient" in reason


def test_conv_transpose_stride_output_padding() -> None:
    # ConvTranspose2d 8->12, k3, s2, p1, output_padding 1, groups 2 on 2x8x7x9: output 14x18
    m = nn.ConvTranspose2d(8, 12, 3, stride=2, padding=1, output_padding=1, groups=2).to("meta")
    f = 2 * 8 * 7 * 9 * (12 // 2) * 9                   # N*Cin*Hin*Win*(Cout/g)*k*k = 54,432
    assert forward_macs(m, (2, 8, 7, 9)) == f
    row = one(m, (2, 8, 7, 9))
    assert row["output_shapes"] == "2x8x7x9, 8x6x3x3, 12"
    assert row["macs"] == 2 * f
    assert row["flops"] == 4 * f + 2 * 12 * 14 * 18     # + grad-bias over the 2x12x14x18 grad_out
    assert row["flop_counter_flops"] == 2 * f + 2 * 2 * f   # torch's grad-weight: groups (2) x F


def test_conv1d_and_conv3d_dilation() -> None:
    row = one(nn.Conv1d(4, 6, 5, stride=2, dilation=2, bias=False).to("meta"), (3, 4, 41))
    assert row["macs"] == 2 * (3 * 6 * 17 * 4 * 5)     # L_out = (41 - 2*4 - 1)//2 + 1 = 17
    row = one(nn.Conv3d(2, 4, 3, padding=1, bias=False).to("meta"), (1, 2, 5, 6, 7))
    assert row["macs"] == 2 * (4 * 5 * 6 * 7 * 2 * 27)
    assert row["flop_counter_agrees"]


def test_conv_grads_subsets() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1).to("meta")
    f = 2 * 16 * 6 * 6 * 8 * 9                          # 82,944 MACs
    g_bytes, x_bytes, w_bytes, b_bytes = 2 * 16 * 36 * 4, 2 * 8 * 36 * 4, 16 * 8 * 9 * 4, 16 * 4
    both = one(conv, (2, 8, 6, 6))
    assert both["flops"] == 4 * f + 2 * 16 * 36
    assert both["bytes_read"] == g_bytes + x_bytes + w_bytes
    weight = one(conv, (2, 8, 6, 6), grads=("weight",))  # no grad-input: output_mask [F, T, T]
    assert weight["output_shapes"] == "16x8x3x3, 16"
    assert weight["flops"] == 2 * f + 2 * 16 * 36
    assert weight["bytes_read"] == g_bytes + x_bytes         # the weight is not read
    assert weight["bytes_written"] == w_bytes + b_bytes
    inp = one(conv, (2, 8, 6, 6), grads=("input",))      # parameters frozen: output_mask [T, F, F]
    assert inp["output_shapes"] == "2x8x6x6"
    assert inp["flops"] == 2 * f and inp["flop_counter_agrees"]
    assert inp["bytes_read"] == g_bytes + w_bytes             # the saved input is not read
    assert inp["bytes_written"] == x_bytes
    assert flop_counter_backward(conv, [(2, 8, 6, 6)], ("input",)) == 2 * f
    # torch's ConvolutionBackward0 keeps the input whichever gradients are asked
    assert saved_activation_bytes(conv, (2, 8, 6, 6), grads=("input",)) == x_bytes


# --- linear and matmul ------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_linear_backward(bias: bool) -> None:
    lin = nn.Linear(32, 16, bias=bias).to("meta")
    rows = work(backward(lin, (6, 32)))
    f = 6 * 32 * 16                                     # F = N * in * out = 3,072
    mms = rows[rows["op"] == "aten.mm"].set_index("input_shapes")
    # grad-input = grad_out [6,16] @ W [16,32]; grad-weight = grad_out^T [16,6] @ x [6,32]: each F
    # (with a bias, AddmmBackward0 computes grad-input first; MmBackward0 grad-weight first)
    assert sorted(mms.index) == ["16x6, 6x32", "6x16, 16x32"]
    assert list(mms["macs"]) == [f, f]
    assert mms["flop_counter_agrees"].all()
    sums = rows[rows["op"] == "aten.sum"]
    assert list(sums["flops"]) == ([6 * 16] if bias else [])  # grad-bias: sum of grad_out over the batch
    total = count_totals(lin, (6, 32), passes="backward")
    assert total["flops"] == 4 * f + (6 * 16 if bias else 0)
    assert total["flop_counter_flops"] == flop_counter_backward(lin, [(6, 32)]) == 4 * f
    # bytes: grad-input reads g (6*16*4) and W (16*32*4), writes 6*32*4; grad-weight reads g and x
    assert mms.loc["6x16, 16x32", "bytes_read"] == 384 + 2048
    assert mms.loc["6x16, 16x32", "bytes_written"] == 768
    assert mms.loc["16x6, 6x32", "bytes_read"] == 384 + 768
    assert mms.loc["16x6, 6x32", "bytes_written"] == 2048


def test_linear_grads_subsets() -> None:
    lin = nn.Linear(32, 16).to("meta")
    weight = work(backward(lin, (6, 32), grads=("weight",)))
    assert list(weight["op"]) == ["aten.mm", "aten.sum"]       # no grad-input product
    assert list(weight["input_shapes"]) == ["16x6, 6x32", "6x16"]
    assert list(weight["flops"]) == [2 * 16 * 6 * 32, 6 * 16]
    inp = work(backward(lin, (6, 32), grads=("input",)))
    assert list(inp["op"]) == ["aten.mm"]                      # no grad-weight product, no bias sum
    assert list(inp["input_shapes"]) == ["6x16, 16x32"]
    assert list(inp["flops"]) == [2 * 6 * 16 * 32]
    assert saved_activation_bytes(lin, (6, 32), grads=("input",)) == 0       # only the weight is needed
    assert saved_activation_bytes(lin, (6, 32), grads=("weight",)) == 6 * 32 * 4   # the input x


@pytest.mark.parametrize("kind", ["matmul", "bmm", "einsum", "mm"])
def test_matmul_family_backward(kind: str) -> None:
    spec = parse_layer(kind, dict(m=4, n=5, k=6, batch=3))
    model, shapes, _ = build_case(spec)
    batch = 1 if kind == "mm" else 3
    f = batch * 4 * 5 * 6                               # F = b*m*n*k
    total = count_totals(model, *shapes, passes="backward")
    # grad_a = g [m,n] @ b^T [n,k]; grad_b = a^T [k,m] @ g [m,n]: each F
    assert total["macs"] == 2 * f
    assert total["flops"] == total["flop_counter_flops"] == 4 * f
    assert total["flop_counter_flops"] == flop_counter_backward(model, shapes)


# --- attention --------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_fused_sdpa_backward(causal: bool) -> None:
    spec = parse_layer("sdpa", dict(batch=2, heads=3, seq=16, head_dim=8, causal=causal))
    model, shapes, _ = build_case(spec)
    pairs = 16 * 17 // 2 if causal else 16 * 16           # 136 causal (lower triangle), 256 full
    row = one(model, *shapes)
    assert row["op"] == "aten._scaled_dot_product_flash_attention_for_cpu_backward"   # the kernel that ran
    # 5 products (FlashAttention-2): pairs * (3*d_qk + 2*d_v) MACs per batch-head
    assert row["macs"] == 2 * 3 * pairs * (3 * 8 + 2 * 8)
    fwd = count_totals(model, *shapes)
    assert fwd["flops"] == 2 * 2 * 3 * pairs * (8 + 8)
    assert row["flops"] * 2 == fwd["flops"] * 5          # 2.5x the forward's product FLOPs
    assert row["flop_counter_flops"] == 0 and not row["flop_counter_agrees"]
    # run for real on the CPU (the fused kernel runs): FlopCounterMode has no formula for its backward
    assert flop_counter_backward(model, shapes, device="cpu") == 0
    assert "no formula for the fused CPU flash-attention backward" in row["flop_counter_reason"]
    # bytes: reads grad_out, q, k, v, out (5 x 2*3*16*8*4 = 3,072 each) and logsumexp 2*3*16*4;
    # writes grad q, k, v
    assert row["bytes_read"] == 5 * 3072 + 384
    assert row["bytes_written"] == 3 * 3072
    # saved: q, k, v, out and logsumexp
    assert count_totals(model, *shapes, passes="backward")["saved_activation_bytes"] == 4 * 3072 + 384


def test_unfused_attention_counts_its_real_ops() -> None:
    # nn.MultiheadAttention with need_weights=True runs the math path: bmm, softmax, ...
    b, s, e, h = 2, 6, 16, 2
    spec = parse_layer("mha", dict(batch=b, seq=s, embed_dim=e, heads=h))
    model, shapes, _ = build_case(spec)
    rows = work(backward(model, *shapes))
    d = e // h
    bmm = rows[rows["op"] == "aten.bmm"]
    # QK^T and AV each b*h*s*s*d MACs forward; each has two gradient products
    assert int(bmm["macs"].sum()) == 4 * b * h * s * s * d
    mm = rows[rows["op"] == "aten.mm"]
    # in-projection [b*s, e] @ [e, 3e] and out-projection [b*s, e] @ [e, e]: two products each
    assert int(mm["macs"].sum()) == 2 * b * s * e * 3 * e + 2 * b * s * e * e
    assert (rows["op"] == "aten._softmax_backward_data").sum() == 1
    covered = rows[rows["flop_counter_flops"].notna()]
    assert covered["flop_counter_agrees"].all()
    assert set(rows["module"]) == {"attn"}


# --- norms, activations, pooling, softmax -----------------------------------------------------------


def test_batch_norm_training_backward() -> None:
    bn = nn.BatchNorm2d(8).to("meta").train()
    row = one(bn, (4, 8, 5, 5))
    n = 4 * 8 * 5 * 5                                   # 800 elements
    assert row["op"] == "aten.native_batch_norm_backward"
    # grad-input 9 per element: sum(g) 1, sum((x-mean)*g) 3, projection 2, combine 3
    assert row["flops"] == 9 * n == 7200
    # reads g, x (3,200 each), weight, saved mean and invstd (32 each); running stats unread
    assert row["bytes_read"] == 3200 + 3200 + 3 * 32
    assert row["bytes_written"] == 3200 + 32 + 32
    assert count_totals(bn, (4, 8, 5, 5), passes="backward")["saved_activation_bytes"] == 3200 + 32 + 32
    weight_only = one(bn, (4, 8, 5, 5), grads=("weight",))
    assert weight_only["flops"] == (3 + 1) * n           # sum((x-mean)*g) and sum(g) only
    assert weight_only["bytes_read"] == 3200 + 3200 + 32 + 32   # no weight


@pytest.mark.parametrize("op", ["native_batch_norm_backward", "batch_norm_backward"])
def test_batch_norm_backward_ops_called_directly(op: str) -> None:
    # batch_norm_backward is the backward of _batch_norm_with_update (CUDA's training path); same rule
    aten = torch.ops.aten
    extra = (torch.empty(0, device="meta"),) if op == "batch_norm_backward" else ()

    def call(g, x, w, rm, rv, sm, si):  # noqa: ANN001, ANN202
        return getattr(aten, op)(g, x, w, rm, rv, sm, si, True, 1e-5, [True, True, True], *extra)

    row = work(harness.count(call, (4, 8, 5, 5), (4, 8, 5, 5), *[(8,)] * 5)).iloc[0]
    assert row["flops"] == 9 * 800
    assert row["bytes_read"] == 3200 + 3200 + 3 * 32     # running statistics unread in training
    assert row["bytes_written"] == 3200 + 32 + 32


def test_batch_norm_eval_backward() -> None:
    row = one(nn.BatchNorm2d(8).to("meta").eval(), (4, 8, 5, 5))
    assert row["flops"] == (1 + 3 + 1) * 800              # g*w*invstd 1, grad-weight 3, grad-bias 1


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_backward(affine: bool) -> None:
    row = one(nn.LayerNorm(8, elementwise_affine=affine).to("meta"), (2, 3, 8))
    n = 2 * 3 * 8
    # xhat 2 + grad-input 7 (+1 g*w) + grad-weight 2 + grad-bias 1 = 13; without affine: 2 + 7 = 9
    assert row["flops"] == (13 if affine else 9) * n


def test_group_norm_backward() -> None:
    row = one(nn.GroupNorm(2, 4).to("meta"), (2, 4, 3, 3))
    assert row["flops"] == 13 * 2 * 4 * 3 * 3


@pytest.mark.parametrize("module,per", [(nn.ReLU(), 1), (nn.GELU(), 11), (nn.GELU("tanh"), 18), (nn.SiLU(), 9),
                                        (nn.Sigmoid(), 3), (nn.Tanh(), 3), (nn.ReLU6(), 2), (nn.LeakyReLU(), 2),
                                        (nn.Hardswish(), 5), (nn.Softmax(-1), 4), (nn.LogSoftmax(-1), 4)])
def test_elementwise_backward(module: nn.Module, per: int) -> None:
    row = one(module, (4, 10))
    assert row["flops"] == per * 40
    assert row["bytes_read"] == 2 * 40 * 4 and row["bytes_written"] == 40 * 4   # g and x (or y) in, dx out


def test_training_dropout_backward() -> None:
    # off CUDA, dropout is x * noise (bernoulli, scaled): its backward is g * noise, 1 per element
    # (CUDA's fused native_dropout has native_dropout_backward, g * mask * scale: 2 per element)
    row = one(nn.Dropout(0.5).train(), (4, 10))
    assert row["op"] == "aten.mul"
    assert row["flops"] == 40
    assert row["bytes_read"] == 2 * 40 * 4 and row["bytes_written"] == 40 * 4


def test_max_pool_backward() -> None:
    row = one(nn.MaxPool2d(2), (2, 3, 8, 8))
    outputs = 2 * 3 * 4 * 4                             # 96
    assert row["flops"] == outputs                       # one scatter-add per grad_out element
    assert row["bytes_read"] == outputs * 4 + outputs * 8    # g (fp32) and the int64 indices; x unread
    assert row["bytes_written"] == 2 * 3 * 8 * 8 * 4
    half = one(nn.MaxPool2d(2), (2, 3, 8, 8), dtype="fp16")
    assert half["bytes_read"] == outputs * 2 + outputs * 8   # indices stay int64
    assert half["bytes_written"] == 2 * 3 * 8 * 8 * 2


def test_avg_pool_backward() -> None:
    row = one(nn.AvgPool2d(3, 2, 1), (2, 3, 8, 8))
    assert row["flops"] == 2 * 3 * 4 * 4 * (9 + 1)       # 9 window additions + 1 divide per output
    row = one(nn.AdaptiveAvgPool2d(3), (1, 1, 8, 8))
    # windows along 8 -> 3: [0,3), [2,6), [5,8): 3 + 4 + 3 = 10 per dim; 10 * 10 + 9 divides
    assert row["flops"] == 10 * 10 + 9


# --- passes -----------------------------------------------------------------------------------------

#: One small valid configuration of every layer kind (the sweep below checks it covers LAYERS).
KINDS: dict[str, tuple[dict, list[tuple[int, ...]] | None]] = {
    "conv1d": ({"in": 4, "out": 6, "k": 3}, [(2, 4, 9)]),
    "conv2d": ({"in": 4, "out": 6, "k": 3, "g": 2}, [(2, 4, 9, 9)]),
    "conv3d": ({"in": 4, "out": 4, "k": 3, "g": 4}, [(1, 4, 5, 5, 5)]),
    "conv_transpose1d": ({"in": 4, "out": 6, "k": 3, "s": 2}, [(2, 4, 9)]),
    "conv_transpose2d": ({"in": 4, "out": 6, "k": 3, "g": 2, "s": 2, "op": 1}, [(2, 4, 5, 5)]),
    "conv_transpose3d": ({"in": 2, "out": 2, "k": 2}, [(1, 2, 3, 3, 3)]),
    "linear": ({"in": 8, "out": 4}, [(3, 8)]),
    "matmul": ({"m": 3, "n": 4, "k": 5, "b": 2}, None), "mm": ({"m": 3, "n": 4, "k": 5}, None),
    "bmm": ({"m": 3, "n": 4, "k": 5, "b": 2}, None), "einsum": ({"m": 3, "n": 4, "k": 5, "b": 2}, None),
    "batchnorm1d": ({"c": 4, "train": True}, [(3, 4, 2)]), "batchnorm2d": ({"c": 4}, [(2, 4, 3, 3)]),
    "batchnorm3d": ({"c": 4, "train": True}, [(2, 4, 2, 2, 2)]),
    "instancenorm1d": ({"c": 4}, [(2, 4, 5)]), "instancenorm2d": ({"c": 4, "affine": False}, [(2, 4, 3, 3)]),
    "instancenorm3d": ({"c": 4}, [(2, 4, 2, 2, 2)]),
    "layernorm": ({"c": 8}, [(2, 3, 8)]), "groupnorm": ({"c": 4, "g": 2}, [(2, 4, 3, 3)]),
    "softmax": ({}, [(2, 8)]), "add": ({}, [(2, 8), (2, 8)]), "mul": ({}, [(2, 8), (1, 8)]),
    "maxpool1d": ({"k": 2}, [(2, 3, 8)]), "maxpool2d": ({"k": 2}, [(2, 3, 8, 8)]),
    "maxpool3d": ({"k": 2}, [(2, 3, 4, 4, 4)]), "avgpool1d": ({"k": 3, "s": 2, "p": 1}, [(2, 3, 8)]),
    "avgpool2d": ({"k": 3, "s": 2, "p": 1}, [(2, 3, 8, 8)]), "avgpool3d": ({"k": 2}, [(2, 3, 4, 4, 4)]),
    "adaptiveavgpool1d": ({"out": 3}, [(2, 3, 8)]), "adaptiveavgpool2d": ({"out": 3}, [(2, 3, 8, 8)]),
    "adaptiveavgpool3d": ({"out": 2}, [(2, 3, 5, 5, 5)]), "adaptivemaxpool1d": ({"out": 3}, [(2, 3, 8)]),
    "adaptivemaxpool2d": ({"out": 3}, [(2, 3, 8, 8)]), "adaptivemaxpool3d": ({"out": 2}, [(2, 3, 5, 5, 5)]),
    "sdpa": ({"heads": 2, "seq": 16, "d": 8, "causal": True}, None),
    "mha": ({"e": 16, "h": 2, "seq": 6, "causal": True}, None),
    **{kind: ({}, [(2, 3, 8)]) for kind in ACTIVATIONS},
}


def build(kind: str) -> tuple[nn.Module, list[tuple[int, ...]]]:
    params, shapes = KINDS[kind]
    model, inputs, _ = build_case(parse_layer(kind, params), shapes)
    return model, inputs


def test_every_layer_kind_is_swept() -> None:
    assert set(KINDS) == set(LAYERS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_spec_says_whether_its_module_has_a_weight_gradient(kind: str) -> None:
    # suites resolve a backward's default gradients from the spec alone (no module built at expansion)
    params, _ = KINDS[kind]
    for extra in ({}, {"affine": False}, {"bias": False}):
        try:
            spec = parse_layer(kind, {**params, **extra})
        except SpecError:
            continue                                    # a key this kind does not have
        model = build_module(spec, torch.float32, "meta")
        assert spec.has_parameters() == any(True for _ in model.parameters()), (kind, extra)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_forward_unchanged_backward_counted_and_explained(kind: str) -> None:
    model, shapes = build(kind)
    forward = harness.count(model, *shapes)
    both = harness.count(model, *shapes, passes="forward+backward")
    assert list(both.columns) == list(forward.columns) + ["pass", "flop_counter_reason"]
    # the training forward (autograd on) dispatches what the counted forward does, row for row
    pd.testing.assert_frame_equal(both[both["pass"] == "forward"][forward.columns].reset_index(drop=True), forward)
    bwd = both[both["pass"] == "backward"]
    assert bwd["counted"].all(), bwd.loc[~bwd["counted"], "op"].tolist()
    assert not (bwd["flop_counter_reason"] == UNEXPLAINED).any()
    # every disagreement has its reason; every agreement none
    disagree = both["flop_counter_agrees"] == False  # noqa: E712
    assert both.loc[disagree.fillna(False), "flop_counter_reason"].notna().all()
    assert both.loc[~disagree.fillna(False), "flop_counter_reason"].isna().all()
    # the index runs on over both passes
    assert list(both["index"]) == list(range(len(both)))


@pytest.mark.parametrize("kind", ["conv2d", "linear", "batchnorm1d", "layernorm", "sdpa", "mha", "maxpool2d"])
def test_forward_plus_backward_is_the_sum(kind: str) -> None:
    model, shapes = build(kind)
    fwd = count_totals(model, *shapes)
    bwd = count_totals(model, *shapes, passes="backward")
    both = count_totals(model, *shapes, passes="forward+backward")
    for key in ("flops", "macs", "bytes_read", "bytes_written", "ops", "uncounted_ops", "flop_counter_flops",
                "flop_counter_ops", "flop_counter_disagreements"):
        assert both[key] == fwd[key] + bwd[key], key
    assert both["params"] == fwd["params"]               # each parameter once over both passes
    assert both["saved_activation_bytes"] == bwd["saved_activation_bytes"]
    # count_totals sums as totals(count(...)) does
    table = harness.count(model, *shapes, passes="forward+backward")
    assert (totals(table) == both).all()


def test_forward_regression_against_known_figures() -> None:
    # today's forward numbers, unchanged by passes/grads (defaults: forward)
    conv = nn.Conv2d(64, 64, 3, padding=1).to("meta")
    fwd = count_totals(conv, (8, 64, 56, 56))
    assert fwd["flops"] == 2 * 8 * 64 * 56 * 56 * 64 * 9 == 1_849_688_064
    assert fwd["params"] == 64 * 64 * 9 + 64
    assert "saved_activation_bytes" not in fwd
    lin = count_totals(nn.Linear(512, 256).to("meta"), (64, 512))
    assert lin["macs"] == 64 * 512 * 256
    ln = count_totals(nn.LayerNorm(768).to("meta"), (8, 196, 768))
    assert ln["flops"] == 8 * 8 * 196 * 768
    table = harness.count(conv, (8, 64, 56, 56), grads=("weight",))     # grads is ignored by the forward
    assert list(table.columns)[-1] == "convention" and "pass" not in table.columns


def test_worked_example_conv3x3() -> None:
    # docs/backward-pass.md: conv2d in=64 out=64 k=3 p=1 on 8x64x56x56, fp32, with bias
    conv = nn.Conv2d(64, 64, 3, padding=1).to("meta")
    f = 8 * 64 * 56 * 56 * 64 * 9                      # 924,844,032 MACs
    row = one(conv, (8, 64, 56, 56))
    assert row["flops"] == 4 * f + 8 * 64 * 56 * 56 == 3_700_981_760
    x = 8 * 64 * 56 * 56 * 4                           # 6,422,528 bytes (x, y, grad_out alike)
    w = 64 * 64 * 9 * 4                                 # 147,456
    assert row["bytes_read"] == 2 * x + w and row["bytes_written"] == x + w + 64 * 4
    gw = one(conv, (8, 64, 56, 56), grads=("weight",))
    assert gw["flops"] == 2 * f + 8 * 64 * 56 * 56 and gw["bytes_read"] == 2 * x
    gi = one(conv, (8, 64, 56, 56), grads=("input",))
    assert gi["flops"] == 2 * f and gi["bytes_read"] == x + w and gi["bytes_written"] == x
    assert saved_activation_bytes(conv, (8, 64, 56, 56)) == x


# --- modules, state, devices ------------------------------------------------------------------------


def test_backward_rows_carry_their_module_and_leave_the_model_as_it_was() -> None:
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5)).to("meta")
    model[0].weight.requires_grad_(False)
    rows = work(backward(model, (2, 4, 6, 6)))
    assert list(zip(rows["op"], rows["module"])) == [
        ("aten.mm", "3"), ("aten.mm", "3"), ("aten.sum", "3"), ("aten.threshold_backward", "1"),
        ("aten.convolution_backward", "0")]
    assert rows.loc[0, "param_names"] == "3.weight"     # the grad-input product reads W (a saved view of it)
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
    assert all(p.grad is None for p in model.parameters())


def test_real_module_traced_on_fake_tensors_counts_the_same() -> None:
    conv = nn.Conv2d(4, 8, 3, groups=2)                  # on the CPU: traced on fake tensors
    real = count_totals(conv, (2, 4, 6, 6), passes="backward")
    meta = count_totals(conv.to("meta"), (2, 4, 6, 6), passes="backward")
    for key in ("flops", "macs", "bytes_read", "bytes_written", "saved_activation_bytes", "flop_counter_flops"):
        assert real[key] == meta[key], key


def test_disagreement_table_is_exposed() -> None:
    ops = {d.op for d in FLOP_COUNTER_DISAGREEMENTS}
    assert {"convolution_backward", "_scaled_dot_product_flash_attention_for_cpu_backward"} <= ops
    assert all(d.condition and d.reason for d in FLOP_COUNTER_DISAGREEMENTS)


# --- errors -----------------------------------------------------------------------------------------


def _error(fn, *args, **kw) -> str:  # noqa: ANN001, ANN002, ANN003
    with pytest.raises(SpecError) as info:
        fn(*args, **kw)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_impossible_requests_are_one_line_errors() -> None:
    text = _error(harness.count, nn.ReLU(), (2, 3), passes="backward", grads=("weight",))
    assert text == ("ReLU: grads=('weight',) is invalid: expected ('input',): the layer has no parameters, "
                    "so no weight gradient")
    emb = nn.Embedding(10, 4).to("meta")
    idx = torch.zeros(3, dtype=torch.long, device="meta")
    text = _error(harness.count, emb, idx, passes="backward", grads=("input",))
    assert text == ("Embedding: grads=('input',) is invalid: expected ('weight',): the input (int64) cannot "
                    "take a gradient")
    text = _error(count_totals, nn.Linear(3, 2).to("meta"), (2, 3), passes="sideways")
    assert text == "passes='sideways' is invalid: expected one of " + ", ".join(PASSES)
    text = _error(harness.count, nn.Linear(3, 2).to("meta"), (2, 3), passes="backward", grads=("bias",))
    assert text.startswith("grads=('bias',) is invalid: expected a non-empty subset of ('input', 'weight')")
    text = _error(harness.count, nn.Linear(3, 2).to("meta"), (2, 3), passes="backward", convention="thop")
    assert text.startswith("convention='thop' is invalid: expected an op-level convention")
    assert GRADS == ("input", "weight")


def test_embedding_weight_gradient_by_default() -> None:
    emb = nn.Embedding(10, 4).to("meta")
    table = backward(emb, torch.zeros(3, dtype=torch.long, device="meta"))
    assert table.attrs["grads"] == ("weight",)           # the integer input takes none
    row = work(table).iloc[0]
    assert row["op"] == "aten.embedding_dense_backward" and row["flops"] == 3 * 4


# --- random valid configurations against torch.utils.flop_counter -------------------------------------

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def conv_cases(draw: st.DrawFn) -> tuple[nn.Module, tuple[int, ...], tuple[str, ...] | None]:
    """Valid convolutions only, built so: channels are multiples of the groups, the input is at
    least the dilated kernel minus the padding (conv), or gives a positive output size with
    output_padding < max(stride, dilation) (conv-transpose)."""
    dims, groups = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    cin, cout = draw(st.integers(1, 3)) * groups, draw(st.integers(1, 3)) * groups
    k, s, p, d = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
    bias, transposed = draw(st.booleans()), draw(st.booleans())
    eff = d * (k - 1) + 1
    if transposed:
        op = draw(st.integers(0, max(s, d) - 1))
        least = max(1, 1 + -(-(1 + 2 * p - eff - op) // s))       # (size-1)*s - 2p + eff + op >= 1
        cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1]
        module = cls(cin, cout, k, s, p, op, groups, bias, d, device="meta")
    else:
        least = max(1, eff - 2 * p)
        cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
        module = cls(cin, cout, k, s, p, d, groups, bias, device="meta")
    size = draw(st.integers(least, least + 5))
    grads = draw(st.sampled_from([None, ("input",), ("weight",)]))
    return module, (draw(st.integers(1, 2)), cin) + (size,) * dims, grads


@SETTINGS
@given(case=conv_cases())
def test_conv_backward_random(case: tuple[nn.Module, tuple[int, ...], tuple[str, ...] | None]) -> None:
    module, shape, grads = case
    row = one(module, shape, grads=grads)
    torch_total = flop_counter_backward(module, [shape], grads)
    assert row["flop_counter_flops"] == torch_total
    f = forward_macs(module, shape)
    grad_input = grads is None or "input" in grads
    grad_weight = grads is None or "weight" in grads
    grad_bias = grad_weight and module.bias is not None
    out_numel = int(count_totals(module, shape)["bytes_written"]) // 4       # the forward's fp32 output
    assert row["macs"] == f * (grad_input + grad_weight)
    assert row["flops"] == 2 * row["macs"] + (out_numel if grad_bias else 0)
    # torch: right where groups == 1 (bar the bias sum it does not count); groups x F for grad-weight
    correction = (module.groups - 1) * 2 * f * grad_weight - (out_numel if grad_bias else 0)
    assert torch_total == row["flops"] + correction
    assert row["flop_counter_agrees"] == (correction == 0)
    if correction:
        assert row["flop_counter_reason"] not in (None, UNEXPLAINED)


@SETTINGS
@given(lead=st.lists(st.integers(1, 5), min_size=1, max_size=3), fin=st.integers(1, 48), fout=st.integers(1, 48),
       bias=st.booleans(), grads=st.sampled_from([None, ("input",), ("weight",)]))
def test_linear_backward_random(lead: list[int], fin: int, fout: int, bias: bool,
                                grads: tuple[str, ...] | None) -> None:
    lin = nn.Linear(fin, fout, bias=bias, device="meta")
    shape = (*lead, fin)
    total = count_totals(lin, shape, passes="backward", grads=grads)
    n = 1
    for s in lead:
        n *= s
    products = (grads is None or "input" in grads) + (grads is None or "weight" in grads)
    assert total["macs"] == products * n * fin * fout
    assert total["flop_counter_flops"] == flop_counter_backward(lin, [shape], grads) == 2 * total["macs"]
    assert total["flop_counter_disagreements"] == 0


@SETTINGS
@given(m=st.integers(1, 24), n=st.integers(1, 24), k=st.integers(1, 24), batch=st.integers(1, 4))
def test_bmm_backward_random(m: int, n: int, k: int, batch: int) -> None:
    model, shapes, _ = build_case(parse_layer("bmm", dict(m=m, n=n, k=k, batch=batch)))
    total = count_totals(model, *shapes, passes="backward")
    assert total["macs"] == 2 * batch * m * n * k
    assert total["flops"] == total["flop_counter_flops"] == flop_counter_backward(model, shapes)


# --- imports ----------------------------------------------------------------------------------------

NO_HEAVY_IMPORT = r"""
import sys, torch
from harness.analytic.count import count_totals
from harness.layers.modules import build_module
from harness.layers.spec import parse_layer
KINDS = KINDS_REPR
for kind, (params, shapes) in KINDS.items():
    spec = parse_layer(kind, params)
    count_totals(build_module(spec, torch.float32, "meta"), *spec.inputs(shapes), passes="forward+backward")
print(*(m in sys.modules for m in ("torch._dynamo", "torch.fx.experimental.symbolic_shapes", "sympy")))
"""


def test_backward_on_meta_imports_no_heavy_module() -> None:
    code = NO_HEAVY_IMPORT.replace("KINDS_REPR", repr(KINDS))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False", "False"]


def test_functional_sdpa_with_distinct_value_dim() -> None:
    # d_v != d_qk: 5 products, pairs * (3*d_qk + 2*d_v) per batch-head, whichever kernel runs
    def attn(q, k, v):  # noqa: ANN001, ANN202
        return F.scaled_dot_product_attention(q, k, v)
    table = work(backward(attn, (1, 2, 8, 4), (1, 2, 8, 4), (1, 2, 8, 6)))
    fused = table[table["op"].str.contains("flash_attention")]
    if len(fused):
        assert fused["macs"].sum() == 2 * 8 * 8 * (3 * 4 + 2 * 6)
    else:   # the math path: its products, counted op by op
        assert table[table["category"] == "matmul"]["flop_counter_agrees"].all()
