"""Independent cross-check: canonical FLOPs equal torch.utils.flop_counter's on every op it covers."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import harness
from harness.layers.modules import build_case
from harness.layers.spec import parse_layer


def flop_counter_total(model: nn.Module, shapes: list[tuple[int, ...]]) -> int:
    """FlopCounterMode run for real on meta tensors (nothing computed)."""
    model = model.to("meta")
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(*[torch.empty(s, device="meta") for s in shapes])
    return fc.get_total_flops()


def check(spec_kind: str, params: dict, input_shape: tuple[int, ...] | None = None) -> None:
    """The strategies draw valid configurations only: a SpecError here fails the test."""
    spec = parse_layer(spec_kind, params)
    model, shapes, _ = build_case(spec, [input_shape] if input_shape else None)
    table = harness.count(model, *shapes)
    covered = table[table["flop_counter_flops"].notna()]
    assert table["counted"].all(), table[["op", "counted"]]
    # (an einsum with k=1 is an outer product, aten.mul, which FlopCounterMode does not cover)
    assert covered["flop_counter_agrees"].all(), covered[["op", "flops", "flop_counter_flops"]]
    assert int(covered["flops"].sum()) == flop_counter_total(model, shapes)


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def conv_cases(draw: st.DrawFn) -> tuple[str, dict, tuple[int, ...]]:
    """Valid convolutions only: the input is at least the dilated kernel minus the padding (conv), or
    gives a positive output size with output_padding < max(stride, dilation) (conv-transpose)."""
    dims, groups = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    cin, cout = draw(st.integers(1, 4)) * groups, draw(st.integers(1, 4)) * groups
    k, s, p, d = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
    transposed = draw(st.booleans())
    eff = d * (k - 1) + 1
    params = dict(in_channels=cin, out_channels=cout, kernel_size=k, stride=s, padding=p, dilation=d, groups=groups,
                  bias=draw(st.booleans()))
    if transposed:
        op = draw(st.integers(0, max(s, d) - 1))
        params["output_padding"] = op
        # output (size - 1) * s - 2p + eff + op >= 1
        least = max(1, 1 + -(-(1 + 2 * p - eff - op) // s))
    else:
        least = max(1, eff - 2 * p)
    size = draw(st.integers(least, least + 8))
    kind = f"conv_transpose{dims}d" if transposed else f"conv{dims}d"
    return kind, params, (draw(st.integers(1, 2)), cin) + (size,) * dims


@SETTINGS
@given(case=conv_cases())
def test_conv_random(case: tuple[str, dict, tuple[int, ...]]) -> None:
    check(*case)


@SETTINGS
@given(lead=st.lists(st.integers(1, 5), min_size=1, max_size=3), fin=st.integers(1, 64),
       fout=st.integers(1, 64), bias=st.booleans())
def test_linear_random(lead: list[int], fin: int, fout: int, bias: bool) -> None:
    check("linear", dict(in_features=fin, out_features=fout, bias=bias), (*lead, fin))


@SETTINGS
@given(kind=st.sampled_from(["matmul", "bmm", "einsum", "mm"]), m=st.integers(1, 40), n=st.integers(1, 40),
       k=st.integers(1, 40), batch=st.integers(1, 4))
def test_matmul_random(kind: str, m: int, n: int, k: int, batch: int) -> None:
    check(kind, dict(m=m, n=n, k=k, batch=batch))


@SETTINGS
@given(e_h=st.integers(1, 8), heads=st.integers(1, 4), seq=st.integers(1, 12), batch=st.integers(1, 2),
       bias=st.booleans())
def test_multihead_attention_random(e_h: int, heads: int, seq: int, batch: int, bias: bool) -> None:
    check("mha", dict(embed_dim=e_h * heads, heads=heads, seq=seq, batch=batch, bias=bias))


def test_resnet50_table_matches_flop_counter_mode() -> None:
    from harness.layers.zoo import resnet50

    model = resnet50()
    table = harness.count(model, (1, 3, 224, 224))
    assert int(table["flop_counter_flops"].sum()) == flop_counter_total(model, [(1, 3, 224, 224)])
