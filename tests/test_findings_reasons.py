"""What a finding says is true: each reason is a property of the slow row (both directions tested),
traffic and output differences the size of ShuffleNet V2's G1 effect are named, pairs are of one
layer kind or one family (coincidences across kinds come last and say so), and contended rows
carry no finding."""

from __future__ import annotations

import json

from test_analysis import frame, row

from harness.analysis import derive, findings
from harness.analysis.findings import COINCIDENCE, SAME_FAMILY, SAME_LAYER, reasons


def conv(cin: int, cout: int, k: int, groups: int, t: float, hw: int = 56, case_id: str | None = None,
         **kw) -> dict:
    """A conv2d row with its real counts (fp32): MACs = cout x hw^2 x cin/g x k^2, bytes = input +
    weights + output at 4 bytes each."""
    macs = cout * hw * hw * (cin // groups) * k * k
    read = 4 * (cin * hw * hw + cout * (cin // groups) * k * k)
    written = 4 * cout * hw * hw
    cfg = json.dumps({"in_channels": cin, "out_channels": cout, "kernel_size": [k, k], "groups": groups,
                      "padding": [k // 2, k // 2]})
    return row(layer="conv2d", config=cfg, flops=2 * macs, macs=macs, bytes_read=read, bytes_written=written,
               intensity_flop_per_byte=2 * macs / (read + written), time_median_s=t,
               input_shapes=f"1x{cin}x{hw}x{hw}", case_id=case_id or f"c{cin}-{cout}-{k}-{groups}", **kw)


def test_a_dense_layer_slower_than_a_grouped_one_is_not_blamed_for_groups():
    dense = conv(192, 192, 1, 1, 0.6e-3, hw=28)          # 192*192 = 36,864 MACs per pixel
    grouped = conv(256, 256, 3, 16, 0.4e-3, hw=28)        # 256*16*9 = 36,864
    d = derive(frame(dense, grouped))
    slow, fast = d.iloc[0], d.iloc[1]
    said = " ".join(reasons(slow, fast))
    assert "channel groups" not in said and "grouped/depthwise" not in said      # the fast one is grouped
    # the other direction: a grouped conv slower than a dense one names its groups
    said = " ".join(reasons(fast, slow))
    assert "it has 16 channel groups against 1; each output sums over 16 input channels instead of 192" in said


def test_shufflenet_g1_unequal_widths_are_the_reason():
    """G1 at equal FLOPs on 56x56: 52 -> 312 channels against 128 -> 128 (52 x 312 = 16,224 ~ 128^2 = 16,384).
    Traffic: 4 x (52 + 312) x 3,136 + 4 x 16,224 = 4.63 MB vs 4 x 256 x 3,136 + 4 x 16,384 = 3.28 MB: 1.41x; the
    output 312 / 128 = 2.4x."""
    wide = conv(52, 312, 1, 1, 0.9e-3)
    equal = conv(128, 128, 1, 1, 0.6e-3)
    d = derive(frame(wide, equal))
    assert round(d.iloc[0]["flops"] / d.iloc[1]["flops"], 2) == 0.99         # equal within the 2 % tolerance
    (f,) = findings(d)
    assert "it moves 1.4x the bytes (4.63 MB vs 3.28 MB" in f.text and "it writes 2.4x the output" in f.text
    assert "input and output widths differ (52 -> 312 channels against 128 -> 128)" in f.text
    assert "ShuffleNet V2's guideline G1" in f.text and "same traffic" not in f.text


def test_same_traffic_is_said_only_when_it_is():
    a = conv(64, 64, 3, 1, 0.5e-3, kernels="aten::mkldnn_convolution")
    b = dict(a, time_median_s=0.7e-3, case_id="b")
    d = derive(frame(b, a))
    assert reasons(d.iloc[0], d.iloc[1]) == [
        "same traffic, layout and implementation: the kernel is simply less efficient on this shape"]
    c = dict(b, bytes_read=b["bytes_read"] * 1.3, case_id="c")           # 16 % more traffic: not the same
    d = derive(frame(c, a))
    assert reasons(d.iloc[0], d.iloc[1])[0].startswith("it moves 1.1")


def sdpa_and_linear(t_sdpa: float, t_linear: float) -> list[dict]:
    """Attention and a linear layer of equal FLOPs from two families: a coincidence."""
    common = dict(flops=1_073_741_824, macs=536_870_912, bytes_read=4e6, bytes_written=2e6)
    return [row(layer="sdpa", family="attention", case_id="sdpa", time_median_s=t_sdpa, config="{}", **common),
            row(layer="linear", family="linear", case_id="linear", time_median_s=t_linear, config="{}", **common)]


def test_coincidences_come_after_every_finding_and_say_so():
    rows = sdpa_and_linear(3e-3, 1e-3) + [conv(64, 64, 3, 1, 0.5e-3), conv(512, 512, 3, 64, 2.0e-3)]
    found = findings(derive(frame(*rows)))
    assert [f.kind for f in found] == [SAME_LAYER, COINCIDENCE]       # the 3.0x coincidence after the 4.0x finding
    assert "by coincidence (layers of different kinds)" in found[1].text and "sdpa" in found[1].text
    only = findings(derive(frame(*sdpa_and_linear(3e-3, 1e-3))), top=3)
    assert [f.kind for f in only] == [COINCIDENCE]


def test_a_declared_family_may_pair_two_kinds():
    rows = [dict(r, family="attention-vs-linear") for r in sdpa_and_linear(3e-3, 1e-3)]
    (f,) = findings(derive(frame(*rows)))
    assert f.kind == SAME_FAMILY and "coincidence" not in f.text


def test_contended_rows_carry_no_finding_even_across_processes():
    """Both rows measured in 3 processes, every process of one 2x the other's: a finding across
    processes when the rows are noisy, none when they were contended."""
    def measured(case, medians, stability):
        return conv(64, 64, 3, 1, medians[1], processes=3, process_medians_s=medians, stability=stability,
                    case_id=case)
    fast = [1.0e-3, 1.05e-3, 1.1e-3]
    slow = [2.4e-3, 2.5e-3, 2.6e-3]
    noisy = derive(frame(measured("a", fast, "noisy"), measured("b", slow, "noisy")))
    assert len(findings(noisy)) == 1
    contended = derive(frame(measured("a", fast, "contended"), measured("b", slow, "contended")))
    assert findings(contended) == []
