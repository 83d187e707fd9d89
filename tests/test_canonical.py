"""Canonical formulas against hand arithmetic (seed formulas), one op family at a time."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import harness
from harness.analytic.canonical import adaptive_window_sum, attention_pairs


def one(model, *inputs, **kw):  # noqa: ANN001, ANN002, ANN003
    table = harness.count(model, *inputs, **kw)
    counted = table[~table["category"].isin(["view", "none"])]
    assert len(counted) == 1, counted[["op", "category"]]
    return counted.iloc[0]


@pytest.mark.parametrize("groups", [1, 2, 4, 64])
def test_grouped_conv(groups: int) -> None:
    # MACs = N*Cout*Ho*Wo*(Cin/g)*k*k: dense, grouped, depthwise (g = Cin = Cout)
    row = one(nn.Conv2d(64, 64, 3, padding=1, groups=groups, bias=False), (2, 64, 14, 14))
    assert row["macs"] == 2 * 64 * 14 * 14 * (64 // groups) * 9
    assert row["params"] == 64 * (64 // groups) * 9


def test_pointwise_conv_equals_linear_over_pixels() -> None:
    conv = one(nn.Conv2d(32, 48, 1, bias=False), (1, 32, 10, 10))
    lin = one(nn.Linear(32, 48, bias=False), (100, 32))
    assert conv["macs"] == lin["macs"] == 100 * 32 * 48


def test_conv_bias_adds_params_not_flops() -> None:
    with_bias = one(nn.Conv2d(8, 16, 3), (1, 8, 10, 10))
    without = one(nn.Conv2d(8, 16, 3, bias=False), (1, 8, 10, 10))
    assert with_bias["flops"] == without["flops"] == 2 * 16 * 8 * 8 * 8 * 9
    assert with_bias["params"] - without["params"] == 16


def test_conv1d_and_conv3d_dilation_stride() -> None:
    row = one(nn.Conv1d(4, 6, 5, stride=2, dilation=2, bias=False), (3, 4, 41))
    lout = (41 - 2 * (5 - 1) - 1) // 2 + 1  # 16
    assert row["macs"] == 3 * 6 * lout * 4 * 5
    row = one(nn.Conv3d(2, 4, 3, padding=1, bias=False), (1, 2, 5, 6, 7))
    assert row["macs"] == 4 * 5 * 6 * 7 * 2 * 27


@pytest.mark.parametrize("groups,stride,output_padding,dilation", [(1, 2, 1, 1), (2, 2, 0, 1), (4, 3, 1, 2)])
def test_conv_transpose_uses_input_positions(groups: int, stride: int, output_padding: int, dilation: int) -> None:
    # seed 003: MACs = N * Cin * Hin * Win * (Cout/g) * kH * kW  -- not the conv formula on the output
    m = nn.ConvTranspose2d(8, 12, 3, stride=stride, padding=1, output_padding=output_padding,
                           groups=groups, dilation=dilation, bias=False)
    row = one(m, (2, 8, 7, 9))
    assert row["macs"] == 2 * 8 * 7 * 9 * (12 // groups) * 9
    assert row["flop_counter_agrees"]


def test_linear_nd_input() -> None:
    row = one(nn.Linear(32, 16), (4, 5, 6, 32))
    assert row["macs"] == 4 * 5 * 6 * 32 * 16
    assert row["params"] == 32 * 16 + 16


def test_matmul_family() -> None:
    a, b = (3, 4, 5), (3, 5, 6)
    assert one(torch.bmm, a, b)["macs"] == 3 * 4 * 5 * 6
    assert one(torch.mm, (4, 5), (5, 6))["macs"] == 4 * 5 * 6
    assert one(torch.addmm, (6,), (4, 5), (5, 6))["macs"] == 4 * 5 * 6
    assert one(torch.baddbmm, (3, 4, 6), a, b)["macs"] == 3 * 4 * 5 * 6
    assert one(lambda x, y: torch.einsum("bij,bjk->bik", x, y), a, b)["macs"] == 3 * 4 * 5 * 6
    assert one(torch.matmul, (2, 3, 4, 5), (2, 3, 5, 6))["macs"] == 2 * 3 * 4 * 5 * 6


def test_attention_pairs() -> None:
    assert attention_pairs(4, 4, False) == 16
    assert attention_pairs(4, 4, True) == 1 + 2 + 3 + 4
    assert attention_pairs(3, 5, True) == 1 + 2 + 3  # torch's top-left aligned tril
    assert attention_pairs(5, 3, True) == 1 + 2 + 3 + 3 + 3


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa(causal: bool) -> None:
    b, h, s, d = 2, 4, 32, 16
    row = one(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
              (b, h, s, d), (b, h, s, d), (b, h, s, d))
    pairs = s * (s + 1) // 2 if causal else s * s
    assert row["category"] == "attention"
    assert row["macs"] == b * h * pairs * (d + d)
    assert row["flops"] == 2 * row["macs"]  # FlashAttention's 4*S^2*d per head when not causal


def test_multihead_attention_projections_scores_softmax_av() -> None:
    e, h, s, b = 32, 4, 10, 2
    table = harness.count(nn.MultiheadAttention(e, h, batch_first=True).eval(), (b, s, e), (b, s, e), (b, s, e))
    macs = table.groupby("op")["macs"].sum()
    assert macs["aten.mm"] == 3 * b * s * e * e                 # q, k, v projections
    assert macs["aten.bmm"] == b * h * s * s * (e // h) * 2      # QK^T (scaled) and AV
    assert macs["aten.addmm"] == b * s * e * e                   # output projection
    softmax = table[table["op"] == "aten._softmax"]
    assert int(softmax["flops"].sum()) == 5 * b * h * s * s
    assert harness.totals(table)["params"] == 4 * e * e + 4 * e


@pytest.mark.parametrize("module,per_element", [
    (nn.ReLU(), 1), (nn.ReLU6(), 2), (nn.Sigmoid(), 4), (nn.Tanh(), 1), (nn.SiLU(), 5),
    (nn.GELU(), 5), (nn.GELU("tanh"), 9), (nn.Hardswish(), 5), (nn.Softmax(-1), 5)])
def test_activations(module: nn.Module, per_element: int) -> None:
    row = one(module, (3, 7, 11))
    assert row["flops"] == per_element * 3 * 7 * 11
    assert row["bytes_read"] == row["bytes_written"] == 3 * 7 * 11 * 4


def test_residual_add_and_mul() -> None:
    assert one(torch.add, (2, 3, 4), (2, 3, 4))["flops"] == 24
    row = one(torch.mul, (2, 3, 4), (4,))
    assert row["flops"] == 24
    assert row["bytes_read"] == (24 + 4) * 4  # the broadcast operand is read once


@pytest.mark.parametrize("train,affine,per_element", [(False, True, 2), (False, False, 2), (True, True, 8),
                                                      (True, False, 6)])
def test_batch_norm(train: bool, affine: bool, per_element: int) -> None:
    table = harness.count(nn.BatchNorm2d(8, affine=affine).train(train), (4, 8, 5, 5))
    row = table[table["category"] == "norm"].iloc[0]
    assert row["flops"] == per_element * 4 * 8 * 5 * 5
    # training also bumps num_batches_tracked (an int64 add_): 1 FLOP, 8 bytes read and written
    assert list(table["op"]) == (["aten.add_", "aten.native_batch_norm"] if train else ["aten.native_batch_norm"])


def test_layer_group_instance_norm() -> None:
    assert one(nn.LayerNorm(16), (2, 3, 16))["flops"] == 8 * 2 * 3 * 16
    assert one(nn.LayerNorm(16, elementwise_affine=False), (2, 3, 16))["flops"] == 6 * 2 * 3 * 16
    assert one(nn.GroupNorm(4, 8), (2, 8, 3, 3))["flops"] == 8 * 2 * 8 * 9
    inorm = harness.count(nn.InstanceNorm2d(8, affine=True), (2, 8, 3, 3))
    assert int(inorm["flops"].sum()) == 8 * 2 * 8 * 9


def test_pooling() -> None:
    # MaxPool2d(3, 2, 1) on 56 -> 28: one comparison per window element
    assert one(nn.MaxPool2d(3, 2, 1), (1, 64, 56, 56))["flops"] == 64 * 28 * 28 * 9
    assert one(nn.AvgPool2d(2), (1, 3, 8, 8))["flops"] == 3 * 4 * 4 * (4 + 1)
    # AdaptiveAvgPool2d(1): global mean = H*W adds + 1 divide per channel
    assert one(nn.AdaptiveAvgPool2d(1), (2, 16, 7, 7))["flops"] == 2 * 16 * (49 + 1)
    # 7 -> 3 windows overlap: [0,3) [2,5) [4,7) -> 3 elements each
    assert adaptive_window_sum(7, 3) == 9
    assert one(nn.AdaptiveAvgPool2d(3), (1, 2, 7, 7))["flops"] == 2 * 9 * 9 + 2 * 9
    assert one(nn.AdaptiveMaxPool2d(3), (1, 2, 7, 7))["flops"] == 2 * 9 * 9


def test_zero_cost_layers_are_listed() -> None:
    table = harness.count(nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Identity()).eval(), (2, 3, 4))
    assert list(table["module_type"]) == ["Flatten", "Dropout", "Identity"]
    assert table["flops"].sum() == 0 and table["bytes_read"].sum() == 0


def test_dtype_aware_bytes() -> None:
    for dtype, size in (("fp32", 4), ("fp16", 2), ("bf16", 2)):
        row = one(nn.ReLU(), (10, 10), dtype=dtype)
        assert row["dtype"] == dtype
        assert row["bytes_read"] == row["bytes_written"] == 100 * size


def test_intensity_is_flops_over_bytes() -> None:
    row = one(nn.Linear(64, 64, bias=False), (64, 64))
    assert row["intensity"] == pytest.approx(2 * 64**3 / (3 * 64 * 64 * 4))


def test_uncounted_op_is_listed_not_dropped() -> None:
    table = harness.count(lambda x: torch.cumsum(x, 0), (4, 4))
    assert list(table["op"]) == ["aten.cumsum"]
    assert not table["counted"].iloc[0]
    assert table["flops"].isna().iloc[0]
    assert table["bytes_read"].iloc[0] == 64
    assert harness.totals(table)["uncounted_ops"] == 1


def test_functional_calls_and_module_paths() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(self.fc(x)) + x

    table = harness.count(nn.Sequential(Block()), (2, 8))
    ops = table[table["category"] != "view"]
    assert list(ops["op"]) == ["aten.addmm", "aten.relu", "aten.add"]
    assert list(ops["module"]) == ["0.fc", "0", "0"]
    assert list(ops["module_type"]) == ["Linear", "Block", "Block"]


def test_real_inputs_are_not_computed() -> None:
    x = torch.randn(1, 3, 16, 16)
    conv = nn.Conv2d(3, 4, 3)
    before = conv.weight.detach().clone()
    table = harness.count(conv, x)
    assert table.iloc[0]["macs"] == 4 * 14 * 14 * 27
    assert torch.equal(conv.weight, before)
    assert not conv._forward_hooks and not conv._forward_pre_hooks  # hooks removed


def test_meta_model_too_large_for_memory_counts() -> None:
    # 4 x Linear(32768, 32768) is 17 GB in fp32: built on meta it counts without allocating
    with torch.device("meta"):
        model = nn.Sequential(*[nn.Linear(32768, 32768) for _ in range(4)])
    tot = harness.totals(harness.count(model, (8, 32768)))
    assert tot["params"] == 4 * (32768 * 32768 + 32768)
    assert tot["macs"] == 4 * 8 * 32768 * 32768


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_on_meta_counts_the_fused_kernel_as_on_cpu(causal: bool) -> None:
    # a meta-device module calling sdpa: counted on meta tensors (no fake mode), as the CPU dispatches
    # it: the fused kernel, causal pairs halved (on meta torch itself would take the math path)
    class Attend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(16, 16, bias=False, device="meta")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(self.proj(x), x, x, is_causal=causal)

    b, h, s, d = 2, 4, 32, 16
    table = harness.count(Attend(), (b, h, s, d))
    att = table[table["category"] == "attention"]
    assert list(att["op"]) == ["aten._scaled_dot_product_flash_attention_for_cpu"]
    pairs = s * (s + 1) // 2 if causal else s * s
    assert int(att["macs"].iloc[0]) == b * h * pairs * (d + d)
    # the same table as on real CPU parameters (fake tensors): same ops, counts and bytes
    cpu = Attend().to_empty(device="cpu")
    on_cpu = harness.count(cpu, (b, h, s, d))
    cols = ["op", "flops", "macs", "bytes_read", "bytes_written"]
    assert table[cols].equals(on_cpu[cols])


def test_attention_inside_multihead_attention_on_meta_is_the_fused_kernel() -> None:
    # nn.MultiheadAttention without weights calls sdpa from inside F.multi_head_attention_forward
    e, h, s, b = 32, 4, 10, 2

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = nn.MultiheadAttention(e, h, batch_first=True, device="meta")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.mha(x, x, x, need_weights=False)[0]

    table = harness.count(SelfAttention().eval(), (b, s, e))
    ops = list(table["op"])
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in ops and "aten.bmm" not in ops
    att = table[table["category"] == "attention"]
    assert int(att["macs"].sum()) == b * h * s * s * (e // h) * 2
    assert F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention   # restored


def _with_weight(fn, device):  # noqa: ANN001, ANN202
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.empty(1, device=device))      # meta: counted on meta; cpu: fake

        def forward(self, *xs):  # noqa: ANN002, ANN202
            return fn(*xs)
    return M()


def _strided(x):  # noqa: ANN001, ANN202
    return F.scaled_dot_product_attention(x[..., ::2], x[..., ::2], x[..., ::2], is_causal=True)


def _causal_mask(q):  # noqa: ANN001, ANN202
    s = q.shape[-2]
    return F.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(s, s, dtype=torch.bool, device=q.device).tril())


@pytest.mark.parametrize("name, fn, shapes", [
    ("last dim strided", lambda x: _strided(x), [(2, 4, 32, 32)]),
    ("batch broadcast", lambda q, k, v: F.scaled_dot_product_attention(q, k, v), [(2, 4, 32, 16), (1, 4, 32, 16),
                                                                                 (1, 4, 32, 16)]),
    ("bool mask", _causal_mask, [(2, 4, 32, 16)]),
    ("3-D", lambda q: F.scaled_dot_product_attention(q, q, q, is_causal=True), [(4, 32, 16)]),
    ("grouped query", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
     [(1, 8, 32, 16), (1, 2, 32, 16), (1, 2, 32, 16)]),
])
def test_attention_on_meta_takes_the_cpus_backend(name, fn, shapes) -> None:  # noqa: ANN001
    # the CPU falls back to math for a strided last dim and for a batch broadcast; a bool mask is made
    # additive (where) before the fused kernel: the meta count must equal the fake-CPU count, op for op
    # (views aside: torch 2.14 unsqueezes a 3-D input to 4-D around the fused kernel; 2.13 runs math)
    cols = ["op", "flops", "macs", "bytes_read", "bytes_written"]

    def work(table):  # noqa: ANN001, ANN202
        return table[~table["category"].isin(["view", "none"])][cols].reset_index(drop=True)
    meta = harness.count(_with_weight(fn, "meta"), *shapes)
    cpu = harness.count(_with_weight(fn, "cpu"), *shapes)
    assert work(meta).equals(work(cpu)), (name, list(meta["op"]), list(cpu["op"]))


def test_attention_on_meta_under_a_meta_default_device() -> None:
    with torch.device("meta"):
        table = harness.count(_with_weight(lambda q: F.scaled_dot_product_attention(q, q, q, is_causal=True), "meta"),
                              (1, 4, 32, 16))
    att = table[table["category"] == "attention"]
    assert list(att["op"]) == ["aten._scaled_dot_product_flash_attention_for_cpu"]
    assert int(att["macs"].iloc[0]) == 4 * (32 * 33 // 2) * 32        # causal pairs, not 32 * 32
