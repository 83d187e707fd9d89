"""The seed articles' worked examples, reproduced to the unit."""

from __future__ import annotations

from torch import nn

import harness
from harness.layers.zoo import resnet50


def test_seed000_conv7x7_stride2_macs_and_torchstat_memory() -> None:
    # Conv2d(3, 2, k=7, s=2, p=3, bias=False) on 3x500x500 -> 2x250x250 (seed 000).
    table = harness.count(nn.Conv2d(3, 2, 7, 2, 3, bias=False), (1, 3, 500, 500))
    row = table.iloc[0]
    assert row["op"] == "aten.convolution"
    assert row["macs"] == (7 * 7 * 3) * (250 * 250 * 2) == 18_375_000
    assert row["flops"] == 2 * 18_375_000
    assert row["params"] == 7 * 7 * 3 * 2 == 294
    # torchstat MemRead = (500*500*3 + 7*7*3*2) * 4 = 3,001,176; MemWrite = 250*250*2*4 = 500,000
    assert row["bytes_read"] == 3_001_176
    assert row["bytes_written"] == 500_000
    assert row["bytes_read"] + row["bytes_written"] == 3_501_176
    # seed 000's MAdd (the 2n-1 convention) is the torchstat preset's flops
    ts = harness.totals(harness.count(nn.Conv2d(3, 2, 7, 2, 3, bias=False), (1, 3, 500, 500),
                                      convention="torchstat"))
    assert ts["flops"] == ((7 * 7 * 3) + (7 * 7 * 3 - 1)) * (250 * 250 * 2) == 36_625_000
    assert ts["macs"] == 18_375_000


def test_seed002_params_of_5x5x16_conv_on_96x96x3() -> None:
    # 5*5*3*16 + 16 = 1,216 (seed 002)
    table = harness.count(nn.Conv2d(3, 16, 5), (1, 3, 96, 96))
    assert harness.totals(table)["params"] == 5 * 5 * 3 * 16 + 16 == 1216


def test_resnet50_params_and_macs() -> None:
    table = harness.count(resnet50(), (1, 3, 224, 224))
    tot = harness.totals(table)
    assert tot["params"] == 25_557_032  # torchinfo's and thop's figure (seed 002)
    # conv + linear MACs: torchinfo "Total mult-adds (G): 4.09" (it adds 54,120 for BN, see presets)
    products = table[table["category"].isin(["conv", "matmul"])]
    assert int(products["macs"].sum()) == 4_089_184_256
    assert round(tot["macs"] / 1e9, 2) == 4.09
    assert tot["uncounted_ops"] == 0
    # every op torch's FlopCounterMode covers agrees exactly (54 = 53 convolutions + the fc addmm)
    assert tot["flop_counter_ops"] == 54
    assert tot["flop_counter_disagreements"] == 0
    assert tot["flop_counter_flops"] == 2 * 4_089_184_256
