"""Bad input: one clear error naming the parameter, its value and what was expected."""

from __future__ import annotations

import pytest
import torch

import harness
from harness.errors import SpecError
from harness.layers.dtypes import dtype_name, itemsize, parse_dtype
from harness.layers.modules import build_case
from harness.layers.spec import parse_layer, parse_shape


@pytest.mark.parametrize("kind,params,inputs,field,expected", [
    ("conv2d", ["in=64", "out=128", "k=3", "g=3"], None, "groups", "a divisor of in_channels=64"),
    ("conv2d", ["in=64", "out=66", "k=3", "g=4"], None, "groups", "a divisor of out_channels=66"),
    ("conv2d", ["in=8", "out=8", "k=7"], ["1x8x5x5"], "kernel_size", "no larger than the padded input"),
    ("conv2d", ["in=8", "out=8", "k=3", "d=3"], ["1x8x6x6"], "kernel_size", "dilated kernel (7)"),
    ("conv2d", ["in=0", "out=8", "k=3"], None, "in_channels", "a positive integer"),
    ("conv2d", ["in=8", "out=-1", "k=3"], None, "out_channels", "a positive integer"),
    ("conv2d", ["in=8", "out=8", "k=3", "s=0"], None, "stride", "a positive integer"),
    ("conv2d", ["in=8", "out=8", "k=3", "p=-1"], None, "padding", "a >= 0 integer"),
    ("conv2d", ["in=8", "out=8", "k=3x3x3"], None, "kernel_size", "1 or 2 values"),
    ("conv2d", ["in=8", "out=8", "k=3", "s=2", "p=same"], None, "padding", "stride 1"),
    ("conv2d", ["in=8", "out=8"], None, "kernel_size", "no default"),
    ("conv2d", ["in=8", "out=8", "k=three"], None, "k", "an integer"),
    ("conv2d", ["in=8", "out=8", "k=3", "colour=red"], None, "colour", "a parameter of conv2d"),
    ("conv2d", ["in=8", "out=8", "k=3"], ["1x4x9x9"], "input", "8 channels in dim 1"),
    ("conv2d", ["in=8", "out=8", "k=3"], ["8x9x9"], "input", "a 4-d"),
    ("conv2d", ["in=8", "out=8", "k=3"], None, "input", "an input shape for conv2d"),
    ("conv_transpose2d", ["in=8", "out=8", "k=3", "s=2", "op=2"], None, "output_padding",
     "smaller than stride or dilation"),
    ("conv2d", ["in=8", "out=8", "k=3", "op=1"], None, "output_padding", "0 for a (non-transposed)"),
    ("conv_transpose1d", ["in=1", "out=1", "k=1", "p=2"], ["1x1x4"], "padding", "positive output size (got 0"),
    ("linear", ["in=16", "out=4"], ["2x8"], "input", "last dim = in_features (16)"),
    ("linear", ["in=16"], None, "out_features", "no default"),
    ("groupnorm", ["c=10", "groups=4"], None, "groups", "a divisor of channels=10"),
    ("mha", ["embed=10", "heads=4"], None, "heads", "a divisor of embed_dim=10"),
    ("maxpool2d", ["k=3", "p=2"], None, "padding", "0 to half the kernel"),
    ("maxpool2d", ["k=5"], ["1x1x3x3"], "kernel_size", "no larger than the padded input"),
    ("matmul", ["m=4", "n=4", "k=4"], ["4x5", "4x4"], "input", "inner dimensions"),
    ("sdpa", ["heads=0"], None, "heads", "a positive integer"),
    ("softmax", ["dim=3"], ["2x2"], "dim", "a dim of the 2-d input"),
    ("add", [], ["2x3", "4x5"], "input", "broadcastable"),
    ("conv9d", [], None, "layer", "one of"),
    ("conv2d", ["k3"], None, "parameter", "key=value"),
])
def test_bad_input_names_field_value_and_expectation(kind: str, params: list[str], inputs: list[str] | None,
                                                     field: str, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        spec = parse_layer(kind, params)
        build_case(spec, inputs)
    assert err.value.field == field
    assert expected in str(err.value)
    assert f"{field}=" in str(err.value)


def test_errors_come_before_any_tensor_is_allocated(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a tensor was allocated")

    spec = parse_layer("conv2d", ["in=8", "out=8", "k=9"])
    monkeypatch.setattr(torch.nn.Conv2d, "__init__", boom)
    with pytest.raises(SpecError):
        spec.inputs([(1, 8, 4, 4)])


@pytest.mark.parametrize("text", ["1x0x3", "axb", "-1x3", "", "1x64xax56"])
def test_bad_shapes(text: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_shape(text)
    assert err.value.field == "input"
    assert f"input={text!r} is invalid: expected a shape of positive sizes such as 1x64x56x56" in str(err.value)


def test_count_rejects_bad_shape_and_dtype() -> None:
    with pytest.raises(SpecError, match="inputs\\[0\\]"):
        harness.count(torch.nn.ReLU(), (2, 0))
    with pytest.raises(SpecError, match="dtype='fp8'"):
        harness.count(torch.nn.ReLU(), (2, 2), dtype="fp8")
    with pytest.raises(SpecError, match="convention='flops'"):
        harness.count(torch.nn.ReLU(), (2, 2), convention="flops")


def test_dtypes() -> None:
    assert parse_dtype("bfloat16") is torch.bfloat16 and dtype_name(torch.float16) == "fp16"
    assert [itemsize(parse_dtype(d)) for d in ("fp32", "fp16", "bf16", "fp64", "int8")] == [4, 2, 2, 8, 1]


def test_spec_values_normalised() -> None:
    spec = parse_layer("conv2d", {"in": 4, "out": 8, "k": "3x5", "s": 2, "p": "same" if False else 1})
    assert (spec.kernel_size, spec.stride, spec.padding, spec.groups) == ((3, 5), (2, 2), (1, 1), 1)
    assert parse_layer("convtranspose2d", ["in=4", "out=4", "k=2", "s=2"]).transposed
    with pytest.raises(dataclasses_frozen()):
        spec.groups = 2  # type: ignore[misc]


def dataclasses_frozen() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError
