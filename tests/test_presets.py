"""Each preset against the real peer package, layer by layer and on ResNet-50.

Peers are optional: a test skips when its package is absent (CI installs them all).
torchstat 0.0.7's report needs pandas < 2 (DataFrame.append), so its preset is checked
against torchstat's own per-module functions (compute_madd, compute_flops, compute_memory).
"""

from __future__ import annotations

import contextlib
import copy
import io

import pytest
import torch
from torch import nn

import harness
from harness.layers.zoo import resnet50

LAYERS = {
    "conv": (nn.Conv2d(8, 16, 3, 2, 1), (1, 8, 20, 20)),
    "conv_nobias": (nn.Conv2d(8, 16, 3, 1, 1, bias=False), (2, 8, 10, 12)),
    "grouped": (nn.Conv2d(8, 16, 3, groups=4), (1, 8, 9, 9)),
    "depthwise": (nn.Conv2d(16, 16, 3, padding=1, groups=16), (1, 16, 9, 9)),
    "conv1d": (nn.Conv1d(4, 6, 3), (2, 4, 20)),
    "conv3d": (nn.Conv3d(2, 4, 3), (1, 2, 6, 6, 6)),
    "conv_transpose": (nn.ConvTranspose2d(8, 4, 3, 2, 1, 1), (1, 8, 7, 7)),
    "conv_transpose_grouped": (nn.ConvTranspose2d(8, 4, 4, 2, 1, groups=2), (2, 8, 5, 5)),
    "linear": (nn.Linear(32, 10), (4, 32)),
    "linear_3d": (nn.Linear(32, 10), (4, 7, 32)),
    "bn_eval": (nn.BatchNorm2d(8).eval(), (2, 8, 5, 5)),
    "bn1d": (nn.BatchNorm1d(8).eval(), (4, 8)),
    "layernorm": (nn.LayerNorm(16), (2, 5, 16)),
    "groupnorm": (nn.GroupNorm(2, 8), (2, 8, 4, 4)),
    "instancenorm": (nn.InstanceNorm2d(8, affine=True), (2, 8, 4, 4)),
    "relu": (nn.ReLU(), (2, 8, 4, 4)),
    "relu6": (nn.ReLU6(), (2, 8, 4, 4)),
    "gelu": (nn.GELU(), (2, 8, 4, 4)),
    "silu": (nn.SiLU(), (2, 8, 4, 4)),
    "sigmoid": (nn.Sigmoid(), (2, 8, 4, 4)),
    "tanh": (nn.Tanh(), (2, 8, 4, 4)),
    "hardswish": (nn.Hardswish(), (2, 8, 4, 4)),
    "maxpool": (nn.MaxPool2d(3, 2, 1), (1, 8, 16, 16)),
    "avgpool": (nn.AvgPool2d(2), (1, 8, 16, 16)),
    "adaptive_avg_1": (nn.AdaptiveAvgPool2d(1), (2, 8, 7, 7)),
    "adaptive_avg_3": (nn.AdaptiveAvgPool2d(3), (2, 8, 9, 9)),
    "adaptive_max": (nn.AdaptiveMaxPool2d(2), (2, 8, 8, 8)),
    "softmax": (nn.Softmax(dim=-1), (2, 8, 16)),
    "flatten_dropout": (nn.Sequential(nn.Flatten(), nn.Dropout()).eval(), (2, 8, 4)),
}


def preset(model: nn.Module, shape: tuple[int, ...], name: str) -> harness.totals:
    return harness.totals(harness.count(model, torch.randn(shape), convention=name))


def quiet(fn, *a, **k):  # noqa: ANN001, ANN002, ANN003
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*a, **k)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_thop(name: str) -> None:
    thop = pytest.importorskip("thop")
    model, shape = LAYERS[name]
    macs, _ = quiet(thop.profile, copy.deepcopy(model), (torch.randn(shape),), verbose=False)
    assert preset(model, shape, "thop")["macs"] == int(macs)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_ptflops(name: str) -> None:
    ptflops = pytest.importorskip("ptflops")
    model, shape = LAYERS[name]
    x = torch.randn(shape)
    macs, _ = quiet(ptflops.get_model_complexity_info, copy.deepcopy(model), tuple(shape[1:]),
                    input_constructor=lambda _: x, as_strings=False, print_per_layer_stat=False,
                    backend="pytorch")
    assert preset(model, shape, "ptflops")["macs"] == macs


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_fvcore(name: str) -> None:
    fvcore_nn = pytest.importorskip("fvcore.nn")
    model, shape = LAYERS[name]
    analysis = fvcore_nn.FlopCountAnalysis(copy.deepcopy(model).eval(), torch.randn(shape))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    assert preset(model, shape, "fvcore")["macs"] == quiet(analysis.total)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_torchinfo(name: str) -> None:
    torchinfo = pytest.importorskip("torchinfo")
    model, shape = LAYERS[name]
    stats = quiet(torchinfo.summary, copy.deepcopy(model), input_size=shape, verbose=0)
    assert preset(model, shape, "torchinfo")["macs"] == stats.total_mult_adds


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_flop_counter(name: str) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model, shape = LAYERS[name]
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randn(shape))
    assert preset(model, shape, "flop_counter")["flops"] == fc.get_total_flops()


TORCHSTAT_LAYERS = ["conv", "conv_nobias", "grouped", "depthwise", "conv_transpose", "bn_eval", "relu",
                    "relu6", "maxpool", "avgpool", "softmax", "linear"]


