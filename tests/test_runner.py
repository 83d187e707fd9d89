"""The runner with a fake timer: rows for every case (failures and skips included), resume after
SIGKILL, shards that merge into the uninterrupted table; the store's atomic files."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import SpecError
from harness.runner import parse_shard, run_suite, work_items
from harness.store import load_results, read_journal, read_metadata
from harness.suite import parse_suite
from harness.timing import Measurement

ROOT = Path(__file__).resolve().parent.parent

SUITE = {
    "name": "tiny", "budget_s": 0.1,
    "sweep": [
        {"family": "relu", "layer": "relu", "input": "{b}x{c}", "axes": {"b": [1, 2, 4], "c": [8, 16]}},
        {"family": "conv", "layer": "conv2d", "input": "1x{in}x6x6", "params": {"out": 4, "k": 3},
         "axes": {"in": [4, 6], "g": [1, 4]}},                 # g=4 does not divide in=6: skipped
    ],
}


def fake_measure(median=1e-3, fail_on=None, delay=0.0):
    def m(fn, *, inputs, **kw):
        if fail_on is not None and fail_on(inputs):
            raise RuntimeError("injected failure")
        fn(*inputs[0])                                          # the layer really runs once
        time.sleep(delay)
        return Measurement(device="cpu", timer="fake", mode="hot", samples_s=(median,) * 10, number=1,
                           warmup_calls=0, warmup_s=0.0, estimate_s=median, sampling_s=0.01, threads=1,
                           gc_paused=True, rotation=len(inputs), stop_reason="converged", target_rel_ci=0.01)
    return m


def test_rows_for_every_case_including_failures(tmp_path):
    s = parse_suite(SUITE, "tiny.toml")
    # fail every relu on a 4-row batch: its row records the error, the sweep goes on
    r = run_suite(s, out=tmp_path, measure_fn=fake_measure(fail_on=lambda inputs: inputs[0][0].shape[0] == 4),
                  progress=False)
    df = load_results(r.run_dir)
    assert len(df) == s.count() == 10
    assert r.statuses == {"ok": 7, "error": 2, "skipped": 1}
    err = df[df.status == "error"]
    assert set(err["input_shapes"]) == {"4x8", "4x16"} and err["error"].str.contains("injected failure").all()
    skip = df[df.status == "skipped"].iloc[0]
    assert "groups=4" in skip["error"] and "in_channels=6" in skip["error"]
    ok = df[df.status == "ok"]
    relu = ok[(ok.layer == "relu") & (ok.input_shapes == "2x16")].iloc[0]
    assert relu["flops"] == 32 and relu["bytes_read"] == 32 * 4 and relu["bytes_written"] == 32 * 4
    axes = ok["axes"].map(json.loads)
    conv = ok[(ok.layer == "conv2d") & (axes.str["in"] == 4) & (axes.str["g"] == 1)].iloc[0]
    # 4 out channels x 4x4 outputs x (4 in x 3x3) = 2,304 MACs; FlopCounterMode: 2 x 2,304
    assert conv["macs"] == 2304 and conv["flop_counter_flops"] == 4608 and conv["flop_counter_agrees"]
    assert conv["time_median_s"] == 1e-3 and len(conv["samples_s"]) == 10
    assert json.loads(conv["config"])["groups"] == 1 and json.loads(conv["config"])["in_channels"] == 4
    assert conv["params"] == 4 * 4 * 9 + 4                              # weights + bias
    assert {"run_id", "suite", "git_commit", "torch_version", "device_name", "seed", "machine_id"} <= set(df)
    assert (df["row_id"] == df["machine_id"] + ":cpu:" + df["case_id"]).all()
    meta = read_metadata(r.parquet)
    assert meta.suite == "tiny" and meta.run_id == r.run_id and meta.finished is not None
    assert meta.machine_id == r.machine_id and meta.machine["cpu"]["logical_cpus"] >= 1
    assert not list(r.run_dir.glob("rows-*.jsonl"))                     # journal folded into Parquet


def test_cuda_without_device_is_a_clear_error(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SpecError, match="--device='cuda'.*torch sees none"):
        run_suite(parse_suite(SUITE), device="cuda", out=tmp_path)


def test_shards_partition_and_merge(tmp_path):
    s = parse_suite(SUITE, "tiny.toml")
    whole = {c.case_id for c in work_items(s, None, (1, 1))}
    parts = [{c.case_id for c in work_items(s, None, (k, 3))} for k in (1, 2, 3)]
    assert set.union(*parts) == whole and sum(map(len, parts)) == len(whole)
    for k in (1, 2, 3):
        run_suite(s, out=tmp_path, shard=(k, 3), measure_fn=fake_measure(), progress=False, run_id="tiny-cpu-x")
    merged = load_results(tmp_path / "tiny-cpu-x")
    assert len(merged) == 10 and merged["row_id"].is_unique
    assert sorted(p.name for p in (tmp_path / "tiny-cpu-x").glob("*.parquet")) == \
        ["part-1of3.parquet", "part-2of3.parquet", "part-3of3.parquet"]
    with pytest.raises(SpecError, match="--shard"):
        parse_shard("4/3")


def test_resume_after_sigkill(tmp_path):
    """A subprocess is killed with SIGKILL mid-sweep; --resume measures only what is missing."""
    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(json_to_toml(SUITE))
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_runner import fake_measure
        from harness.suite import load_suite
        from harness.runner import run_suite
        run_suite(load_suite({str(suite_file)!r}), out={str(tmp_path / 'res')!r},
                  measure_fn=fake_measure(delay=0.3), progress=False, run_id="tiny-cpu-killed")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    journal = tmp_path / "res" / "tiny-cpu-killed" / "rows-1of1.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and len(read_journal(journal)) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_journal(journal)
    assert 3 <= len(before) < 10, "the kill should land mid-sweep"
    with open(journal, "a") as f:
        f.write('{"row_id": "torn')                 # a write cut short by the kill
    partial = load_results(tmp_path / "res")
    assert len(partial) == len(before)              # readable, nothing lost, torn line ignored
    from harness.suite import load_suite
    r = run_suite(load_suite(suite_file), out=tmp_path / "res", resume=True, measure_fn=fake_measure(),
                  progress=False)
    assert r.run_id == "tiny-cpu-killed" and r.already_done == len(before)
    assert sum(r.statuses.values()) == 10 - len(before)
    final = load_results(tmp_path / "res")
    clean = run_suite(load_suite(suite_file), out=tmp_path / "clean", measure_fn=fake_measure(), progress=False)
    assert len(final) == len(load_results(clean.run_dir)) == 10
    assert final["row_id"].is_unique and set(final["row_id"]) == set(load_results(clean.run_dir)["row_id"])


def test_load_results_across_runs_and_export(tmp_path, capsys):
    s = parse_suite(SUITE, "tiny.toml")
    a = run_suite(s, out=tmp_path, measure_fn=fake_measure(1e-3), progress=False, run_id="tiny-cpu-a")
    b = run_suite(s, out=tmp_path, measure_fn=fake_measure(2e-3), progress=False, run_id="tiny-cpu-b")
    both = load_results(str(tmp_path / "tiny-cpu-*"))
    assert len(both) == 20 and set(both["run_id"]) == {a.run_id, b.run_id}
    assert both.groupby("run_id")["time_median_s"].max().to_dict() == {"tiny-cpu-a": 1e-3, "tiny-cpu-b": 2e-3}
    from harness.cli import main
    assert main(["export", str(tmp_path / "tiny-cpu-a"), "--csv", str(tmp_path / "a.csv")]) == 0
    csv = pd.read_csv(tmp_path / "a.csv")
    assert len(csv) == 10 and "samples_s" not in csv and "time_median_s" in csv


def json_to_toml(d):
    """Enough TOML for SUITE (flat values, inline tables, arrays of tables)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return json.dumps(v)
    lines = [f"{k} = {val(v)}" for k, v in d.items() if k != "sweep"]
    for sw in d["sweep"]:
        lines.append("[[sweep]]")
        lines += [f"{k} = {val(v)}" for k, v in sw.items()]
    return "\n".join(lines) + "\n"


