"""The formula registry: decorator registration, duplicate and type checks, derived conventions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import harness
from harness.analytic.canonical import CANONICAL
from harness.analytic.conventions import Convention
from harness.analytic.registry import Cost, FormulaRegistry

aten = torch.ops.aten


def test_duplicate_and_wrong_key_rejected() -> None:
    reg = FormulaRegistry("t")
    reg.register(aten.relu, "activation")(lambda call: Cost(1))
    with pytest.raises(RuntimeError, match="duplicate"):
        reg.register(aten.relu, "activation")(lambda call: Cost(2))
    with pytest.raises(TypeError, match="OpOverloadPacket"):
        reg.register("aten.relu", "activation")(lambda call: Cost(1))  # type: ignore[arg-type]


def test_user_convention_is_a_merged_copy() -> None:
    mine = CANONICAL.derive("relu-free")
    mine.override(aten.relu)(lambda call: Cost(0))
    convention = Convention("relu-free", "canonical, but ReLU is free", "flops", mine)
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.ReLU())
    ours = harness.totals(harness.count(model, (2, 4), convention=convention))
    base = harness.totals(harness.count(model, (2, 4)))
    assert ours["flops"] == 2 * 2 * 4 * 4
    assert base["flops"] == 2 * 2 * 4 * 4 + 2 * 4  # the global canonical registry is untouched
    assert CANONICAL.lookup(aten.relu).formula is not mine.lookup(aten.relu).formula
