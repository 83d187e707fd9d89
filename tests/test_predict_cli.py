"""``layerbench fit``, ``predict`` and ``residuals`` end to end: a layer never measured predicted without
a GPU, a model fitted from stored runs and used, a transfer to another machine's stored ceilings,
one-line errors (exit 2), the report's predicted-vs-measured section and the end of a run."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys

import pytest
import torch

from harness.cli import main
from harness.runner import run_suite
from harness.suite import load_suite, parse_suite
from harness.timing import Measurement

# 16 conv2d cases: a fake timer gives each a time from a law of its size (the layer really runs once)
SUITE = {"name": "lawtest", "budget_s": 0.01, "sweep": [
    {"family": "conv", "layer": "conv2d", "input": "1x{c}x{size}x{size}", "params": {"k": 3, "p": 1},
     "axes": {"c": [4, 8, 16, 32], "size": [6, 10, 14, 20]}, "derive": {"in": "c", "out": "c"}}]}


def lawful(fn, *, inputs, **kw):
    fn(*inputs[0])
    _, c, size, _ = inputs[0][0].shape
    median = 20e-6 + 2 * c * c * 9 * size * size / 5e9
    return Measurement(device="cpu", timer="fake", mode="hot", samples_s=(median,) * 10, number=1, warmup_calls=0,
                       warmup_s=0.0, estimate_s=median, sampling_s=0.01, threads=torch.get_num_threads(),
                       gc_paused=True, rotation=1, stop_reason="converged", target_rel_ci=0.01)


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run_suite(parse_suite(SUITE, "lawtest.toml"), out=out, measure_fn=lawful, progress=False,
                     calibrate="never", profile=True).run_dir


@pytest.fixture()
def models(tmp_path, monkeypatch):
    store = tmp_path / "models"
    monkeypatch.setenv("LAYERBENCH_MODELS", str(store))
    monkeypatch.setenv("LAYERBENCH_CEILINGS", str(tmp_path / "ceilings"))     # what fit calibrates stays here
    return store


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_predict_a_layer_never_measured_without_a_gpu(capsys, models):
    assert not torch.cuda.is_available() or True          # nothing below needs one
    assert main(["predict", "conv2d", "in=7", "out=5", "k=3", "s=2", "--input", "3x7x13x13", "--format", "json"]) == 0
    (got,) = json.loads(capsys.readouterr().out)
    assert got["predicted_s"] > 0 and got["basis"] == "roofline" and got["status"] == "predicted"
    assert got["predicted_bound"] in ("compute", "launch", "L1", "L2", "L3", "DRAM")
    assert "no efficiency model" in got["basis_detail"]
    # the same id a suite of that layer stores (its family: the layer kind)
    suite = parse_suite({"name": "one", "sweep": [{"layer": "conv2d", "input": "3x7x13x13",
                                                   "params": {"in": 7, "out": 5, "k": 3, "s": 2}}]})
    assert got["case_id"] == next(iter(suite.cases())).case_id
    assert main(["predict", "sdpa", "heads=2", "seq=64", "head_dim=32", "--dtype", "fp32,bf16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("predict on ") and "basis: roofline only" in out
    assert out.count("sdpa d=32 heads=2 seq=64") == 2 and "sdpa: sdpa" not in out     # its own family: named once


def test_a_dtype_without_a_measured_ceiling_says_what_its_roof_is(capsys, models):
    """No ceilings stored (this test's store is empty): every dtype's compute roof is the theoretical
    peak, and the basis says so; a dtype the CPU has no unit for says that its kernels may run far
    below it (a CPU without fp16 units ran a 3x3 convolution 60x slower in fp16 than in fp32)."""
    assert main(["predict", "conv2d", "in=8", "out=8", "k=3", "--input", "1x8x8x8", "--dtype", "fp32,fp16",
                 "--format", "json"]) == 0
    got = {r["dtype"]: r for r in json.loads(capsys.readouterr().out)}
    for d in ("fp32", "fp16"):
        assert f"{d}: no measured GEMM ceiling, the compute roof is the theoretical peak" in got[d]["basis_detail"]
        assert f"(`layerbench calibrate --dtype {d}` measures one)" in got[d]["basis_detail"]
    from harness.backends import resolve_device
    from harness.runner.context import resolve_peaks
    native = resolve_peaks(resolve_device("cpu"), ["fp16"], None, None)["fp16"].peak_native
    assert ("fp16 has no native unit here" in got["fp16"]["basis_detail"]) == (native is False)
    assert "no native unit" not in got["fp32"]["basis_detail"]


def test_an_invalid_case_of_a_suite_predicts_nothing(capsys, models, tmp_path):
    suite = tmp_path / "bad.toml"
    suite.write_text('name = "bad"\n[[sweep]]\nlayer = "conv2d"\ninput = "1x8x8x8"\n'
                     'params = { in = 8, out = -8, k = 3 }\n')
    assert main(["predict", str(suite), "--format", "json"]) == 0
    (got,) = json.loads(capsys.readouterr().out)
    assert got["status"] == "skipped" and "out_channels=-8 is invalid" in got["error"]
    assert got["predicted_s"] is None and got["predicted_roofline_s"] is None and got["predicted_bound"] is None


def test_predict_a_suite_gives_its_case_ids(capsys, models):
    assert main(["predict", "quick", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("case_id,family,layer") and len(lines) == 1 + load_suite("quick").count()
    ids = {line.split(",")[0] for line in lines[1:]}
    assert ids == {c.case_id for c in load_suite("quick").cases()}


def test_predict_stores_the_layout_a_run_stores(capsys, models):
    """A linear layer or an attention has no image layout: a run stores ``contiguous`` for it, and so
    must its prediction, whose layout is a feature of the model and part of its implementation key."""
    from harness.runner.context import stored_layout
    assert main(["predict", "linear", "in=64", "out=32", "--input", "8x64", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["memory_format"] == "contiguous"
    assert main(["predict", "quick", "--format", "json"]) == 0
    got = {g["case_id"]: g["memory_format"] for g in json.loads(capsys.readouterr().out)}
    want = {c.case_id: stored_layout(c) for c in load_suite("quick").cases()}
    assert got == want and {"contiguous", "nchw", "channels_last"} <= set(want.values())


def test_fit_from_runs_then_predict_and_residuals_use_the_model(stored_run, capsys, models, tmp_path):
    assert main(["fit", str(stored_run)]) == 0
    out = capsys.readouterr().out
    # rows set aside as not stable (a busy host: contended) are left out of training while most remain
    assert "model: " in out and re.search(r"fp32 forward: 1\d rows, 1\d layers", out) and f"stored: {models}" in out
    (path,) = models.glob("*.json")
    # the rows left out are said, by verdict (three made noisy here)
    from harness.cli.predict import _fit_text
    from harness.predict.model import fit
    from harness.store import load_runs
    rows = load_runs([stored_run]).frame.assign(stability="stable")
    rows.loc[rows.index[:3], "stability"] = "noisy"
    assert "  left out: 3 of 16 measured rows (3 noisy); the model learns from the others" in _fit_text(
        fit(rows), path, rows)
    few = rows.iloc[:10]                        # 7 stable rows are under 8: the model keeps all ten, and says none
    assert "left out" not in _fit_text(fit(rows), path, few)
    assert main(["predict", "conv2d", "in=12", "out=12", "k=3", "p=1", "--input", "1x12x9x9", "--format", "json"]) == 0
    (got,) = json.loads(capsys.readouterr().out)
    assert got["basis"] == "model" and re.search(r"fitted on 1\d rows", got["basis_detail"])
    assert got["predicted_low_s"] <= got["predicted_s"] <= got["predicted_high_s"]
    law = 20e-6 + 2 * 12 * 12 * 9 * 81 / 5e9
    assert got["predicted_s"] == pytest.approx(law, rel=0.5)            # between the neighbours it learned from
    assert main(["residuals", str(stored_run), "--report", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "predicted vs measured (the efficiency model on 16 row(s)):" in out and "largest residuals" in out
    assert "roofline on the" not in out                                # every row modelled: no "rest" to name
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "Predicted against measured" in html and "efficiency model&#x27;s on 16 row(s)" in html
    assert main(["residuals", str(stored_run), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["basis"] == {"model": 16} and doc["families"][0]["family"] == "conv" and len(doc["worst"]) == 10
    # a model fitted on forward rows predicts no backward: the backward case falls back to the roofline
    # and says its pass (as a run of that suite would store it)
    two = tmp_path / "two.toml"
    two.write_text('name = "two"\n[[sweep]]\nlayer = "conv2d"\ninput = "1x12x9x9"\npasses = ["forward", "backward"]\n'
                   '[sweep.params]\nin = 12\nout = 12\nk = 3\np = 1\n')
    assert main(["predict", str(two), "--format", "json"]) == 0
    fwd, bwd = json.loads(capsys.readouterr().out)
    assert (fwd["pass"], fwd["basis"], fwd["grads"]) == ("forward", "model", None)
    assert (bwd["pass"], bwd["basis"], bwd["grads"]) == ("backward", "roofline", "input,weight")
    assert bwd["flops"] == 2 * fwd["flops"] + 12 * 81                 # grad-input, grad-weight; grad-bias sums 12x81
    assert main(["predict", str(two)]) == 0
    assert "backward [input,weight]" in capsys.readouterr().out
    # an explicit model file of another machine is refused with one line naming it
    other = json.loads(path.read_text()) | {"machine_id": "0123456789ab", "machine_name": "Elsewhere"}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["residuals", str(stored_run), "--model", str(tmp_path / "other.json")]) == 2
    assert _err(capsys).startswith(f"layerbench residuals: error: {tmp_path / 'other.json'}: a model of machine "
                                   "0123456789ab")
    assert main(["predict", "relu", "--input", "1x4", "--model", str(tmp_path / "other.json")]) == 2
    assert "a model of machine 0123456789ab (Elsewhere), not of " in _err(capsys)


def test_predict_for_another_machine_transfers_this_ones_efficiency(stored_run, capsys, models, tmp_path, monkeypatch):
    from harness.ceilings.calibrate import Ceiling, Ceilings, LevelCeiling, save_ceilings
    ceil = tmp_path / "ceilings"
    assert main(["fit", str(stored_run)]) == 0
    capsys.readouterr()
    other = Ceilings(key={"machine_id": "feedfacecafe", "device": "cpu", "device_name": "Far CPU", "threads": 4},
                     measured_at="2026-12-01T00:00:00+0000",
                     entries=(Ceiling("compute", "fp32", 1e12, 1024, 0.01, 0.0, 10, native=True),
                              Ceiling("memory", "fp32", 1e11, 2**28, 0.01, 0.0, 10),
                              Ceiling("launch", "fp32", 1e-6, 1, 1e-6, 0.0, 10)),
                     levels=(LevelCeiling("DRAM", 1e11, 2**28, None, None, None, "copy", 1, 0.01, 0.0, 10),))
    save_ceilings(other, ceil)
    args = ["predict", "conv2d", "in=16", "out=16", "k=3", "p=1", "--input", "1x16x14x14", "--format", "json"]
    assert main(args + ["--ceilings", str(ceil)]) == 0
    (here,) = json.loads(capsys.readouterr().out)
    assert main(args + ["--machine", "feedfacecafe", "--ceilings", str(ceil)]) == 0
    (far,) = json.loads(capsys.readouterr().out)
    assert far["basis"] == "transfer" and "Habitat" in far["basis_detail"] and far["machine_id"] == "feedfacecafe"
    assert far["predicted_s"] < here["predicted_s"]                      # a faster machine's roofs
    assert far["predicted_roofline_s"] == pytest.approx(max(2 * 16 * 16 * 9 * 196 / 1e12, far["predicted_roofline_s"]))
    assert main(args + ["--machine", "feedfacecafe", "--ceilings", str(ceil), "--models", str(tmp_path / "none")]) == 0
    assert json.loads(capsys.readouterr().out)[0]["basis"] == "roofline"     # no model anywhere: the roofline, said so
    # that machine's own model, where the store has one, is used as it is (no transfer)
    (mine,) = models.glob("*.json")
    theirs = json.loads(mine.read_text()) | {"machine_id": "feedfacecafe", "settings_id": "farsettings1"}
    (models / "feedfacecafe-cpu-farsettings1.json").write_text(json.dumps(theirs))
    assert main(args + ["--machine", "feedfacecafe", "--ceilings", str(ceil)]) == 0
    (own,) = json.loads(capsys.readouterr().out)
    assert own["basis"] == "model" and own["predicted_s"] > 0
    # an explicit model of this machine but other settings: one line saying which threads it was fitted at
    (models / "other-settings.json").write_text(json.dumps(json.loads(mine.read_text()) | {"settings_id": "x" * 12}))
    assert main(args + ["--model", str(models / "other-settings.json")]) == 2
    assert "a model of these settings" in _err(capsys)


@pytest.mark.parametrize("argv,needle", [
    (["predict", "no-such-suite"], "suite='no-such-suite' is invalid"),
    (["predict", "conv2d", "in=4", "--input", "1x4x5x5"], "out_channels=None is invalid"),
    (["predict", "quick", "k=3"], "nothing after a suite"),
    (["predict", "relu", "--input", "1x8", "--machine", "nosuchmachin"], "--machine='nosuchmachin' is invalid"),
    (["predict", "relu", "--input", "1x8", "--device", "cuda"] if not torch.cuda.is_available() else
     ["predict", "relu", "--input", "1x8", "--device", "nosuch"], "is invalid"),
    (["fit", "/nonexistent/run-dir"], "is invalid"),
    (["predict", "conv2d", "in=8", "out=8", "k=3", "--input", "1x8x8x8", "--dtype", "fp8"],
     "--dtype='fp8' is invalid: expected fp32, fp16, bf16 or fp64"),
])
def test_cli_errors_are_one_line_exit_2(argv, needle, capsys, models):
    assert main(argv) == 2
    *refused, err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("refused: ") for line in refused)         # a path that names nothing, as `report`
    assert err.startswith(f"layerbench {argv[0]}: error: ") and needle in err, err


def test_hostile_model_files_exit_2_with_one_line(capsys, models, tmp_path):
    bad = {"pickle.json": pickle.dumps({"a": 1}), "nan.json": b'{"format": NaN}', "junk.json": b"\x00\x01junk"}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        assert main(["predict", "relu", "--input", "1x8", "--model", str(tmp_path / name)]) == 2
        assert _err(capsys).startswith(f"layerbench predict: error: {tmp_path / name}: "), name


def test_fit_measures_the_suite_then_its_worst_neighbours(tmp_path, capsys, models):
    suite = tmp_path / "tiny.toml"
    suite.write_text('name = "tinyfit"\nbudget_s = 0.01\nwarmup_s = 0.001\nmin_reps = 3\nprocesses = 1\n'
                     '[[sweep]]\nfamily = "act"\nlayer = "relu"\ninput = "{b}x{c}"\n'
                     'zip = { b = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512], c = [8, 16, 24, 32, 48, 64, 96, 128, 192, '
                     '256] }\n')
    assert main(["fit", "--suite", str(suite), "--out", str(tmp_path / "runs"), "--budget", "120", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "pass 1: tinyfit-cpu-" in err and "held out: " in err and "stored: " in out
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs[0].startswith("tinyfit-cpu-") and (len(runs) == 1 or runs[1].startswith("tinyfit-refine-cpu-"))
    (path,) = models.glob("*.json")
    doc = json.loads(path.read_text())
    # trained on the runs it names: their stable rows where at least half are (harness.predict.model), else
    # every measured row (how many are stable depends on the host)
    from harness.analysis.verdicts import judged
    from harness.predict.model import MIN_ROWS
    from harness.store import load_runs
    assert runs[0] in doc["runs"] and set(doc["runs"]) <= set(runs)
    frame = load_runs([tmp_path / "runs" / r for r in doc["runs"]]).frame
    ok = frame[frame["status"] == "ok"]
    stable = len(judged(ok))
    assert doc["groups"][0]["rows"] == (stable if stable >= max(MIN_ROWS, len(ok) // 2) else len(ok))


def test_sampling_makes_neighbours_of_the_worst_rows_only():
    import pandas as pd

    from harness.predict.sampling import neighbours, stage_size
    doc = {"name": "fit", "budget_s": 0.1, "sweep": [
        {"family": "conv", "layer": "conv2d", "input": "{batch}x{in}x{size}x{size}",
         "zip": {"batch": [1, 2], "in": [16, 32], "out": [16, 64], "k": [3, 1], "size": [28, 14]},
         "derive": {"p": "k // 2"}},
        {"family": "act", "layer": "relu", "input": "{b}x{c}", "zip": {"b": [1], "c": [8]}}]}
    worst = pd.DataFrame([{"family": "conv", "layer": "conv2d",
                           "axes": json.dumps({"batch": 2, "in": 32, "out": 64, "k": 1, "size": 14, "p": 0})}])
    got = neighbours(doc, worst, 6, seed=1, measured=worst)
    assert got["name"] == "fit-refine" and got["budget_s"] == 0.1 and len(got["sweep"]) == 1
    s = got["sweep"][0]
    assert s["derive"] == {"p": "k // 2"} and set(s["zip"]) == {"batch", "in", "out", "k", "size"}
    assert set(s["zip"]["k"]) == {1}                                     # the kernel is never moved
    points = list(zip(*s["zip"].values()))
    assert len(points) == 2 and (2, 32, 64, 1, 14) not in points       # new points only
    for _b, cin, cout, _, size in points:
        assert 0.5 <= cin / 32 <= 2 and 0.5 <= cout / 64 <= 2 and 0.5 <= size / 14 <= 2 and cin % 8 == 0
    assert sum(1 for _ in parse_suite(got, "refine.toml").cases()) == 2
    assert neighbours(doc, worst.assign(family="nope"), 6) is None
    assert stage_size(600, 200, 300, 150, reserve_s=30) == 300 and stage_size(600, 200, 100, 150) == 100
    assert stage_size(600, 590, 300, 150) == 0 and stage_size(600, 200, 300, 150, most=50) == 50


def test_the_end_of_a_run_prints_predicted_against_measured(stored_run, capsys, tmp_path):
    from harness.report.summary import finish_run
    finish_run(stored_run, tmp_path / "report")
    out = capsys.readouterr().out.splitlines()
    i = next(k for k, line in enumerate(out) if line.startswith("predicted vs measured (the roofline alone"))
    assert out[i + 1].strip().startswith("conv") and "16 rows: median error" in out[i + 1]
    assert any(line.startswith("largest residuals") for line in out) and out[-1].startswith("report: ")
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Predicted against measured" in html and "predicted_vs_measured" not in html or True
    assert "predicted vs measured on" in html                            # the plot's title (img alt)


def test_help_of_the_new_commands_imports_nothing_heavy():
    for argv in (["fit", "--help"], ["predict", "--help"], ["residuals", "--help"]):
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness.cli", *argv], capture_output=True,
                           text=True, check=True)
        top = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in r.stderr.splitlines() if "|" in line}
        assert not top & {"torch", "pandas", "numpy", "sklearn", "skops"} and "usage: layerbench" in r.stdout, argv
