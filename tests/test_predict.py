"""The analytic model predicts: the hierarchical roofline of hand-computed rows, an efficiency model
that recovers a known law from synthetic rows, model files stored without a pickle and refused
when hostile, predictions of layers never measured (without a GPU), transfer to another machine,
and the prediction columns of a derived table."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest

from harness.analysis import derive
from harness.predict.columns import PREDICTED, apply_models, predicted_columns
from harness.predict.features import FEATURES, features, op_class, regime
from harness.predict.model import ModelFileError, accuracy, fit, load, save, to_json
from harness.predict.roofline import roofline

KIB, MIB = 2**10, 2**20
LEVELS = json.dumps([{"level": "L1", "bytes_s": 400e9, "capacity_bytes": 64 * KIB},
                     {"level": "L2", "bytes_s": 100e9, "capacity_bytes": 1 * MIB},
                     {"level": "L3", "bytes_s": 50e9, "capacity_bytes": 16 * MIB},
                     {"level": "DRAM", "bytes_s": 20e9, "capacity_bytes": None}])


def row(flops: float, read: float, written: float = 0.0, **kw: object) -> dict:
    base = dict(status="ok", family="f", layer="relu", config="{}", input_shapes="1x8", memory_format="nchw",
                dtype="fp32", flops=flops, bytes_read=read, bytes_written=written, ceiling_flops_s=100e9,
                ceiling_bytes_s=20e9, peak_flops_s=200e9, peak_bytes_s=None, peak_source="formula",
                launch_overhead_s=5e-6, kernel_launches=1, aten_ops=1, ceiling_levels=LEVELS, main_memory="DRAM",
                time_median_s=1e-3, stability="stable")
    base.update(kw)
    return base


# --- the roofline ------------------------------------------------------------------------------------------

def test_roofline_is_exact_on_hand_computed_rows():
    rows = pd.DataFrame([
        row(2e9, 1 * MIB, layer="conv2d"),                   # 2e9 / 100e9 = 20 ms of compute; 1 MiB in L2: 10 us
        # the levels inside the one that holds the set serve it first, each up to its capacity:
        # L1 65,536 / 400e9 = 0.16384 us; L2 the next 983,040 / 100e9 = 9.8304 us; L3 15 MiB / 50e9 = 314.5728 us
        row(1e3, 1 * MIB),                                   # L2: 0.16384 + 983,040 / 100e9 = 9.99424 us
        row(1e3, 8 * MIB, 8 * MIB),                          # 16 MiB fits L3 (<=): 0.16384 + 9.8304 + 314.5728 us
        row(1e3, 100 * MIB),                                 # DRAM: 324.56704 us + 88,080,384 / 20e9 = 4.7286 ms
        row(100, 100, kernel_launches=3),                    # launch: 3 x 5 us = 15 us
        row(100, 100, kernel_launches=None, aten_ops=4),     # no profile: the counted ops, 4 x 5 us
        row(4e9, 1 * MIB, ceiling_flops_s=None),             # no measured GEMM: the formula peak, 4e9 / 200e9
        row(1e3, 400 * KIB, ceiling_levels=None),            # no levels stored: main memory, 409,600 / 20e9
    ])
    r = roofline(rows)
    want = [2e9 / 100e9, 9.99424e-6, 324.56704e-6, 4728.58624e-6, 15e-6, 20e-6, 4e9 / 200e9, 400 * KIB / 20e9]
    assert r["predicted_roofline_s"].tolist() == pytest.approx(want, rel=1e-12)
    assert r["predicted_bound"].tolist() == ["compute", "L2", "L3", "DRAM", "launch", "launch", "compute", "DRAM"]
    assert r["roof_compute_s"][1] == pytest.approx(1e3 / 100e9) and r["roof_launch_s"][1] == pytest.approx(5e-6)


def test_derive_adds_the_prediction_columns_and_matches_the_roof_level():
    rows = pd.DataFrame([row(2e9, 1 * MIB, time_median_s=25e-3), row(1e3, 1 * MIB, time_median_s=30e-6),
                         row(1e3, 100 * MIB, status="error", time_median_s=None)])
    d = derive(rows)
    assert {c.name for c in PREDICTED} <= set(d.columns)
    ok = d[d.status == "ok"]
    assert ok["predicted_roofline_s"].tolist() == pytest.approx(ok["roof_level_time_s"].tolist())
    assert ok["predicted_bound"].tolist() == ok["roof_level"].tolist() == ["compute", "L2"]
    assert ok["residual"].tolist() == pytest.approx([25e-3 / 20e-3, 30e-6 / 9.99424e-6])
    assert ok["predicted_basis"].tolist() == ["roofline", "roofline"] and ok["predicted_s"].equals(
        ok["predicted_roofline_s"])
    assert d["predicted_s"].isna()[2] and d["predicted_basis"][2] is None            # not measured: no prediction


def test_reference_run_predictions_equal_its_roof_level():
    from pathlib import Path

    import harness
    run = Path(__file__).resolve().parents[1] / "results" / "reference" / "2026-11-24-amd-epyc-zen3-2cpu-v3" / \
        "quick-cpu-20261124T071037Z"
    d = derive(harness.load_results(run))
    assert np.allclose(d["predicted_roofline_s"], d["roof_level_time_s"])
    assert (d["residual"] * d["predicted_s"]).tolist() == pytest.approx(d["time_median_s"].tolist())


def test_op_classes_and_regimes():
    assert [op_class(x) for x in ("conv2d", "conv_transpose2d", "linear", "bmm", "sdpa", "layernorm", "maxpool2d",
                                  "softmax", "gelu", "add")] == \
        ["conv", "conv", "gemm", "gemm", "attention", "norm", "pool", "softmax", "elementwise", "elementwise"]
    dw = {"layer": "conv2d", "memory_format": "nchw",
          "config": json.dumps({"in_channels": 32, "groups": 32, "kernel_size": [3, 3], "stride": [2, 2]})}
    assert regime(dw) == "conv2d|nchw|depthwise|kxk|strided|c1"


# --- synthetic rows drawn from a known law ----------------------------------------------------------------

MACHINE, SETTINGS = "synthetic001", "settings0001"


def law(cpg: np.ndarray, out_elems: np.ndarray, layout_cl: np.ndarray) -> np.ndarray:
    """The fraction of the roofline a synthetic conv reaches: less with few channels per group and little
    parallelism, more in channels-last."""
    return 0.85 * (cpg / (cpg + 8.0)) * (out_elems / (out_elems + 2e4)) * np.where(layout_cl, 1.0, 0.8)


def synthetic(n: int, seed: int, machine: str = MACHINE, settings: str = SETTINGS, noise: float = 0.01,
              run: str = "synthetic-run-a") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        c = int(rng.choice([8, 16, 32, 64, 128, 256]))
        g = int(rng.choice([d for d in (1, 2, 4, 8, 16, 32, 64, 128, 256) if c % d == 0]))
        size = int(rng.choice([7, 14, 28, 56]))
        batch = int(rng.choice([1, 2, 4, 8]))
        fmt = str(rng.choice(["nchw", "channels_last"]))
        flops = 2 * batch * c * size * size * (c // g) * 9
        read = 4 * (batch * c * size * size + c * (c // g) * 9)
        written = 4 * batch * c * size * size
        cfg = {"in_channels": c, "out_channels": c, "groups": g, "kernel_size": [3, 3], "stride": [1, 1],
               "padding": [1, 1], "dilation": [1, 1], "bias": True}
        r = row(flops, read, written, layer="conv2d", family="conv", memory_format=fmt, config=json.dumps(cfg),
                input_shapes=f"{batch}x{c}x{size}x{size}", machine_id=machine, settings_id=settings,
                machine_name="Synthetic CPU", device_type="cpu", device_name="Synthetic", run_id=run,
                config_id=f"{seed}-{i}", case_id=f"{seed}-{i}", threads=2, kernels="aten::mkldnn_convolution",
                timestamp="2026-12-02T00:00:00+0000", torch_version="2.13.0+cpu")
        rows.append(r)
    f = pd.DataFrame(rows)
    roof = roofline(f)["predicted_roofline_s"].to_numpy()
    feats = features(f)
    frac = law(feats["ch_per_group"].to_numpy(), 2 ** feats["log_out_elems"].to_numpy() - 1,
               f["memory_format"].eq("channels_last").to_numpy())
    f["time_median_s"] = roof / frac * np.exp(rng.normal(0, noise, n))
    return f


@pytest.fixture(scope="module")
def law_model():
    return fit(synthetic(320, seed=1))


def test_a_model_fitted_on_synthetic_rows_recovers_the_law(law_model):
    held = synthetic(120, seed=2)                         # configurations drawn afresh: never in training
    got = law_model.predict(held)
    acc = accuracy(got["predicted_s"], held["time_median_s"])
    roof = accuracy(roofline(held)["predicted_roofline_s"], held["time_median_s"])
    assert acc["within_10"] >= 0.9 and acc["median_error"] < 0.05, acc
    assert roof["median_error"] > 3 * acc["median_error"]
    # the target is the roofline's fraction: never predicted faster than the cap allows
    assert (got["predicted_fraction"] <= law_model.groups[0].fraction_max + 1e-9).all()
    assert (got["predicted_low_s"] <= got["predicted_s"]).all()
    assert (got["predicted_s"] <= got["predicted_high_s"]).all()
    g = law_model.groups[0]
    assert g.key == (("dtype", "fp32"),) and g.rows == 320 and g.heldout["within_10"] >= 0.8
    assert law_model.runs == ("synthetic-run-a",) and law_model.machine_id == MACHINE


def test_the_host_speed_is_taken_out_by_the_canary_and_put_back_per_row():
    """Rows measured while the host ran 1.3x slow (their canary 1.3x the others', their time with it)
    teach the same law; a measured row is predicted at its own canary's speed, a row without one
    at the reference (the training rows' median canary), and a saved model keeps the reference."""
    train = synthetic(240, seed=1, noise=0.0)
    slow = np.arange(len(train)) % 3 == 0
    train["canary_s"] = np.where(slow, 39e-6, 30e-6)
    train["time_median_s"] = train["time_median_s"] * np.where(slow, 1.3, 1.0)
    model = fit(train)
    assert model.canary_s == pytest.approx(30e-6)
    held = synthetic(120, seed=2, noise=0.0)
    at_ref = model.predict(held)["predicted_s"]
    assert accuracy(at_ref, held["time_median_s"])["median_error"] < 0.05     # the law, host speed taken out
    busy = model.predict(held.assign(canary_s=45e-6))["predicted_s"]
    assert (busy / at_ref).tolist() == pytest.approx([1.5] * len(held))
    assert model.predict(held.assign(canary_s=30e-6))["predicted_s"].tolist() == pytest.approx(at_ref.tolist())
    unscaled = fit(train.drop(columns=["canary_s"]))
    assert unscaled.canary_s is None
    assert accuracy(unscaled.predict(held)["predicted_s"], held["time_median_s"])["median_error"] > 0.05


def test_a_saved_model_keeps_its_reference_canary(tmp_path):
    f = synthetic(60, seed=3).assign(canary_s=31e-6)
    back = load(save(fit(f), tmp_path / "m.json"))
    assert back.canary_s == pytest.approx(31e-6)
    assert back.predict(f.assign(canary_s=62e-6))["predicted_s"].tolist() == pytest.approx(
        (2 * back.predict(f)["predicted_s"]).tolist())


def test_the_model_covers_only_its_machine_settings_and_dtype(law_model):
    other = pd.concat([synthetic(3, 5, machine="elsewhere000"), synthetic(3, 6, settings="othersetting"),
                       synthetic(3, 7).assign(dtype="bf16"), synthetic(3, 8)], ignore_index=True)
    got = law_model.predict(other)["predicted_s"]
    assert got.isna().tolist() == [True] * 9 + [False] * 3
    d = apply_models(predicted_columns(other.copy()), [law_model])
    assert d["predicted_basis"].tolist() == ["roofline"] * 9 + ["model"] * 3
    assert d["residual"].tolist() == pytest.approx((d["time_median_s"] / d["predicted_s"]).tolist())


def test_fit_refuses_rows_of_several_machines_or_too_few():
    from harness.errors import SpecError
    with pytest.raises(SpecError, match="machine_id"):
        fit(pd.concat([synthetic(10, 1), synthetic(10, 2, machine="elsewhere000")]))
    with pytest.raises(SpecError, match="at least 8"):
        fit(synthetic(5, 1))


# --- stored as data; hostile files refused -----------------------------------------------------------------

def test_save_and_load_give_the_same_predictions(law_model, tmp_path):
    path = save(law_model, tmp_path / "m.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "layerbench.efficiency-model" and doc["machine_id"] == MACHINE
    assert doc["settings_id"] == SETTINGS and doc["runs"] == ["synthetic-run-a"] and doc["features"] == list(FEATURES)
    assert {"layerbench", "scikit-learn", "skops", "torch"} <= set(doc["versions"])
    assert doc["groups"][0]["estimator"]["format"] == "skops"
    back = load(path, machine_id=MACHINE)
    held = synthetic(20, seed=3)
    assert back.predict(held)["predicted_s"].tolist() == pytest.approx(law_model.predict(held)["predicted_s"].tolist())


def _doc(model) -> dict:
    return json.loads(json.dumps(to_json(model)))


def _with_estimator(doc: dict, blob: bytes) -> dict:
    doc["groups"][0]["estimator"].update(data=base64.b64encode(blob).decode(), sha256=hashlib.sha256(blob).hexdigest())
    return doc


def hostile_files(model, tmp_path) -> dict:
    import skops.io as sio
    files = {}

    def put(name: str, data: bytes | str) -> None:
        p = tmp_path / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        files[name] = p

    good = _doc(model)
    put("not-json.json", "{this is not json")
    put("empty.json", "")
    put("a-list.json", "[1, 2, 3]")
    put("nan.json", json.dumps(good).replace('"fraction_max": ', '"fraction_max": NaN, "x": ', 1))
    put("infinite.json", json.dumps(good).replace('"fraction_max": ', '"fraction_max": 1e999, "x": ', 1))
    put("pickle.json", pickle.dumps(model.groups[0].estimator))
    put("pickle-protocol0.pkl", pickle.dumps({"a": 1}, protocol=0))
    put("bare-skops.skops", sio.dumps(model.groups[0].estimator))
    put("other-format.json", json.dumps({**good, "format": "something-else"}))
    put("newer-version.json", json.dumps({**good, "version": 99}))
    put("older-version.json", json.dumps({**good, "version": 1}))
    put("other-features.json", json.dumps({**good, "features": ["a", "b"]}))
    put("negative-canary.json", json.dumps({**good, "canary_s": -3e-5}))
    put("text-canary.json", json.dumps({**good, "canary_s": "fast"}))
    tampered = _doc(model)
    tampered["groups"][0]["estimator"]["sha256"] = "0" * 64
    put("tampered.json", json.dumps(tampered))
    put("not-base64.json", json.dumps(_with_estimator(_doc(model), b"x")).replace(base64.b64encode(b"x").decode(),
                                                                                    "!!!!"))
    put("untrusted-type.json", json.dumps(_with_estimator(_doc(model), sio.dumps({"f": len}))))
    from sklearn.linear_model import LinearRegression
    put("not-hgb.json", json.dumps(_with_estimator(_doc(model), sio.dumps(LinearRegression().fit([[0], [1]], [0, 1])))))
    est = pickle.loads(pickle.dumps(model.groups[0].estimator))
    est._predictors[0][0].nodes["value"][0] = np.nan
    put("nan-in-tree.json", json.dumps(_with_estimator(_doc(model), sio.dumps(est))))
    put("junk-payload.json", json.dumps(_with_estimator(_doc(model), b"PK\x03\x04 junk")))
    deep = "[" * 5000 + "]" * 5000
    put("deep.json", deep)
    return files


def test_hostile_model_files_are_refused_with_one_line_naming_the_file(law_model, tmp_path):
    msgs = {}
    for name, path in hostile_files(law_model, tmp_path).items():
        with pytest.raises(ModelFileError) as e:
            load(path)
        text = str(e.value)
        assert text.startswith(f"{path}: ") and "\n" not in text, (name, text)
        msgs[name] = text
    assert "a pickle" in msgs["pickle.json"] and "a pickle" in msgs["pickle-protocol0.pkl"]
    assert "NaN" in msgs["nan.json"] and "infinite" in msgs["infinite.json"]
    assert "SHA-256" in msgs["tampered.json"] and "builtins.len" in msgs["untrusted-type.json"]
    assert "HistGradientBoostingRegressor" in msgs["not-hgb.json"] and "NaN or infinite" in msgs["nan-in-tree.json"]
    assert '"canary_s" is -3e-05: expected a positive number' in msgs["negative-canary.json"]
    assert "'fast'" in msgs["text-canary.json"]
    assert msgs["older-version.json"].endswith("model format version 1; this layerbench reads 2 (its fractions are of "
                                               "the earlier roofline, each working set at the bandwidth of the one "
                                               "level that holds it): fit it again (layerbench fit)")
    assert msgs["newer-version.json"].endswith("model format version 99; this layerbench reads 2: fit it again "
                                               "(layerbench fit)")


def test_a_model_of_another_machine_is_refused(law_model, tmp_path):
    path = save(law_model, tmp_path / "m.json")
    with pytest.raises(ModelFileError, match=rf"^{tmp_path / 'm.json'}: a model of machine {MACHINE} .*not of "
                                             "abcdef012345"):
        load(path, machine_id="abcdef012345")
    assert not (tmp_path / ".m.json.tmp").exists()


def test_the_model_store_is_beside_the_ceilings(monkeypatch, tmp_path, law_model):
    from harness.predict.store import default_store, find_model, model_path, models_for, store_model
    monkeypatch.delenv("LAYERBENCH_MODELS", raising=False)
    monkeypatch.setenv("LAYERBENCH_CEILINGS", str(tmp_path / "ceil"))
    assert default_store() == tmp_path / "ceil" / "models"
    path = store_model(law_model)
    assert path == model_path(MACHINE, "cpu", SETTINGS) == tmp_path / "ceil" / "models" / \
        f"{MACHINE}-cpu-{SETTINGS}.json"
    assert find_model(MACHINE, "cpu", SETTINGS).settings_id == SETTINGS
    assert find_model(MACHINE, "cpu", "othersetting") is None and find_model(MACHINE, "cpu").machine_id == MACHINE
    assert [m.machine_id for m in models_for([(MACHINE, "cpu", SETTINGS), ("v1:host", "cpu", "x")])] == [MACHINE]
    monkeypatch.setenv("LAYERBENCH_MODELS", str(tmp_path / "elsewhere"))
    assert default_store() == tmp_path / "elsewhere"


def test_transfer_scales_by_op_class(law_model):
    from harness.predict.transfer import transfer
    held = synthetic(30, seed=4)
    base = law_model.predict(held)["predicted_s"]
    fast = json.dumps([dict(d, bytes_s=10 * d["bytes_s"]) for d in json.loads(LEVELS)])   # every bandwidth x10
    faster = held.assign(machine_id="target000001", ceiling_flops_s=200e9, ceiling_levels=fast)   # compute x2
    got = transfer(law_model, faster)["predicted_s"]
    roof_src, roof_tgt = roofline(held), roofline(faster)
    share = roof_src["roof_memory_s"] / (roof_src["roof_memory_s"] + roof_src["roof_compute_s"])
    want = base * np.exp(share * np.log(0.1) + (1 - share) * np.log(0.5))
    assert got.tolist() == pytest.approx(np.maximum(want, roof_tgt["roof_launch_s"]).tolist(), rel=1e-9)
    relu = held.assign(layer="relu", machine_id="target000001", ceiling_levels=fast)
    assert transfer(law_model, relu)["predicted_s"].notna().all()          # memory class: the bandwidth ratio


def test_accuracy_figures():
    a = accuracy([1.0, 1.05, 1.5, np.nan], [1.0, 1.0, 1.0, 1.0])
    assert a["rows"] == 3 and a["median_error"] == pytest.approx(0.05) and a["within_10"] == pytest.approx(2 / 3)
    assert math.isnan(accuracy([], [])["median_error"])


# --- the launch floor is measured ----------------------------------------------------------------------------

def test_the_launch_floor_is_measured_at_calibration_and_stored_in_every_row(tmp_path, monkeypatch):
    import dataclasses

    import torch

    import harness.ceilings.calibrate as ce
    from harness.backends import resolve_device
    from harness.backends.base import CalibrationSizes, MemoryLevel
    from harness.backends.cpu import CpuBackend
    from harness.runner.context import resolve_peaks
    from harness.timing import Measurement
    monkeypatch.setattr(CpuBackend, "calibration", CalibrationSizes((64, 128), 2**20, 2**24, True))
    monkeypatch.setattr(CpuBackend, "memory_levels",
                        lambda self, device: (MemoryLevel("L1", 32 * KIB, True, 32 * KIB), MemoryLevel("DRAM", None)))
    calls = []

    def fake(fn, inputs, threads=None, **kw):
        x = inputs[0][0]
        calls.append(fn)
        t = 3.5e-6 if fn is torch.neg else 2 * x.shape[0] ** 3 / 1e11 if fn is torch.mm else x.numel() * 4 / 1e10
        return Measurement(device="cpu", timer="fake", mode="hot", samples_s=(t, t, 2 * t), number=1, warmup_calls=0,
                           warmup_s=0.0, estimate_s=t, sampling_s=3 * t, threads=1, gc_paused=True, rotation=1,
                           stop_reason="converged", target_rel_ci=0.01)

    c = ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=fake)
    e = c.entry("launch")
    assert c.launch == e.value == pytest.approx(3.5e-6) and e.kind == "launch" and "torch.neg" in e.note
    assert ce.load_ceilings(c.key, tmp_path).launch == pytest.approx(3.5e-6)             # stored, read back
    calls.clear()
    assert ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=fake).launch == c.launch and not calls
    # a file from before the floor: calibrate measures the floor alone and keeps the rest
    old = dataclasses.replace(c, entries=tuple(x for x in c.entries if x.kind != "launch"))
    ce.save_ceilings(old, tmp_path)
    again = ce.calibrate("cpu", ["fp32"], threads=1, store=tmp_path, measure_fn=fake)
    assert calls == [torch.neg] and again.launch == pytest.approx(3.5e-6) and again.levels == c.levels
    # every row of a run stores it as launch_overhead_s; without one, the backend's constant
    device = resolve_device("cpu")
    assert resolve_peaks(device, ["fp32"], 1, c)["fp32"].launch_overhead_s == pytest.approx(3.5e-6)
    assert resolve_peaks(device, ["fp32"], 1, old)["fp32"].launch_overhead_s == CpuBackend.launch_overhead_s


def test_a_residual_far_beyond_its_reasons_names_the_kernel_with_sizes():
    """A 3x3 stride-2 max pool (each input read 9/4 = 2.25x) predicted 7.51 us (400 kB read + 400 kB
    written: L1's 64 KiB at 400 GB/s, 0.16 us, the rest at L2's 100 GB/s, 7.34 us), measured 640 us:
    85.2x. The overlap accounts for 2.25x at most; the rest, 85.2 / 2.25 = 38x, is the kernel's, at
    1.2 % of its roof and 1.25 GB/s moved."""
    from harness.predict.explain import explain
    r = row(1e3, 400e3, 400e3, layer="maxpool2d", time_median_s=640e-6, input_shapes="1x16x100x100",
            config=json.dumps({"kernel_size": [3, 3], "stride": [2, 2]}), kernels="aten::max_pool2d_with_indices")
    d = derive(pd.DataFrame([r])).iloc[0]
    assert d["predicted_bound"] == "L2" and d["residual"] == pytest.approx(640 / 7.50848)
    said = explain(d)
    assert said.startswith("85.24x slower than predicted: its windows overlap: each input element is read about "
                           "2.25x (kernel / stride)")
    assert said.endswith("where the count assumes once (at most 2.25x); the rest, 38x, is the kernel itself "
                         "(aten::max_pool2d_with_indices: 1.2 % of its L2 roof, 1.25 GB/s moved)")
    # nothing in the counts of a relu 4.26x slower than its roof: the kernel's rate instead of a bare intensity
    d = derive(pd.DataFrame([row(1e3, 400e3, 400e3, time_median_s=32e-6, kernels="aten::clamp_min")])).iloc[0]
    assert explain(d) == ("4.26x slower than predicted: nothing in its counts explains it: the kernel itself "
                          "(aten::clamp_min: 23.5 % of its L2 roof, 25 GB/s moved)")


def test_a_causal_attention_is_sized_and_a_working_set_just_over_a_cache_is_served_mostly_inside_it():
    """A causal sdpa 8x slower than its compute roof: the full tiles account for 2x, the kernel for
    the rest (4x). A working set just over L2 is predicted at L3's bandwidth: it can make a row
    faster than predicted (most of it still hits L2), never slower."""
    from harness.predict.explain import explain
    causal = row(1e8, 100e3, layer="sdpa", time_median_s=8e-3, config=json.dumps({"causal": True}),
                 input_shapes="1x8x128x64;1x8x128x64;1x8x128x64",
                 kernels="aten::_scaled_dot_product_flash_attention_for_cpu")
    d = derive(pd.DataFrame([causal])).iloc[0]
    assert d["predicted_bound"] == "compute" and d["residual"] == pytest.approx(8.0)
    said = explain(d)
    assert "causal: the count takes the unmasked half of the scores" in said
    assert said.endswith("does up to twice that (at most 2x); the rest, 4.0x, is the kernel itself "
                         "(aten::_scaled_dot_product_flash_attention_for_cpu: 12.5 % of its compute roof, "
                         "12.5 GFLOP/s)")
    # 1,228,800 B (1.17 MiB) moved, just over L2 (1 MiB): held by L3, but L1 and L2 serve their 1 MiB first,
    # so its roof is 0.16384 + 9.8304 + 180,224 / 50e9 = 13.59872 us (24.58 us if all came at L3's 50 GB/s)
    over = 600 * KIB
    slow = derive(pd.DataFrame([row(1e3, over, over, time_median_s=1e-3)])).iloc[0]
    fast = derive(pd.DataFrame([row(1e3, over, over, time_median_s=12e-6)])).iloc[0]
    assert slow["predicted_bound"] == "L3" and slow["predicted_roofline_s"] == pytest.approx(13.59872e-6)
    assert slow["roof_level_bytes_s"] == pytest.approx(1_228_800 / 13.59872e-6)
    assert "faster than its L3 roof" in explain(fast)


def test_reorders_are_sized_so_they_tell_a_row_apart():
    """Two NCHW convs, each with 3 oneDNN reorders: a 1x1 one 7x slower than its compute roof, whose
    reorders (its 1 MB in L2 read and written once more, 20 us at 100 GB/s, against a 1 ms roofline)
    account for about 1.02x: the rest, 6.9x, is the kernel; a dense one 1.5x slower whose reorders
    account for the same 1.02x is left at the reasons (nothing over 3x theirs)."""
    from harness.predict.explain import explain
    conv = dict(layer="conv2d", onednn_reorders=3, kernels="aten::mkldnn_convolution",
                config=json.dumps({"kernel_size": [1, 1], "in_channels": 64, "out_channels": 64}))
    d = derive(pd.DataFrame([row(1e8, 0.5e6, 0.5e6, time_median_s=7e-3, **conv)])).iloc[0]
    assert d["predicted_bound"] == "compute" and d["residual"] == pytest.approx(7.0)
    said = explain(d)
    assert said == ("7.00x slower than predicted: oneDNN runs 3 reorder(s) per call (layout conversions) around "
                    "it, each tensor read and written once more (about, at its memory roof, 1.02x); the rest, 6.9x, is "
                    "the kernel itself (aten::mkldnn_convolution: 14.3 % of its compute roof, 14.3 GFLOP/s)")
    d = derive(pd.DataFrame([row(1e8, 0.5e6, 0.5e6, time_median_s=1.5e-3, **conv)])).iloc[0]
    assert explain(d) == ("1.50x slower than predicted: oneDNN runs 3 reorder(s) per call (layout conversions) "
                          "around it, each tensor read and written once more (about, at its memory roof, 1.02x)")


def test_the_kernel_s_rest_is_told_against_the_roofline_only():
    """A model's miss is not the kernel's distance from its roof, nor a launch-bound row's: no
    "rest"; a model-predicted row's share of its roof is the roofline's time over its time, not
    1 / residual."""
    from harness.predict.explain import explain, kernel_rate
    from harness.predict.features import features
    r = row(1e3, 400e3, 400e3, layer="maxpool2d", time_median_s=640e-6, input_shapes="1x16x100x100",
            config=json.dumps({"kernel_size": [3, 3], "stride": [2, 2]}), kernels="aten::max_pool2d_with_indices")
    d = derive(pd.DataFrame([r])).iloc[0]
    assert "the rest, 38x" in explain(d)
    modelled = d.copy()
    modelled["predicted_basis"], modelled["predicted_s"], modelled["residual"] = "model", 320e-6, 2.0
    said = explain(modelled)
    assert said.startswith("2.00x slower than predicted: its windows overlap") and "the rest" not in said
    assert "1.2 % of its L2 roof" in kernel_rate(modelled, features(pd.DataFrame([modelled.to_dict()])).iloc[0])
    tiny = derive(pd.DataFrame([row(10, 10, layer="maxpool2d", time_median_s=1e-3, kernel_launches=2,
                                    config=json.dumps({"kernel_size": [3, 3], "stride": [2, 2]}))])).iloc[0]
    assert tiny["predicted_bound"] == "launch" and "the rest" not in explain(tiny)
    assert "windows overlap" not in explain(tiny)                   # more reads cost memory time, not launches


def test_faster_than_the_model_is_not_faster_than_the_roof():
    """A relu 4.26x its L2 roofline's time (7.51 us) that a model over-predicted (residual 0.5) ran slower than
    its roof, never "faster than its L2 roof"; one that beat its roof says so, and a launch floor a
    row sits within is given at three digits (1.14x, not 1.1x)."""
    from harness.predict.explain import explain
    d = derive(pd.DataFrame([row(1e3, 400e3, 400e3, time_median_s=32e-6, kernels="aten::clamp_min")])).iloc[0]
    modelled = d.copy()
    modelled["predicted_basis"], modelled["predicted_s"], modelled["residual"] = "model", 64e-6, 0.5
    said = explain(modelled)
    assert said == ("2.00x faster than predicted: the model expected less of this kernel than it gave: it still "
                    "took 4.26x its roofline's time")
    quick = derive(pd.DataFrame([row(1e3, 400e3, 400e3, time_median_s=4e-6, launch_overhead_s=1e-9)])).iloc[0]
    assert quick["residual"] == pytest.approx(4 / 7.50848) and "faster than its L2 roof" in explain(quick)
    near = derive(pd.DataFrame([row(1e3, 1e3, time_median_s=21.17e-6, kernel_launches=14,
                                    launch_overhead_s=1.3225e-6)])).iloc[0]
    assert "21.2 us is within 1.14x of its launch floor (14 launches x 1.32 us)" in explain(near)