def test_ctrl_c_stores_what_is_done(tmp_path):
    calls = {"n": 0}
    inner = fake_measure()

    def interrupted(fn, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return inner(fn, **kw)
    s = parse_suite(SUITE, "tiny.toml")
    r = run_suite(s, out=tmp_path, measure_fn=interrupted, progress=False)
    assert r.interrupted and r.statuses == {"ok": 3}
    assert len(load_results(r.parquet)) == 3 and read_metadata(r.parquet).interrupted is True
    again = run_suite(s, out=tmp_path, resume=True, measure_fn=fake_measure(), progress=False)
    assert again.run_id == r.run_id and len(load_results(again.parquet)) == 10


def test_cli_run_exit_codes(tmp_path, capsys):
    from harness.cli import main
    assert main(["run", "no-such-suite", "--out", str(tmp_path)]) == 2
    assert "built-in suites" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('[[sweep]]\nlayer = "conv2d"\naxes = { kernal = [3] }\n')
    assert main(["run", str(bad), "--out", str(tmp_path)]) == 2
    assert "sweep[0].axes.kernal" in capsys.readouterr().err
    good = tmp_path / "tiny.toml"
    good.write_text(json_to_toml(SUITE))
    assert main(["run", str(good), "--out", str(tmp_path), "--shard", "0/2"]) == 2
    assert "--shard='0/2'" in capsys.readouterr().err


def test_timing_mode_reaches_the_timer(tmp_path):
    seen = []
    inner = fake_measure()

    def spy(fn, **kw):
        seen.append(kw["mode"])
        return inner(fn, **kw)
    s = parse_suite(dict(SUITE, mode="graph"), "tiny.toml")
    assert s.mode == "graph"
    run_suite(s, out=tmp_path, measure_fn=spy, progress=False)
    assert set(seen) == {"hot"}                     # CPU timing is always hot; graph/cold/auto are CUDA modes
    assert parse_suite(SUITE).mode == "auto"
    with pytest.raises(SpecError, match="--mode"):
        run_suite(s, out=tmp_path, mode="warm")
    from harness.suite import SuiteError
    with pytest.raises(SuiteError, match="mode"):
        parse_suite(dict(SUITE, mode="warm"))


# --- the backward pass, end to end ---------------------------------------------------------------------------

TRAIN = {"name": "train", "budget_s": 0.05, "warmup_s": 0.01, "min_reps": 3, "threads": 1, "sweep": [
    {"family": "conv", "layer": "conv2d", "input": "2x8x12x12", "params": {"in": 8, "out": 8, "k": 3, "p": 1},
     "passes": ["forward", "backward", "forward+backward"]},
    {"family": "conv", "layer": "conv2d", "input": "2x8x12x12",
     "params": {"in": 8, "out": 8, "k": 3, "p": 1, "g": 8, "bias": False}, "passes": ["backward"], "grads": ["weight"]},
    {"family": "attention", "layer": "sdpa", "params": {"heads": 2, "seq": 32, "d": 16}, "passes": ["backward"]},
]}


def test_a_real_backward_run_on_cpu_stores_the_backward_counts_and_times(tmp_path):
    import torch

    from harness.analytic.count import count_totals
    from harness.layers.modules import build_module
    s = parse_suite(TRAIN, "train.toml")
    r = run_suite(s, out=tmp_path, calibrate="never", progress=False)
    df = load_results(r.run_dir)
    assert len(df) == s.count() == 5 and (df.status == "ok").all() and (df.time_median_s > 0).all()
    assert list(df["pass"]) == ["forward", "backward", "forward+backward", "backward", "backward"]
    assert df["grads"].tolist()[1:] == ["input,weight", "input,weight", "weight", "input"]
    assert pd.isna(df["grads"].iloc[0])
    # counts: those of the pass, as count_totals gives them for the row's gradients
    for case, (_, row) in zip(s.cases(), df.iterrows()):
        t = count_totals(build_module(case.spec, torch.float32, "meta"), *case.inputs, passes=case.pass_,
                         grads=case.grads)
        assert (row.flops, row.bytes_read, row.bytes_written, row.aten_ops) == \
            (t["flops"], t["bytes_read"], t["bytes_written"], t["ops"]), case.pass_
    # and by hand: F = 2*8*12*12 * 8*9 = 165,888 MACs; the bias gradient sums 2*8*12*12 = 2,304 elements
    fwd, bwd, both, dw, attn = (df.iloc[i] for i in range(5))
    assert fwd.flops == 2 * 165_888 and bwd.flops == 4 * 165_888 + 2_304 and both.flops == fwd.flops + bwd.flops
    assert dw.flops == 2 * (2 * 8 * 12 * 12 * 1 * 9)             # depthwise grad-weight: 2F, F = 20,736
    # torch's flop counter: right on the forward; no bias gradient, groups x grad-weight, no CPU fused backward
    assert fwd.flop_counter_agrees and not bwd.flop_counter_agrees and not dw.flop_counter_agrees
    assert not attn.flop_counter_agrees and attn.flop_counter_flops == 0
    assert "fused kernel _scaled_dot_product_flash_attention_for_cpu_backward" in attn.timing_notes
    assert "2.5x the forward" in attn.timing_notes
    # what ran is the backward's implementation; peak memory counted: saved input + the gradients asked for
    assert "convolution_backward" in bwd.kernels and "mkldnn_convolution" not in bwd.kernels
    x_bytes, params_bytes = 2 * 8 * 12 * 12 * 4, (8 * 8 * 9 + 8) * 4
    assert bwd.peak_memory_bytes == x_bytes + x_bytes + params_bytes and bwd.peak_memory_source == "analytic"
    assert dw.peak_memory_bytes == x_bytes + 8 * 1 * 9 * 4                 # saved input + dW (no bias)
    assert pd.isna(fwd.peak_memory_bytes) and pd.isna(fwd.peak_memory_source)


def test_cli_pass_replaces_the_suites_passes(tmp_path, capsys):
    from harness.cli import main
    good = tmp_path / "tiny.toml"
    good.write_text('name = "pp"\nbudget_s = 0.02\nwarmup_s = 0.0\nmin_reps = 3\nprocesses = 1\n[[sweep]]\n'
                    'layer = "linear"\ninput = "4x8"\nparams = { in = 8, out = 4 }\n')
    assert main(["run", str(good), "--out", str(tmp_path), "--pass", "forward,backward", "--no-report",
                 "--calibrate", "never", "--quiet"]) == 0
    df = load_results(next(tmp_path.glob("pp-cpu-*")))
    assert list(df["pass"]) == ["forward", "backward"] and (df.status == "ok").all()
    assert main(["run", str(good), "--out", str(tmp_path), "--pass", "backwards"]) == 2
    assert "--pass='backwards' is invalid: expected one of forward, backward, forward+backward" in \
        capsys.readouterr().err


def test_a_row_names_a_layout_only_where_its_inputs_are_images():
    """conv2d and relu on 4-d images store nchw / channels_last; sdpa's 4-d batch x heads x tokens x
    features, and linear and layernorm over tokens, store ``contiguous``."""
    from harness.runner.context import NO_LAYOUT, stored_layout
    from harness.suite import parse_suite
    suite = parse_suite({"name": "layouts", "sweep": [
        {"layer": "conv2d", "input": "1x8x8x8", "params": {"in": 8, "out": 8, "k": 3},
         "memory_format": ["nchw", "channels_last"]},
        {"layer": "relu", "input": "1x8x8x8"},
        {"layer": "sdpa", "params": {"batch": 1, "heads": 2, "seq": 16, "head_dim": 8}},
        {"layer": "linear", "input": "4x16", "params": {"in": 16, "out": 8}},
        {"layer": "layernorm", "input": "2x4x{c}", "params": {"c": 16}}]})
    got = [(c.layer, stored_layout(c)) for c in suite.cases()]
    assert got == [("conv2d", "nchw"), ("conv2d", "channels_last"), ("relu", "nchw"), ("sdpa", NO_LAYOUT),
                   ("linear", NO_LAYOUT), ("layernorm", NO_LAYOUT)]
