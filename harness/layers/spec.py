"""Layer specs: frozen, validated descriptions of one layer, built into a module on demand.

A spec is checked when it is made (``__post_init__``) and against its input shapes
(:meth:`LayerSpec.check_inputs`) before any tensor exists, so a bad configuration fails
with a :class:`~harness.errors.SpecError` naming the parameter, its value and what was
expected. ``parse_layer("conv2d", ["in=64", "out=128", "k=3"])`` is how the CLI (and
suites) write them; every kind and its keys are listed by ``layerbench count --help``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from harness.errors import SpecError

if TYPE_CHECKING:
    pass

Shape = tuple[int, ...]

# --- value parsers (CLI strings and Python values alike) -----------------------------------


def _int(v: Any, name: str, where: str) -> int:
    """An integer; a float only when it is whole (``47.0``; ``47.5`` is an error, never truncated)."""
    try:
        if isinstance(v, bool):
            raise ValueError
        if isinstance(v, float):
            if not v.is_integer():
                raise ValueError
            return int(v)
        return int(v) if not isinstance(v, str) else int(v, 10)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(name, v, "an integer", where) from None


def _bool(v: Any, name: str, where: str) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise SpecError(name, v, "a boolean (1/0, true/false)", where)


def _ints(v: Any, name: str, where: str) -> tuple[int, ...]:
    if isinstance(v, str):
        parts = v.replace(",", "x").split("x")
        return tuple(_int(p, name, where) for p in parts)
    if isinstance(v, Iterable):
        return tuple(_int(p, name, where) for p in v)
    return (_int(v, name, where),)


def _padding(v: Any, name: str, where: str) -> tuple[int, ...] | str:
    if isinstance(v, str) and v.lower() in ("same", "valid"):
        return v.lower()
    return _ints(v, name, where)


def parse_shape(text: str | Sequence[int], name: str = "input") -> Shape:
    """``"1x64x56x56"`` -> (1, 64, 56, 56); every size must be positive. A bad size is refused with
    the whole shape named (``input='1x64xax56'``), not the size alone."""
    try:
        shape = _ints(text, name, "input")
    except SpecError:
        raise SpecError(name, text, "a shape of positive sizes such as 1x64x56x56") from None
    if not shape or any(s <= 0 for s in shape):
        raise SpecError(name, text, "a shape of positive sizes such as 1x64x56x56")
    return shape


def _param(*keys: str, parse: Callable[[Any, str, str], Any], default: Any = None,
           doc: str = "") -> Any:
    return field(default=default, metadata={"keys": keys, "parse": parse, "doc": doc})


def _expand(value: tuple[int, ...], dims: int, name: str, where: str) -> tuple[int, ...]:
    if len(value) == 1:
        return value * dims
    if len(value) != dims:
        raise SpecError(name, value, f"1 or {dims} values for a {dims}-d layer", where)
    return value


def _positive(values: Iterable[int], name: str, where: str, minimum: int = 1) -> None:
    for v in values:
        if v < minimum:
            word = "positive" if minimum == 1 else f">= {minimum}"
            raise SpecError(name, v, f"a {word} integer", where)


# --- the registry of layer kinds --------------------------------------------------------------

LAYERS: dict[str, type[LayerSpec]] = {}


def layer(*names: str) -> Callable[[type], type]:
    """Class decorator: register a spec under one or more kind names."""
    def deco(cls: type) -> type:
        for n in names:
            if n in LAYERS:
                raise RuntimeError(f"duplicate layer kind {n!r}")
            LAYERS[n] = cls
        return cls
    return deco


@dataclass(frozen=True)
class LayerSpec:
    """Base of every spec: ``kind`` names the layer; subclasses add their parameters."""

    kind: str

    @classmethod
    def keys(cls) -> dict[str, str]:
        """CLI key -> field name."""
        out = {}
        for f in fields(cls):
            for k in f.metadata.get("keys", ()):
                out[k] = f.name
        return out

    def canonical(self) -> dict[str, Any]:
        """Every parameter under its field name, defaults included: the layer's identity, whatever
        spelling (``g`` or ``groups``, ``k=3`` or ``kernel_size=3x3``) made it."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "kind"}

    def _required(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) is None:
                raise SpecError(name, None, "a value (it has no default)", self.kind)

    def default_inputs(self, batch: int = 1) -> list[Shape] | None:
        """Input shapes when the spec alone determines them (attention, matmul); else None."""
        return None

    def has_parameters(self) -> bool:
        """Whether the module it builds holds parameters (a weight gradient exists); its inputs always
        take a gradient (layers run in floating point). ``tests/test_spec.py`` checks every kind against
        the module ``harness.layers.modules`` builds."""
        return False

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        """Raise SpecError if ``shapes`` cannot feed this layer."""

    def inputs(self, shapes: Sequence[Shape] | None, batch: int = 1) -> list[Shape]:
        if not shapes:
            shapes = self.default_inputs(batch)
            if shapes is None:
                raise SpecError("input", None, f"an input shape for {self.kind}, e.g. --input 1x64x56x56",
                                self.kind)
        shapes = [parse_shape(s) for s in shapes]
        self.check_inputs(shapes)
        return shapes

    def _bad_input(self, shapes: Shape | Sequence[Shape], expected: str) -> SpecError:
        """The error for unusable input shapes: one shape as ``1x64x56x56``, several as a list."""
        if shapes and isinstance(shapes[0], int):
            value: str | list[str] = _shape_text(shapes)  # type: ignore[arg-type]
        else:
            value = [_shape_text(s) for s in shapes]  # type: ignore[union-attr]
        return SpecError("input", value, expected, self.kind)

    def _need(self, shapes: Sequence[Shape], count: int) -> None:
        if len(shapes) != count:
            raise self._bad_input(shapes, f"{count} input shape(s) for {self.kind}")

    def _rank(self, shape: Shape, rank: int, what: str) -> None:
        if len(shape) != rank:
            raise self._bad_input(shape, f"a {rank}-d {what} shape")


