"""Findings confirmed by interleaving: the ABAB timing (fake clock: exact ratios, the lead
alternating, a slow host hitting both), the candidates and their verdicts (hand-made rows and
confirmations), and a real run whose candidates are timed in its worker processes and stored."""

import json

import pandas as pd
import pytest
from test_measure import FakeClock

from harness.analysis.confirmed import INTERLEAVED, candidate_pairs, interleaved_findings, process_ratios
from harness.backends.cpu import CpuTimer
from harness.report.model import build_model
from harness.runner import run_suite
from harness.store import load_runs
from harness.suite import parse_suite
from harness.timing.interleave import interleave


def test_interleave_times_both_alternately_and_a_slow_host_cancels():
    clock = FakeClock()
    order = []
    slow_host = {"on": False}

    def work(name, cost):
        def fn():
            order.append(name)
            clock.advance(cost * (2.0 if slow_host["on"] else 1.0))
            slow_host["on"] = 60 <= len(order) < 100          # the host halves its speed for a while
        return fn
    got = interleave(work("a", 1e-4), work("b", 3e-4), timer=CpuTimer(clock), pairs=10, block_s=1e-3,
                     warmup_s=0.0, seed=3)
    assert got.number_a == 10 and got.number_b == 4            # each block sized to ~1 ms
    # pairs wholly inside or outside the slow spell keep 3x; only the two it starts or ends within move
    assert got.ratio == pytest.approx(3.0) and sum(abs(r - 3.0) > 1e-9 for r in got.ratios) == 2
    assert min(got.a_s) == pytest.approx(1e-4) and max(got.a_s) == pytest.approx(2e-4)   # it did slow
    # the lead alternates: AB BA AB ... from the drawn first (each block: one untimed call, then its calls)
    timed, blocks, i = order[-10 * (11 + 5):], [], 0
    while i < len(timed):
        blocks.append(timed[i])
        i += 11 if timed[i] == "a" else 5
    assert len(blocks) == 20 and sorted(blocks[k] + blocks[k + 1] for k in range(0, 20, 2)) == sorted(
        ["ab", "ba"] * 5)
    firsts = blocks[0::2]
    assert all(x != y for x, y in zip(firsts, firsts[1:])) and got.a_first == (firsts[0] == "a")


def test_the_first_call_after_the_other_layer_s_block_is_not_timed():
    """A call right after the other layer's block costs 5x (its data left the caches); back to back,
    a costs 0.1 ms and b 0.3 ms. Timed with their first call, blocks of 4 and 2 calls would read
    (0.5 + 3 x 0.1) / 4 = 0.2 ms and (1.5 + 0.3) / 2 = 0.9 ms (a ratio of 4.5); with the refill
    untimed, every block reads its hot cost and the ratio is 3."""
    clock = FakeClock()
    last = {"who": None}

    def work(name, cost):
        def fn():
            clock.advance(cost * (5.0 if last["who"] not in (None, name) else 1.0))
            last["who"] = name
        return fn
    got = interleave(work("a", 1e-4), work("b", 3e-4), timer=CpuTimer(clock), pairs=6, block_s=4e-4,
                     warmup_s=0.0, seed=1)
    assert (got.number_a, got.number_b) == (4, 2)
    assert got.a_s == pytest.approx([1e-4] * 6) and got.b_s == pytest.approx([3e-4] * 6)
    assert got.ratios == pytest.approx([3.0] * 6)


def _row(row_id, layer, flops, median, stability="contended", family="f", run="r"):
    return {"run_id": run, "row_id": row_id, "case_id": row_id, "machine_id": "m", "device": "cpu",
            "device_name": "cpu", "device_label": "cpu", "dtype": "fp32", "threads": 2, "mode": "hot",
            "layer": layer, "family": family, "config": json.dumps({"in_channels": 8}), "input_shapes": "1x8",
            "memory_format": "nchw", "flops": flops, "time_median_s": median, "status": "ok",
            "stability": stability, "bytes_read": 100, "bytes_written": 100, "process_medians_s": [median]}


