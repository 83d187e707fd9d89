"""``layerbench count`` on any model (torchvision, timm, ``module:callable``), the per-module
roll-up (``--by-module``), and where module-level presets put a module's cost."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
from torch import nn

import harness
from harness.analytic.by_module import by_module
from harness.cli import main
from harness.cli.count import build_model
from harness.errors import SpecError

#: A small model: conv 3->8 k3 (no padding) on 1x3x8x8 -> 1x8x6x6, ReLU, flatten, linear 288->10.
TINY = """
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        self.head = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def build_net():
    return Tiny()


class Holder:
    build = staticmethod(build_net)


def build_tensor():
    return torch.zeros(3)


def build_with_item():
    # an initializer that needs data: .item() on a meta tensor raises, so this one builds on the CPU
    width = int(torch.tensor(8.0).item())
    return nn.Linear(width, 2)


def build_broken():
    raise ValueError("no such width")


not_callable = 3
"""

# Hand arithmetic for TINY at 1x3x8x8, fp32 (4 bytes), canonical convention:
CONV = {"flops": 2 * 288 * 27, "macs": 288 * 27, "params": 8 * 27 + 8,           # 288 outputs x 3*3*3 MACs
        "bytes_read": (192 + 216 + 8) * 4, "bytes_written": 288 * 4}             # input + weight + bias; output
RELU = {"flops": 288, "macs": 0, "params": 0, "bytes_read": 288 * 4, "bytes_written": 288 * 4}
HEAD = {"flops": 2 * 288 * 10, "macs": 288 * 10, "params": 288 * 10 + 10,        # addmm: 288 x 10 MACs
        "bytes_read": (10 + 288 + 2880) * 4, "bytes_written": 10 * 4}            # bias + input + weight; output
SUMMED = ["flops", "macs", "params", "bytes_read", "bytes_written"]


def _add(*parts: dict) -> dict:
    return {k: sum(p[k] for p in parts) for k in SUMMED}


TOTAL = _add(CONV, RELU, HEAD)


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



# --- fixtures: packages written into tmp_path ---------------------------------------------------

@pytest.fixture
def write_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """``write_package(name, {relative path: source})``: importable during the test (tmp_path on
    sys.path, any module of that name hidden), gone from sys.modules after it."""
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def write(name: str, files: dict[str, str]) -> Path:
        for rel, text in files.items():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text(textwrap.dedent(text))
        names.append(name)
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, key)
        importlib.invalidate_caches()
        return tmp_path

    yield write
    for key in [k for k in sys.modules if any(k == n or k.startswith(n + ".") for n in names)]:
        del sys.modules[key]


@pytest.fixture
def tiny(write_package) -> Path:
    """TINY as the module ``lb_tiny_net`` (and the file ``lb_tiny_net.py``)."""
    return write_package("lb_tiny_net", {"lb_tiny_net.py": TINY}) / "lb_tiny_net.py"


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    rc = main(["count", *argv, "--format", "json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def pick(row: dict) -> dict:
    return {k: row[k] for k in SUMMED}


# --- your own model: module:callable and path/to/file.py:callable -------------------------------

def test_own_model_counts_by_hand(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert TOTAL == {"flops": 21_600, "macs": 10_656, "params": 3_114, "bytes_read": 15_528, "bytes_written": 2_344}
    for name in ("lb_tiny_net:build_net", f"{tiny}:build_net", "lb_tiny_net:Tiny", "lb_tiny_net:Holder.build"):
        doc = run_json(["--model", name, "--input", "1x3x8x8"], capsys)
        assert pick(doc["totals"]) == TOTAL and doc["totals"]["ops"] == 3, name
        rows = {(r["module"], r["op"]): r for r in doc["rows"]}
        assert pick(rows["features.0", "aten.convolution"]) == CONV
        assert pick(rows["features.1", "aten.relu"]) == RELU
        assert pick(rows["head", "aten.addmm"]) == HEAD
        assert rows["head", "aten.t"]["flops"] == 0 and rows["", "aten.view"]["bytes_read"] == 0   # views


def test_own_model_under_thop(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """thop: conv out.numel x Cin/g x k*k, linear in_features x out.numel; ReLU 0; MACs on the computing ops."""
    doc = run_json(["--model", "lb_tiny_net:build_net", "--input", "1x3x8x8", "--convention", "thop"], capsys)
    assert doc["totals"]["macs"] == 288 * 27 + 288 * 10
    macs = {(r["module"], r["op"]): r["macs"] for r in doc["rows"]}
    assert macs["features.0", "aten.convolution"] == 7_776 and macs["features.1", "aten.relu"] == 0
    assert macs["head", "aten.addmm"] == 2_880 and macs["head", "aten.t"] == 0


def test_models_are_built_on_the_meta_device_in_eval_mode(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, note = build_model("lb_tiny_net:build_net")
    assert note is None and not model.training
    assert all(t.is_meta for t in [*model.parameters(), *model.buffers()])
    # a builder that needs real data (.item()) is built on the CPU instead, and says so
    model, note = build_model("lb_tiny_net:build_with_item")
    assert not any(p.is_meta for p in model.parameters()) and "built on the CPU instead" in note
    doc = run_json(["--model", "lb_tiny_net:build_with_item", "--input", "4x8"], capsys)
    assert doc["totals"]["macs"] == 4 * 8 * 2
    assert main(["count", "--model", "lb_tiny_net:build_with_item", "--input", "4x8"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("layerbench count: note: lb_tiny_net:build_with_item could not be built on the meta device")


def test_the_reference_models_need_no_input(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(["--model", "mobilenetv2", "--by-module", "--depth", "0"], capsys)
    assert [m["module"] for m in doc["modules"]] == [""]
    assert doc["modules"][0]["params"] == doc["totals"]["params"] == 3_504_872


# --- the per-module table ------------------------------------------------------------------------

def test_by_module_sums_each_module(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(["--model", "lb_tiny_net:build_net", "--input", "1x3x8x8", "--by-module"], capsys)
    mods = doc["modules"]
    assert [(m["module"], m["module_type"], m["depth"], m["ops"]) for m in mods] == [
        ("", "Tiny", 0, 3), ("features", "Sequential", 1, 2), ("features.0", "Conv2d", 2, 1),
        ("features.1", "ReLU", 2, 1), ("head", "Linear", 1, 1)]
    by = {m["module"]: pick(m) for m in mods}
    assert by["features.0"] == CONV and by["features.1"] == RELU and by["head"] == HEAD
    assert by["features"] == _add(CONV, RELU)
    assert by[""] == TOTAL == pick(doc["totals"])
    assert mods[0]["intensity"] == pytest.approx(21_600 / (15_528 + 2_344))


def test_by_module_depth(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--model", "lb_tiny_net:build_net", "--input", "1x3x8x8", "--by-module", "--depth"]
    mods = run_json(base + ["1"], capsys)["modules"]
    assert [m["module"] for m in mods] == ["", "features", "head"]
    assert pick(mods[1]) == _add(CONV, RELU) and pick(mods[0]) == TOTAL
    mods = run_json(base + ["0"], capsys)["modules"]
    assert [m["module"] for m in mods] == [""] and pick(mods[0]) == TOTAL


def test_by_module_table_markdown_csv(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["count", "--model", "lb_tiny_net:build_net", "--input", "1x3x8x8", "--by-module"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["module", "type", "ops", "params", "flops", "macs", "bytes_read", "bytes_written",
                                "intensity"]
    assert [line.split()[0] for line in lines[1:6]] == ["model", "features", "features.0", "features.1", "head"]
    assert [len(line) - len(line.lstrip()) for line in lines[1:6]] == [0, 2, 4, 4, 2]     # indented by depth
    assert lines[1].split()[1:7] == ["Tiny", "3", "3,114", "21,600", "10,656", "15,528"]
    assert lines[-1].startswith("total (canonical): 21,600 FLOPs, 10,656 MACs, 3,114 params")
    assert main(argv + ["--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| module | type | ops | params | flops | macs | bytes_read | bytes_written | intensity |"
    assert lines[2].startswith("| model | Tiny | 3 | 3,114 | 21,600 |")
    assert lines[4].startswith("| \u00a0\u00a0\u00a0\u00a0features.0 | Conv2d | 1 | 224 | 15,552 | 7,776 |")
    assert lines[7] == "" and lines[8].startswith("total (canonical): 21,600 FLOPs")
    assert main(argv + ["--format", "csv"]) == 0
    frame = pd.read_csv(StringIO(capsys.readouterr().out), keep_default_na=False)
    assert list(frame["module"]) == ["", "features", "features.0", "features.1", "head"]
    assert frame.loc[frame["depth"] == 2, "flops"].sum() + HEAD["flops"] == frame.loc[0, "flops"] == 21_600


def test_by_module_of_a_single_layer(capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(["conv2d", "in=3", "out=8", "k=3", "--input", "1x3x8x8", "--by-module"], capsys)
    assert [(m["module"], m["module_type"]) for m in doc["modules"]] == [("", "Conv2d")]
    assert pick(doc["modules"][0]) == CONV


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


# --- torchvision and timm names, with stand-in packages -------------------------------------------

TV_MODELS = """
from torch import nn