@pytest.mark.parametrize("name", TORCHSTAT_LAYERS)
def test_torchstat_per_module_functions(name: str) -> None:
    pytest.importorskip("torchstat")
    from torchstat.compute_flops import compute_flops
    from torchstat.compute_madd import compute_madd

    model, shape = LAYERS[name]
    x = torch.randn((1, *shape[1:]))  # torchstat.stat always runs batch 1
    with torch.no_grad():
        y = model(x)
    tot = preset(model, x.shape, "torchstat")
    assert tot["flops"] == int(quiet(compute_madd, model, x, y))
    assert tot["macs"] == int(quiet(compute_flops, model, x, y))


def test_torchstat_memory_matches_canonical_bytes_for_seed_conv() -> None:
    pytest.importorskip("torchstat")
    from torchstat.compute_memory import compute_memory

    model = nn.Conv2d(3, 2, 7, 2, 3, bias=False)
    x = torch.randn(1, 3, 500, 500)
    read, write = compute_memory(model, x, model(x))  # elements; its report multiplies by 4 bytes
    row = harness.count(model, x).iloc[0]
    assert (row["bytes_read"], row["bytes_written"]) == (4 * read, 4 * write) == (3_001_176, 500_000)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return resnet50()


def test_resnet50_thop(resnet: nn.Module) -> None:
    thop = pytest.importorskip("thop")
    x = torch.randn(1, 3, 224, 224)
    macs, params = quiet(thop.profile, copy.deepcopy(resnet), (x,), verbose=False)
    tot = harness.totals(harness.count(resnet, x, convention="thop"))
    assert (tot["macs"], tot["params"]) == (int(macs), int(params)) == (4_133_742_592, 25_557_032)


def test_resnet50_ptflops(resnet: nn.Module) -> None:
    ptflops = pytest.importorskip("ptflops")
    macs, _ = quiet(ptflops.get_model_complexity_info, copy.deepcopy(resnet), (3, 224, 224), as_strings=False,
                    print_per_layer_stat=False, backend="pytorch")
    assert harness.totals(harness.count(resnet, (1, 3, 224, 224), convention="ptflops"))["macs"] == macs


def test_resnet50_fvcore(resnet: nn.Module) -> None:
    fvcore_nn = pytest.importorskip("fvcore.nn")
    x = torch.randn(1, 3, 224, 224)
    analysis = fvcore_nn.FlopCountAnalysis(copy.deepcopy(resnet), x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    assert harness.totals(harness.count(resnet, x, convention="fvcore"))["macs"] == quiet(analysis.total)


def test_resnet50_torchinfo(resnet: nn.Module) -> None:
    torchinfo = pytest.importorskip("torchinfo")
    stats = quiet(torchinfo.summary, copy.deepcopy(resnet), input_size=(1, 3, 224, 224), verbose=0)
    tot = harness.totals(harness.count(resnet, (1, 3, 224, 224), convention="torchinfo"))
    assert tot["macs"] == stats.total_mult_adds == 4_089_238_376


def test_preset_disagreements_documented_in_docs() -> None:
    """The figures docs/conventions.md quotes for where tools disagree with their own definitions."""
    # conv-transpose 8->4, k3 s2 p1 op1 on 7x7 -> 14x14: seed 003 counts input positions
    convt, shape = LAYERS["conv_transpose"]
    canonical = preset(convt, shape, "canonical")["macs"]
    assert canonical == 8 * 7 * 7 * 4 * 9
    assert preset(convt, shape, "thop")["macs"] == 4 * 14 * 14 * 8 * 9   # conv formula on the output: 4x
    assert preset(convt, shape, "torchinfo")["macs"] == (8 * 4 * 9 + 4) * 14 * 14
    # N-D linear (4, 7, 32) -> (4, 7, 10): torchinfo ignores the middle dim (7x too few)
    lin, shape = LAYERS["linear_3d"]
    assert preset(lin, shape, "canonical")["macs"] == 4 * 7 * 32 * 10
    assert preset(lin, shape, "torchinfo")["macs"] == 4 * (32 * 10 + 10)
    # ptflops counts an nn.ReLU twice: its module hook (per sample: numel / N) + the patched F.relu
    # (whole batch: numel) -- 2x at batch 1, 1.5x at batch 2
    relu, shape = LAYERS["relu"]
    numel = 2 * 8 * 4 * 4
    assert preset(relu, shape, "ptflops")["macs"] == numel // 2 + numel
    assert preset(relu, (1, 8, 4, 4), "ptflops")["macs"] == 2 * (numel // 2)


def test_resnet50_torchstat_sums_its_own_per_module_functions(resnet: nn.Module) -> None:
    """torchstat.stat hooks every leaf module with compute_madd / compute_flops (batch 1)."""
    pytest.importorskip("torchstat")
    from torchstat.compute_flops import compute_flops
    from torchstat.compute_madd import compute_madd

    model = copy.deepcopy(resnet)
    sums = {"madd": 0, "flops": 0}

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        sums["madd"] += int(compute_madd(m, inp[0], out))
        sums["flops"] += int(compute_flops(m, inp[0], out))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        quiet(model, torch.randn(1, 3, 224, 224))
    for h in handles:
        h.remove()
    tot = harness.totals(harness.count(resnet, (1, 3, 224, 224), convention="torchstat"))
    assert (tot["flops"], tot["macs"]) == (sums["madd"], sums["flops"])
    assert tot["flops"] == 8_222_923_800