def _shape_text(shape: Shape) -> str:
    return "x".join(map(str, shape))


def _spatial_dims(kind: str) -> int:
    return int(kind[-2]) if kind[-1] == "d" and kind[-2].isdigit() else 0


# --- convolution ---------------------------------------------------------------------------------

@layer("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
@dataclass(frozen=True)
class ConvSpec(LayerSpec):
    """Conv1d/2d/3d and ConvTranspose1d/2d/3d (``torch.nn`` semantics)."""

    in_channels: int = _param("in", "in_channels", parse=_int, doc="input channels")
    out_channels: int = _param("out", "out_channels", parse=_int, doc="output channels")
    kernel_size: tuple[int, ...] = _param("k", "kernel", "kernel_size", parse=_ints, doc="kernel, 3 or 3x3")
    stride: tuple[int, ...] = _param("s", "stride", parse=_ints, default=(1,))
    padding: tuple[int, ...] | str = _param("p", "padding", parse=_padding, default=(0,),
                                            doc="int, tuple, same or valid")
    dilation: tuple[int, ...] = _param("d", "dilation", parse=_ints, default=(1,))
    groups: int = _param("g", "groups", parse=_int, default=1)
    bias: bool = _param("bias", parse=_bool, default=True)
    output_padding: tuple[int, ...] = _param("op", "output_padding", parse=_ints, default=(0,),
                                             doc="conv-transpose only")

    @property
    def transposed(self) -> bool:
        return self.kind.startswith("conv_transpose")

    @property
    def ndim(self) -> int:
        return _spatial_dims(self.kind)

    def __post_init__(self) -> None:
        k, n = self.kind, self.ndim
        self._required("in_channels", "out_channels", "kernel_size")
        _positive([self.in_channels], "in_channels", k)
        _positive([self.out_channels], "out_channels", k)
        _positive([self.groups], "groups", k)
        object.__setattr__(self, "kernel_size", _expand(self.kernel_size, n, "kernel_size", k))
        object.__setattr__(self, "stride", _expand(self.stride, n, "stride", k))
        object.__setattr__(self, "dilation", _expand(self.dilation, n, "dilation", k))
        object.__setattr__(self, "output_padding", _expand(self.output_padding, n, "output_padding", k))
        if not isinstance(self.padding, str):
            object.__setattr__(self, "padding", _expand(self.padding, n, "padding", k))
            _positive(self.padding, "padding", k, minimum=0)
        _positive(self.kernel_size, "kernel_size", k)
        _positive(self.stride, "stride", k)
        _positive(self.dilation, "dilation", k)
        _positive(self.output_padding, "output_padding", k, minimum=0)
        for name, ch in (("in_channels", self.in_channels), ("out_channels", self.out_channels)):
            if ch % self.groups:
                raise SpecError("groups", self.groups, f"a divisor of {name}={ch}", k)
        if self.transposed:
            if isinstance(self.padding, str):
                raise SpecError("padding", self.padding, "integers for a transposed convolution", k)
            for op, s, d in zip(self.output_padding, self.stride, self.dilation):
                if op >= max(s, d):
                    raise SpecError("output_padding", self.output_padding,
                                    f"values smaller than stride or dilation (max {max(s, d) - 1})", k)
        elif any(self.output_padding):
            raise SpecError("output_padding", self.output_padding, "0 for a (non-transposed) convolution", k)
        if self.padding == "same" and any(s != 1 for s in self.stride):
            raise SpecError("padding", "same", f"stride 1 (got stride={self.stride}); torch has no "
                                               "'same' padding for strided convolutions", k)

    def has_parameters(self) -> bool:
        return True

    def effective_kernel(self) -> tuple[int, ...]:
        """Dilated kernel extent d*(k-1)+1 per dim."""
        return tuple(d * (kk - 1) + 1 for kk, d in zip(self.kernel_size, self.dilation))

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        self._need(shapes, 1)
        (x,) = shapes
        self._rank(x, self.ndim + 2, "(N, C, *spatial)")
        if x[1] != self.in_channels:
            raise self._bad_input(x, f"{self.in_channels} channels in dim 1 (in_channels={self.in_channels})")
        if self.transposed:
            # out = (in - 1) * s - 2p + d * (k - 1) + output_padding + 1 (torch.nn.ConvTranspose docs)
            for size, s, p, eff, op in zip(x[2:], self.stride, self.padding, self.effective_kernel(),
                                           self.output_padding):
                out = (size - 1) * s - 2 * p + eff + op
                if out <= 0:
                    raise SpecError("padding", self.padding,
                                    f"a padding that leaves a positive output size (got {out} from input {size})",
                                    self.kind)
            return
        pads = (0,) * self.ndim if self.padding == "valid" else (
            tuple((e - 1) // 2 for e in self.effective_kernel()) if self.padding == "same" else self.padding)
        for size, pad, eff in zip(x[2:], pads, self.effective_kernel()):
            if self.padding != "same" and eff > size + 2 * pad:
                raise SpecError("kernel_size", self.kernel_size,
                                f"a dilated kernel ({eff}) no larger than the padded input "
                                f"({size} + 2x{pad} = {size + 2 * pad})", self.kind)


# --- linear and matmul ------------------------------------------------------------------------------

@layer("linear")
@dataclass(frozen=True)
class LinearSpec(LayerSpec):
    """nn.Linear on an input of any rank (the last dim is ``in``)."""

    in_features: int = _param("in", "in_features", parse=_int)
    out_features: int = _param("out", "out_features", parse=_int)
    bias: bool = _param("bias", parse=_bool, default=True)

    def __post_init__(self) -> None:
        self._required("in_features", "out_features")
        _positive([self.in_features], "in_features", self.kind)
        _positive([self.out_features], "out_features", self.kind)

    def has_parameters(self) -> bool:
        return True

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        self._need(shapes, 1)
        if shapes[0][-1] != self.in_features:
            raise self._bad_input(shapes[0], f"last dim = in_features ({self.in_features})")


@layer("matmul", "mm", "bmm", "einsum")
@dataclass(frozen=True)
class MatmulSpec(LayerSpec):
    """[batch,] m x k @ k x n through torch.matmul / mm / bmm / einsum."""

    m: int = _param("m", parse=_int)
    n: int = _param("n", parse=_int)
    k: int = _param("k", parse=_int)
    batch: int = _param("batch", "b", parse=_int, default=1)

    def __post_init__(self) -> None:
        self._required("m", "n", "k")
        for name in ("m", "n", "k", "batch"):
            _positive([getattr(self, name)], name, self.kind)

    def default_inputs(self, batch: int = 1) -> list[Shape]:
        if self.kind == "mm":
            return [(self.m, self.k), (self.k, self.n)]
        return [(self.batch, self.m, self.k), (self.batch, self.k, self.n)]

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        self._need(shapes, 2)
        a, b = shapes
        if a[-1] != b[-2 if len(b) > 1 else 0]:
            raise self._bad_input(shapes, "inner dimensions that match (a[-1] == b[-2])")


# --- normalisation ----------------------------------------------------------------------------------

@layer("batchnorm1d", "batchnorm2d", "batchnorm3d", "instancenorm1d", "instancenorm2d",
       "instancenorm3d", "layernorm", "groupnorm")
@dataclass(frozen=True)
class NormSpec(LayerSpec):
    """BatchNorm (eval or train), InstanceNorm, LayerNorm (over the last ``c`` features),
    GroupNorm (``groups`` groups of ``c`` channels)."""

    channels: int = _param("c", "channels", "num_features", parse=_int)
    groups: int = _param("groups", "g", parse=_int, default=1)
    affine: bool = _param("affine", parse=_bool, default=True)
    train: bool = _param("train", "training", parse=_bool, default=False)

    def __post_init__(self) -> None:
        self._required("channels")
        _positive([self.channels], "channels", self.kind)
        _positive([self.groups], "groups", self.kind)
        if self.kind == "groupnorm" and self.channels % self.groups:
            raise SpecError("groups", self.groups, f"a divisor of channels={self.channels}", self.kind)

    def has_parameters(self) -> bool:
        return self.affine

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        self._need(shapes, 1)
        x = shapes[0]
        if self.kind == "layernorm":
            if x[-1] != self.channels:
                raise self._bad_input(x, f"last dim = c ({self.channels})")
            return
        dims = _spatial_dims(self.kind)
        if dims:
            self._rank(x, dims + 2, "(N, C, *spatial)")
        if x[1] != self.channels:
            raise self._bad_input(x, f"{self.channels} channels in dim 1")
        if self.kind.startswith("batchnorm") and self.train and x[0] * (x[2] if len(x) > 2 else 1) < 2:
            raise self._bad_input(x, "more than one value per channel in training")


# --- activations, softmax, elementwise, zero-cost layers -------------------------------------------------

#: Parameter-free layers by kind (``harness.layers.modules`` builds each as its ``torch.nn`` class).
ACTIVATIONS = ("relu", "relu6", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "hardswish", "leaky_relu",
               "flatten", "dropout", "identity")


@layer(*ACTIVATIONS)
@dataclass(frozen=True)
class ActivationSpec(LayerSpec):
    """Parameter-free elementwise layers (and Flatten, Dropout in eval, Identity: zero cost)."""

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        self._need(shapes, 1)


@layer("softmax")
@dataclass(frozen=True)
class SoftmaxSpec(LayerSpec):
    dim: int = _param("dim", parse=_int, default=-1)

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        self._need(shapes, 1)
        if not -len(shapes[0]) <= self.dim < len(shapes[0]):
            raise SpecError("dim", self.dim, f"a dim of the {len(shapes[0])}-d input", self.kind)


@layer("add", "mul")
@dataclass(frozen=True)
class ElementwiseSpec(LayerSpec):
    """x + y or x * y (a residual connection); one --input shape is used for both operands."""

    def inputs(self, shapes: Sequence[Shape] | None, batch: int = 1) -> list[Shape]:
        if shapes and len(shapes) == 1:
            shapes = [shapes[0], shapes[0]]
        return super().inputs(shapes, batch)

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        self._need(shapes, 2)
        try:
            import numpy  # deferred: only broadcastable shapes need it; specs load without numpy (count --help)
            numpy.broadcast_shapes(*shapes)      # torch's imports sympy (0.5 s) for the same rule
        except ValueError:
            raise self._bad_input(shapes, "broadcastable shapes") from None


# --- pooling ----------------------------------------------------------------------------------------

@layer("maxpool1d", "maxpool2d", "maxpool3d", "avgpool1d", "avgpool2d", "avgpool3d")
@dataclass(frozen=True)
class PoolSpec(LayerSpec):
    kernel_size: tuple[int, ...] = _param("k", "kernel", "kernel_size", parse=_ints)
    stride: tuple[int, ...] | None = _param("s", "stride", parse=_ints, default=None, doc="default: k")
    padding: tuple[int, ...] = _param("p", "padding", parse=_ints, default=(0,))

    def __post_init__(self) -> None:
        n, k = _spatial_dims(self.kind), self.kind
        self._required("kernel_size")
        object.__setattr__(self, "kernel_size", _expand(self.kernel_size, n, "kernel_size", k))
        object.__setattr__(self, "stride", _expand(self.stride or self.kernel_size, n, "stride", k))
        object.__setattr__(self, "padding", _expand(self.padding, n, "padding", k))
        _positive(self.kernel_size, "kernel_size", k)
        _positive(self.stride, "stride", k)
        for p, kk in zip(self.padding, self.kernel_size):
            if p < 0 or p > kk // 2:
                raise SpecError("padding", self.padding, f"0 to half the kernel ({kk // 2})", k)

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        self._need(shapes, 1)
        x = shapes[0]
        n = _spatial_dims(self.kind)
        self._rank(x, n + 2, "(N, C, *spatial)")
        for size, p, kk in zip(x[2:], self.padding, self.kernel_size):
            if kk > size + 2 * p:
                raise SpecError("kernel_size", self.kernel_size,
                                f"a kernel no larger than the padded input ({size} + 2x{p})", self.kind)


@layer("adaptiveavgpool1d", "adaptiveavgpool2d", "adaptiveavgpool3d", "adaptivemaxpool1d",
       "adaptivemaxpool2d", "adaptivemaxpool3d")
@dataclass(frozen=True)
class AdaptivePoolSpec(LayerSpec):
    output_size: tuple[int, ...] = _param("out", "output_size", parse=_ints, default=(1,))

    def __post_init__(self) -> None:
        n = _spatial_dims(self.kind)
        object.__setattr__(self, "output_size", _expand(self.output_size, n, "output_size", self.kind))
        _positive(self.output_size, "output_size", self.kind)

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        self._need(shapes, 1)
        self._rank(shapes[0], _spatial_dims(self.kind) + 2, "(N, C, *spatial)")


# --- attention --------------------------------------------------------------------------------------

@layer("sdpa")
@dataclass(frozen=True)
class SDPASpec(LayerSpec):
    """F.scaled_dot_product_attention on [batch, heads, seq, head_dim] query/key/value."""

    heads: int = _param("heads", "h", parse=_int, default=8)
    seq: int = _param("seq", "s", parse=_int, default=512)
    seq_k: int | None = _param("seq_k", parse=_int, default=None, doc="default: seq")
    head_dim: int = _param("head_dim", "d", parse=_int, default=64)
    batch: int = _param("batch", "b", parse=_int, default=1)
    causal: bool = _param("causal", parse=_bool, default=False)

    def __post_init__(self) -> None:
        for name in ("heads", "seq", "head_dim", "batch"):
            _positive([getattr(self, name)], name, self.kind)
        if self.seq_k is not None:
            _positive([self.seq_k], "seq_k", self.kind)

    def default_inputs(self, batch: int = 1) -> list[Shape]:
        q = (self.batch, self.heads, self.seq, self.head_dim)
        kv = (self.batch, self.heads, self.seq_k or self.seq, self.head_dim)
        return [q, kv, kv]

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        self._need(shapes, 3)
        q, k, v = shapes
        for s in shapes:
            self._rank(s, 4, "[batch, heads, seq, head_dim]")
        if q[-1] != k[-1] or k[-2] != v[-2] or q[0] != k[0]:
            raise self._bad_input(shapes, "q, k sharing head_dim and k, v sharing seq")


@layer("mha")
@dataclass(frozen=True)
class MHASpec(LayerSpec):
    """nn.MultiheadAttention(embed, heads, batch_first=True) as self-attention on [batch, seq, embed]."""

    embed_dim: int = _param("embed", "embed_dim", "e", parse=_int, default=512)
    heads: int = _param("heads", "h", parse=_int, default=8)
    seq: int = _param("seq", "s", parse=_int, default=128)
    batch: int = _param("batch", "b", parse=_int, default=1)
    bias: bool = _param("bias", parse=_bool, default=True)
    causal: bool = _param("causal", parse=_bool, default=False)

    def __post_init__(self) -> None:
        for name in ("embed_dim", "heads", "seq", "batch"):
            _positive([getattr(self, name)], name, self.kind)
        if self.embed_dim % self.heads:
            raise SpecError("heads", self.heads, f"a divisor of embed_dim={self.embed_dim}", self.kind)

    def has_parameters(self) -> bool:
        return True

    def default_inputs(self, batch: int = 1) -> list[Shape]:
        return [(self.batch, self.seq, self.embed_dim)]

    def check_inputs(self, shapes: Sequence[Shape]) -> None:
        self._need(shapes, 1)
        self._rank(shapes[0], 3, "[batch, seq, embed]")
        if shapes[0][-1] != self.embed_dim:
            raise self._bad_input(shapes[0], f"last dim = embed ({self.embed_dim})")


# --- parsing ------------------------------------------------------------------------------------------

def parse_layer(kind: str, params: Sequence[str] | dict[str, Any] = ()) -> LayerSpec:
    """Build a spec from ``kind`` and ``key=value`` tokens (or a dict), validating everything.

    >>> parse_layer("conv2d", ["in=64", "out=128", "k=3", "s=2", "p=1"]).stride
    (2, 2)
    """
    kind_key = kind.lower().replace("-", "_")
    kind_key = {"convtranspose1d": "conv_transpose1d", "convtranspose2d": "conv_transpose2d",
                "convtranspose3d": "conv_transpose3d"}.get(kind_key, kind_key)
    if kind_key not in LAYERS:
        raise SpecError("layer", kind, "one of " + ", ".join(sorted(LAYERS)))
    cls = LAYERS[kind_key]
    if isinstance(params, dict):
        items = list(params.items())
    else:
        items = []
        for token in params:
            if "=" not in token:
                raise SpecError("parameter", token, "key=value (e.g. k=3)", kind_key)
            key, value = token.split("=", 1)
            items.append((key.strip(), value.strip()))
    keys = cls.keys()
    by_field = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in items:
        name = keys.get(key) or (key if key in by_field and key != "kind" else None)
        if name is None:
            raise SpecError(key, value, f"a parameter of {kind_key}: " + ", ".join(sorted(keys)), kind_key)
        values[name] = by_field[name].metadata["parse"](value, key, kind_key)
    return cls(kind=kind_key, **values)