def resnet18(weights=None, num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))
"""
#: TV_MODELS' resnet18 at 1x3x8x8: conv 4x6x6 outputs x 27 MACs, linear 4 x 10
TV_MACS, TV_PARAMS = 144 * 27 + 40, (4 * 27 + 4) + (40 + 10)


def test_torchvision_names(write_package, capsys: pytest.CaptureFixture[str]) -> None:
    write_package("torchvision", {"torchvision/__init__.py": "from . import models\n",
                                  "torchvision/models/__init__.py": TV_MODELS})
    for name in ("resnet18", "torchvision.models.resnet18", "torchvision:resnet18"):
        doc = run_json(["--model", name, "--input", "1x3x8x8"], capsys)
        assert (doc["totals"]["macs"], doc["totals"]["params"]) == (TV_MACS, TV_PARAMS) == (3_928, 162), name
    model, note = build_model("resnet18")
    assert note is None and all(p.is_meta for p in model.parameters())
    assert main(["count", "--model", "resnet19", "--input", "1x3x8x8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layerbench count: error: model='resnet19' is invalid: expected a torchvision model name, "
                          "or one of: resnet50, mobilenetv2 or vit-b16;")


def test_torchvision_registry(write_package, capsys: pytest.CaptureFixture[str]) -> None:
    """A torchvision with a registry: names go through get_model_builder; list_models sizes the hint."""
    registry = TV_MODELS + textwrap.dedent("""
        def get_model_builder(name):
            if name != "resnet18":
                raise ValueError(f"Unknown model {name}")
            return resnet18


        def list_models():
            return ["resnet18"]
        """)
    write_package("torchvision", {"torchvision/__init__.py": "from . import models\n",
                                  "torchvision/models/__init__.py": registry})
    assert run_json(["--model", "resnet18", "--input", "1x3x8x8"], capsys)["totals"]["macs"] == TV_MACS
    assert main(["count", "--model", "torchvision.models.resnet19", "--input", "1x3x8x8"]) == 2
    assert "expected a torchvision model name (torchvision.models.list_models() lists 1)" in capsys.readouterr().err


def test_timm_names(write_package, capsys: pytest.CaptureFixture[str]) -> None:
    write_package("timm", {"timm/__init__.py": """
        from torch import nn


        def is_model(name):
            return name == "tiny_mlp"


        def create_model(name, pretrained=False):
            assert not pretrained
            return nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
        """})
    doc = run_json(["--model", "timm:tiny_mlp", "--input", "2x3x4"], capsys)
    assert doc["totals"]["macs"] == 2 * 12 * 5 and doc["totals"]["params"] == 12 * 5 + 5
    assert main(["count", "--model", "timm:nosuch", "--input", "2x3x4"]) == 2
    assert ("model='timm:nosuch' is invalid: expected a timm model name after 'timm:' (timm.list_models() lists them)"
            in capsys.readouterr().err)


@pytest.mark.parametrize("name,package", [("resnet18", "torchvision"), ("torchvision.models.resnet18", "torchvision"),
                                          ("timm:resnet50d", "timm")])
def test_a_missing_package_is_one_line(name: str, package: str, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, package, None)        # import fails as if it were not installed
    assert main(["count", "--model", name, "--input", "1x3x8x8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"model={name!r} is invalid: expected " in err
    assert err.rstrip().endswith(f"which needs {package}: pip install {package} (or pip install 'layerbench[models]')")


def test_a_broken_torchvision_is_one_line(write_package, capsys: pytest.CaptureFixture[str]) -> None:
    write_package("torchvision", {"torchvision/__init__.py": "raise RuntimeError('operator torchvision::nms does "
                                                             "not exist')\n"})
    assert main(["count", "--model", "resnet18", "--input", "1x3x8x8"]) == 2
    err = capsys.readouterr().err
    assert err == ("layerbench count: error: model='resnet18' is invalid: expected resnet50, mobilenetv2, vit-b16 or "
                   "a torchvision model name, which needs torchvision to import (it raised RuntimeError: operator "
                   "torchvision::nms does not exist: are torchvision and what it imports built for the installed "
                   "torch?)\n")


# --- every error is one line ----------------------------------------------------------------------

ERRORS = [
    (["--model", "lb_tiny_net:build_net"],
     "input=None is invalid: expected an input shape such as --input 1x3x224x224 for --model lb_tiny_net:build_net "
     "(only resnet50, mobilenetv2, vit-b16 have a default)"),
    (["--model", "resnet-18", "--input", "1x3x8x8"],
     "model='resnet-18' is invalid: expected one of: resnet50, mobilenetv2 or vit-b16; a torchvision model name"),
    (["--model", "lb_no_such_module:build", "--input", "1x3x8x8"],
     "model='lb_no_such_module:build' is invalid: expected an importable module before ':' (ModuleNotFoundError: "
     "No module named 'lb_no_such_module'; run from the folder that holds it, set PYTHONPATH, or give "
     "path/to/file.py)"),
    (["--model", "lb_tiny_net:nope", "--input", "1x3x8x8"],
     "model='lb_tiny_net:nope' is invalid: expected a callable named 'nope' in lb_tiny_net"),
    (["--model", "lb_tiny_net:", "--input", "1x3x8x8"],
     "model='lb_tiny_net:' is invalid: expected module:callable with both parts, e.g. mypkg.models:build_net"),
    (["--model", "lb_tiny_net:not_callable", "--input", "1x3x8x8"],
     "model='lb_tiny_net:not_callable' is invalid: expected a callable after ':' (not_callable is of type int)"),
    (["--model", "lb_tiny_net:build_tensor", "--input", "1x3x8x8"],
     "model='lb_tiny_net:build_tensor' is invalid: expected a callable that returns an nn.Module (it returned a "
     "Tensor)"),
    (["--model", "lb_tiny_net:build_broken", "--input", "1x3x8x8"],
     "model='lb_tiny_net:build_broken' is invalid: expected a model that builds without arguments (calling its "
     "builder raised ValueError: no such width)"),
    (["--model", "lb_raises:build", "--input", "1x3x8x8"],
     "model='lb_raises:build' is invalid: expected a module that imports cleanly (importing lb_raises raised "
     "ZeroDivisionError: division by zero)"),
    (["--model", "{tmp}/lb_raises.py:build", "--input", "1x3x8x8"],
     "model='{tmp}/lb_raises.py:build' is invalid: expected a Python file that imports cleanly (running "
     "{tmp}/lb_raises.py raised ZeroDivisionError: division by zero)"),
    (["--model", "{tmp}/missing.py:build", "--input", "1x3x8x8"],
     "model='{tmp}/missing.py:build' is invalid: expected an existing Python file before ':' ({tmp}/missing.py "
     "is not a file)"),
    (["--model", "lb_tiny_net:build_net", "--input", "1x3x0x8"], "input='1x3x0x8' is invalid"),
    (["--model", "lb_tiny_net:build_net", "--input", "1x3x8x8", "--depth", "2"],
     "depth=2 is invalid: expected --by-module as well (--depth is the depth of its per-module table)"),
    (["--model", "lb_tiny_net:build_net", "--input", "1x3x8x8", "--by-module", "--depth", "-1"],
     "depth=-1 is invalid: expected a module depth of 0 (the model only) or more"),
    (["conv2d", "--model", "lb_tiny_net:build_net", "--input", "1x3x8x8"],
     "layer='conv2d' is invalid: expected no layer when --model is given"),
]


@pytest.mark.parametrize("argv,message", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_every_error_is_one_line(argv: list[str], message: str, tiny: Path, write_package,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    write_package("lb_raises", {"lb_raises.py": "1 / 0\n"})
    tmp = str(tiny.parent)
    assert main(["count", *(a.replace("{tmp}", tmp) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("layerbench count: error: " + message.replace("{tmp}", tmp)), err
