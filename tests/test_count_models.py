"""``layerbench count`` on any model (torchvision, timm, ``module:callable``), the per-module
roll-up (``--by-module``), and where module-level presets put a module's cost."""

from __future__ import annotations

import pytest
from torch import nn

import harness
from harness.analytic.by_module import by_module
from harness.errors import SpecError

SUMMED = ["flops", "macs", "params", "bytes_read", "bytes_written"]


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



# --- the per-module roll-up ------------------------------------------------------------------------

@pytest.mark.parametrize("convention", ["canonical", "thop"])
def test_by_module_totals_equal_totals_on_resnet50(convention: str) -> None:
    from harness.layers.zoo import resnet50

    model = resnet50(device="meta")
    table = harness.count(model, (1, 3, 224, 224), convention=convention)
    tot = harness.totals(table)
    types = {name: type(m).__name__ for name, m in model.named_modules()}
    for depth in (None, 0, 1, 2, 3):
        frame = by_module(table, depth, types)
        root = frame.iloc[0]
        assert root["module"] == "" and root["module_type"] == "ResNet"
        for col in SUMMED + ["ops", "uncounted_ops"]:
            assert root[col] == tot[col], (depth, col)
        assert frame["depth"].max() == (4 if depth is None else depth)   # layer1.0.downsample.0
        if depth:
            children = frame[frame["depth"] == 1]
            assert children["macs"].sum() == tot["macs"]     # the root's own op is a view (flatten)
            assert list(children["module"]) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                                "layer4", "avgpool", "fc"]
    if convention == "thop":    # thop has no formula for the residual adds: uncounted, each in its block
        assert tot["uncounted_ops"] == 16
        assert by_module(table, 2, types).set_index("module").loc["layer1.0", "uncounted_ops"] == 1


def test_by_module_lists_each_module_under_its_parent() -> None:
    """Modules called out of order (a.0, b, a.1) still list a's children under a."""
    class Interleaved(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.ReLU(), nn.Tanh())
            self.b = nn.Sigmoid()

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.a[1](self.b(self.a[0](x)))

    frame = by_module(harness.count(Interleaved(), (2, 4)))
    assert list(frame["module"]) == ["", "a", "a.0", "a.1", "b"]
    assert list(frame["flops"]) == [8 + 8 + 32, 8 + 8, 8, 8, 32]     # relu 1, tanh 1, sigmoid 4 per element
    # without module_types, a module that ran no op of its own has no type
    assert list(frame["module_type"]) == ["", "", "ReLU", "Tanh", "Sigmoid"]
    with pytest.raises(SpecError, match="depth=-1 is invalid"):
        by_module(harness.count(Interleaved(), (2, 4)), -1)