def _confirm(slow, fast, ratios_per_process):
    return pd.DataFrame([{"run_id": "r", "slow_row_id": slow, "fast_row_id": fast, "process": k,
                          "slow_first": bool(k % 2), "slow_s": [r * 1e-3] * 5, "fast_s": [1e-3] * 5,
                          "host_busy": 0.5} for k, r in enumerate(ratios_per_process)])


def test_one_layer_in_several_families_is_one_layer_when_pairs_are_chosen():
    """ShuffleNet V2's 1x1 convolution of 128 channels sits in the G1, G2 and threads sweeps (one
    ``config_id``): noise between its copies (0.8, 1.0, 1.2 ms) picks neither the pair nor its name.
    Against the 1.6 ms one of 256 channels, groups of 4: timed by the copies' median (1.0 ms, 1.6x)
    and named by the lowest case id, so two runs time the same pair. Within G2 the same two layers
    (its own copy of the 128-channel one) are that pair again: timed once, never two findings with two
    ratios. A G2 layer faster than G2's copy (180 channels, groups of 2: 1.1 ms) makes G2's own pair."""
    rows = [dict(_row(cid, "conv2d", 1000, t, family=fam), config_id=cfg) for cid, fam, cfg, t in (
        ("g1-128", "g1", "x", 0.8e-3), ("t-128", "threads", "x", 1.0e-3), ("g2-128", "g2", "x", 1.2e-3),
        ("g2-256", "g2", "y", 1.6e-3))]
    pairs = candidate_pairs(pd.DataFrame(rows))
    assert [(p.slow_case_id, p.fast_case_id) for p in pairs] == [("g2-256", "g1-128")]
    assert [p.ratio for p in pairs] == [pytest.approx(1.6)]
    rows.append(dict(_row("g2-180", "conv2d", 1000, 1.1e-3, family="g2"), config_id="z"))
    pairs = candidate_pairs(pd.DataFrame(rows))
    assert [(p.slow_case_id, p.fast_case_id) for p in pairs] == [("g2-256", "g1-128"), ("g2-256", "g2-180")]
    assert [p.ratio for p in pairs] == [pytest.approx(1.6), pytest.approx(1.6 / 1.1)]


def test_two_layers_timed_twice_through_copies_in_two_families_are_one_finding():
    """A run stored two confirmations of one pair of layers (the 3x3 convolution of 64 channels in two
    families, each copy timed against the same grouped one): one finding, the first timed."""
    rows = pd.DataFrame([dict(_row(cid, "conv2d", 1000, t, family=fam), config_id=cfg) for cid, fam, cfg, t in (
        ("a-g64", "groups", "g64", 2e-3), ("a-c64", "groups", "c64", 1e-3), ("b-c64", "pointwise", "c64", 0.9e-3))])
    both = pd.concat([_confirm("a-g64", "b-c64", [2.1, 2.2, 1.9]), _confirm("a-g64", "a-c64", [1.9, 2.0, 2.1])])
    found, unconfirmed = interleaved_findings(rows, both)
    assert len(found) == 1 and not unconfirmed
    assert "takes 2.10x as long as" in found[0].text and "(2.10, 2.20, 1.90x;" in found[0].text


def test_candidates_include_set_aside_rows_and_verdicts_follow_every_process():
    frame = pd.DataFrame([_row("a", "conv2d", 1000, 2e-3), _row("b", "conv2d", 1005, 1e-3),
                          _row("c", "relu", 50, 1.05e-3), _row("d", "relu", 50, 1e-3)])
    pairs = candidate_pairs(frame)
    assert [(p.slow_row_id, p.fast_row_id) for p in pairs] == [("a", "b")]     # relu pair under 1.1x
    assert pairs[0].ratio == pytest.approx(2.0)
    found, unconfirmed = interleaved_findings(frame, _confirm("a", "b", [1.9, 2.1, 1.2]))
    assert len(found) == 1 and not unconfirmed and found[0].basis == INTERLEAVED
    assert found[0].spread == pytest.approx(1.9) and "(1.90, 2.10, 1.20x;" in found[0].text
    assert "contended vs contended" in found[0].text
    found, unconfirmed = interleaved_findings(frame, _confirm("a", "b", [1.9, 1.02, 2.0]))
    assert not found and len(unconfirmed) == 1
    assert "medians 2.00x apart, but interleaved in 3 process(es) 1.90, 1.02, 2.00x" in unconfirmed[0].text
    assert process_ratios(_confirm("a", "b", [1.5]), pairs[0]) == [pytest.approx(1.5)]


