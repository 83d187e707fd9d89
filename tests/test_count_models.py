"""``layerbench count`` on any model (torchvision, timm, ``module:callable``), the per-module
roll-up (``--by-module``), and where module-level presets put a module's cost."""

from __future__ import annotations

import pytest
from torch import nn

import harness


@pytest.mark.parametrize("convention", ["thop", "ptflops", "torchinfo", "torchstat"])
def test_a_linear_layers_cost_lands_on_its_addmm(convention: str) -> None:
    """Module-level presets price nn.Linear as a module; the MACs go on the op that computes them
    (``addmm``), not on the ``t`` view of the weight that the module dispatches first."""
    table = harness.count(nn.Linear(32, 10), (4, 32), convention=convention)
    assert list(table["op"]) == ["aten.t", "aten.addmm"]
    t, addmm = table.iloc[0], table.iloc[1]
    assert (t["flops"], t["macs"]) == (0, 0)
    assert addmm["macs"] == harness.totals(table)["macs"] > 0
    if convention == "thop":
        assert addmm["macs"] == 4 * 10 * 32          # thop: in_features x output numel
        assert addmm["flops"] == 2 * 4 * 10 * 32


def test_thop_resnet50_fc_on_addmm_totals_unchanged() -> None:
    from harness.layers.zoo import resnet50

    table = harness.count(resnet50(device="meta"), (1, 3, 224, 224), convention="thop")
    fc = table[table["module"] == "fc"].set_index("op")
    assert fc.loc["aten.t", "macs"] == 0 and fc.loc["aten.addmm", "macs"] == 2048 * 1000
    # thop.profile's own figure for ResNet-50 (tests/test_presets.py checks it against the package)
    assert harness.totals(table)["macs"] == 4_133_742_592


def test_a_module_that_dispatches_views_first_lands_on_its_largest_op() -> None:
    """A 3-D input to nn.Linear dispatches view, t, addmm, view: the addmm carries the cost."""
    table = harness.count(nn.Linear(32, 10), (4, 7, 32), convention="thop")
    assert list(table["op"]) == ["aten.view", "aten.t", "aten.addmm", "aten.view"]
    assert list(table["macs"]) == [0, 0, 4 * 7 * 10 * 32, 0]


def test_a_padded_conv_lands_on_the_convolution_not_the_pad() -> None:
    """padding_mode='reflect' dispatches the pad first: the conv's cost goes on the convolution."""
    conv = nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
    table = harness.count(conv, (1, 3, 8, 8), convention="thop")
    assert list(table["op"]) == ["aten.reflection_pad2d", "aten.convolution"]
    assert list(table["macs"]) == [0, 8 * 8 * 8 * 3 * 9]        # out numel x Cin x k*k = 13,824
