"""The ``torch.nn`` module each layer spec builds: one builder per spec class, registered by
decorator (as ``torch.utils.flop_counter`` registers one formula per op).

Kept apart from :mod:`harness.layers.spec` so that parsing and validating a layer (suite files,
``layerbench count --help``) never imports torch; ``LayerSpec.build`` calls :func:`build_module`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.layers import spec as s
from harness.layers.dtypes import parse_dtype
from harness.layers.spec import LayerSpec, Shape, parse_shape

Builder = Callable[..., nn.Module]
#: Spec class -> its builder ``(spec, dtype, device) -> nn.Module``.
BUILDERS: dict[type[s.LayerSpec], Builder] = {}


def builds(cls: type[s.LayerSpec]) -> Callable[[Builder], Builder]:
    """Decorator: register the builder of one spec class."""
    def deco(fn: Builder) -> Builder:
        BUILDERS[cls] = fn
        return fn
    return deco


def build_module(spec: s.LayerSpec, dtype: torch.dtype, device: str | torch.device = "meta") -> nn.Module:
    """``spec`` as a module with its parameters in ``dtype`` on ``device``."""
    for cls in type(spec).__mro__:
        if cls in BUILDERS:
            return BUILDERS[cls](spec, dtype, device)
    raise NotImplementedError(f"no module builder for {type(spec).__name__}")


class Fn(nn.Module):
    """A parameter-free layer wrapping a function of its inputs."""

    def __init__(self, fn: Callable[..., torch.Tensor], name: str) -> None:
        super().__init__()
        self.fn, self.name = fn, name

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)

    def extra_repr(self) -> str:
        return self.name


class SelfAttention(nn.Module):
    """nn.MultiheadAttention used as self-attention, returning the attention weights too."""

    def __init__(self, mha: nn.MultiheadAttention, causal: bool) -> None:
        super().__init__()
        self.attn, self.causal = mha, causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = None
        if self.causal:
            n = x.shape[1]
            mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        out, _ = self.attn(x, x, x, attn_mask=mask, need_weights=True)
        return out


MATMULS: dict[str, Callable[..., torch.Tensor]] = {
    "matmul": torch.matmul,
    "mm": torch.mm,
    "bmm": torch.bmm,
    "einsum": lambda a, b: torch.einsum("...mk,...kn->...mn", a, b),
}
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU("tanh"),
    "silu": nn.SiLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "hardswish": nn.Hardswish,
    "leaky_relu": nn.LeakyReLU, "flatten": nn.Flatten, "dropout": nn.Dropout, "identity": nn.Identity,
}
assert tuple(ACTIVATIONS) == s.ACTIVATIONS, "harness.layers.spec.ACTIVATIONS and this table name the same kinds"


@builds(s.ConvSpec)
def _conv(spec: s.ConvSpec, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    n = spec.ndim
    common = dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=spec.groups,
                  bias=spec.bias, device=device, dtype=dtype)
    if spec.transposed:
        cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[n - 1]
        return cls(spec.in_channels, spec.out_channels, spec.kernel_size,
                   output_padding=spec.output_padding, **common)
    cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[n - 1]
    return cls(spec.in_channels, spec.out_channels, spec.kernel_size, **common)


@builds(s.LinearSpec)
def _linear(spec: s.LinearSpec, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    return nn.Linear(spec.in_features, spec.out_features, spec.bias, device=device, dtype=dtype)


@builds(s.MatmulSpec)
def _matmul(spec: s.MatmulSpec, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    return Fn(MATMULS[spec.kind], spec.kind)


@builds(s.NormSpec)
def _norm(spec: s.NormSpec, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    kw = dict(device=device, dtype=dtype)
    if spec.kind == "layernorm":
        m = nn.LayerNorm(spec.channels, elementwise_affine=spec.affine, **kw)
    elif spec.kind == "groupnorm":
        m = nn.GroupNorm(spec.groups, spec.channels, affine=spec.affine, **kw)
    else:
        cls = getattr(nn, {"b": "BatchNorm", "i": "InstanceNorm"}[spec.kind[0]] + spec.kind[-2:])
        m = cls(spec.channels, affine=spec.affine, **kw)
    return m.train(spec.train)


@builds(s.ActivationSpec)
def _activation(spec: s.ActivationSpec, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    return ACTIVATIONS[spec.kind]().eval()


@builds(s.SoftmaxSpec)
def _softmax(spec: s.SoftmaxSpec, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    return nn.Softmax(spec.dim)


@builds(s.ElementwiseSpec)
def _elementwise(spec: s.ElementwiseSpec, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    return Fn(torch.add if spec.kind == "add" else torch.mul, spec.kind)


@builds(s.PoolSpec)
def _pool(spec: s.PoolSpec, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    cls = getattr(nn, ("MaxPool" if spec.kind.startswith("max") else "AvgPool") + spec.kind[-2:])
    return cls(spec.kernel_size, spec.stride, spec.padding)


@builds(s.AdaptivePoolSpec)
def _adaptive_pool(spec: s.AdaptivePoolSpec, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    kind = "AdaptiveMaxPool" if "max" in spec.kind else "AdaptiveAvgPool"
    return getattr(nn, kind + spec.kind[-2:])(spec.output_size)


@builds(s.SDPASpec)
def _sdpa(spec: s.SDPASpec, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    causal = spec.causal
    return Fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
              f"sdpa(is_causal={causal})")


@builds(s.MHASpec)
def _mha(spec: s.MHASpec, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    mha = nn.MultiheadAttention(spec.embed_dim, spec.heads, bias=spec.bias, batch_first=True,
                                device=device, dtype=dtype)
    return SelfAttention(mha, spec.causal).eval()


def build_case(spec: LayerSpec, inputs: Sequence[Shape | str] | None = None, dtype: str | torch.dtype = "fp32",
               device: str = "meta") -> tuple[nn.Module, list[Shape], torch.dtype]:
    """Validated (module, input shapes, dtype) for counting or timing a spec."""
    torch_dtype = parse_dtype(dtype)
    shapes = spec.inputs([parse_shape(s) for s in inputs] if inputs else None)
    return build_module(spec, torch_dtype, device), shapes, torch_dtype