def test_a_run_times_its_candidates_in_each_process_and_the_report_uses_them(tmp_path):
    def conv(c, k, g):        # 32x32x9 = 64x64x9/4 = 96x96 MACs per pixel: equal FLOPs
        return {"layer": "conv2d", "family": "pair", "input": f"1x{c}x16x16",
                "params": {"in_channels": c, "out_channels": c, "kernel_size": k, "padding": k // 2, "groups": g}}
    suite = parse_suite({"name": "confirm", "threads": 1, "budget_s": 0.2, "warmup_s": 0.01,
                         "sweep": [conv(32, 3, 1), conv(64, 3, 4), conv(96, 1, 1)]})
    chosen = []

    def select(run_dir):
        frame = load_runs([run_dir]).frame
        pairs = [(p.slow_case_id, p.fast_case_id) for p in candidate_pairs(frame, min_spread=1.0)]
        chosen.extend(pairs)
        return pairs
    r = run_suite(suite, out=tmp_path, processes=2, progress=False, confirm=select)
    assert chosen and r.confirmed == 2 * len(chosen)
    loaded = load_runs([r.run_dir])
    c = loaded.confirmations
    assert len(c) == r.confirmed and sorted(c["process"].unique()) == [0, 1]
    assert all(len(x) == 20 for x in c["slow_s"]) and not list(r.run_dir.glob("confirm-*.jsonl"))
    # each record keeps the seconds its process spent on the pair: at least its 20 + 20 timed blocks
    assert all(m >= sum(s) + sum(f) for m, s, f in zip(c["measuring_s"], c["slow_s"], c["fast_s"]))
    model = build_model(loaded, with_plots=False)
    assert all(f.basis == INTERLEAVED for f in model.findings)
    assert len(model.findings) + len(model.unconfirmed) == len(chosen)


def test_gradients_of_one_layer_stay_apart_and_a_row_without_config_id_is_itself():
    """grad-input and grad-weight of one convolution share its config_id, not its kernel: a pair (3x);
    rows with no config_id are each their own layer (no crash, the pair kept)."""
    rows = [dict(_row("a", "conv2d", 1000, 1e-3), config_id="c1", grads="input", **{"pass": "backward"}),
            dict(_row("b", "conv2d", 1000, 3e-3), config_id="c1", grads="weight", **{"pass": "backward"})]
    pairs = candidate_pairs(pd.DataFrame(rows))
    assert [(p.slow_case_id, p.fast_case_id, round(p.ratio, 6)) for p in pairs] == [("b", "a", 3.0)]
    bare = pd.DataFrame([dict(r, config_id=None) for r in rows])
    assert [(p.slow_case_id, p.fast_case_id) for p in candidate_pairs(bare)] == [("b", "a")]


def test_a_stored_run_keeps_the_findings_of_the_pairs_it_timed():
    """A run timed the pair its rule chose then (b, the slowest copy of one layer, against z); the
    rule now names that layer by its lowest case id (a): the stored confirmation still makes the
    finding, of the rows it timed, at their medians' ratio."""
    rows = [dict(_row("a", "conv2d", 1000, 3.0e-3, family="g1"), config_id="c1"),
            dict(_row("b", "conv2d", 1000, 3.3e-3, family="g2"), config_id="c1"),
            dict(_row("z", "conv2d", 1000, 1.0e-3, family="g3"), config_id="c2")]
    frame = pd.DataFrame(rows)
    assert [(p.slow_case_id, p.fast_case_id) for p in candidate_pairs(frame)] == [("a", "z")]
    found, unconfirmed = interleaved_findings(frame, _confirm("b", "z", [3.1, 3.2, 3.3]))
    assert not unconfirmed and len(found) == 1 and found[0].spread == pytest.approx(3.2)
    assert "medians 3.3 ms vs 1 ms" in found[0].text
