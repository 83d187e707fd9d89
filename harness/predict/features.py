"""The efficiency model's features: what the analytic side already knows of a row, as numbers.

From the counts: FLOPs, bytes read and written, the working set, intensity, parameters and output
elements (log2). From the layer's canonical config and input shapes: batch, channels in and out,
channel groups and channels per group, kernel size, stride, padding, dilation, heads, head size,
sequence length, causal, GEMM sides, spatial size, and the SIMD blocking the channels per group and
the innermost input size allow (the largest power of two up to 16 dividing them). From the row:
layout, threads, ATen ops and launches, the implementation that ran (the ATen kernel and the main
oneDNN primitive) and its reorders. From the roofline (``harness.predict.roofline``): the roofline
time (log2), each bound's share of it, and which bound it is. Categorical features (layer kind, op
class, implementation, bound, layout) stay words here; the model codes them with the vocabulary it
learned.

Op classes (``op_class``) group layer kinds the way Habitat groups kernels: ``conv``, ``gemm`` and
``attention`` run kernels whose efficiency depends on their shape; ``norm``, ``pool``,
``softmax`` and ``elementwise`` stream memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from harness import record as R
from harness.predict.roofline import launches, num, roofline

#: Bytes per element of the stored dtype words (features only; no torch import here).
ITEMSIZE = {"fp64": 8, "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "int8": 1}
#: Op classes whose kernels' efficiency depends on their shape (the rest stream memory).
SHAPED = ("conv", "gemm", "attention")


def op_class(layer: object) -> str:
    """The op class of a layer kind: ``conv``, ``gemm``, ``attention``, ``norm``, ``pool``,
    ``softmax`` or ``elementwise``."""
    name = str(layer)
    if name.startswith("conv"):
        return "conv"
    if name in ("linear", "mm", "bmm", "matmul", "einsum"):
        return "gemm"
    if name in ("sdpa", "mha"):
        return "attention"
    if "norm" in name:
        return "norm"
    if "pool" in name:
        return "pool"
    if name == "softmax":
        return "softmax"
    return "elementwise"


#: Numeric features, in the order the model sees them.
NUMERIC = ("log_flops", "log_bytes_read", "log_bytes_written", "log_working_set", "log_intensity", "log_params",
           "log_out_elems", "log_in_elems", "batch", "c_in", "c_out", "groups", "ch_per_group", "kernel", "stride",
           "padding", "dilation", "heads", "head_dim", "seq", "causal", "gemm_m", "gemm_n", "gemm_k", "spatial",
           "align_group", "align_last", "threads", "aten_ops", "launches", "reorders", "log_roof_s", "compute_share",
           "memory_share", "launch_share")
#: Categorical features (words; the model codes them).
CATEGORICAL = ("layer", "op_class", "implementation", "bound", "layout")
FEATURES = NUMERIC + CATEGORICAL


def _config(text: object) -> dict[str, Any]:
    try:
        v = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def _prod(v: object) -> float:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
        return float(np.prod(v))
    return np.nan


def _first(cfg: Mapping[str, Any], *keys: str) -> float:
    for k in keys:
        if cfg.get(k) is not None:
            return _prod(cfg[k])
    return np.nan


def _shapes(text: object) -> list[list[int]]:
    if not isinstance(text, str) or not text:
        return []
    try:
        return [[int(x) for x in s.split("x")] for s in text.split(";") if s]
    except ValueError:
        return []


def implementation(row: Mapping[str, Any]) -> str | None:
    """What ran, as one word: the longest-running ATen implementation (or kernel) and the main oneDNN
    primitive (``aten::mkldnn_convolution|convolution:jit_1x1:avx2``); ``None`` when not recorded."""
    kernels = row.get(R.KERNELS)
    first = str(kernels).split(";")[0] if isinstance(kernels, str) and kernels else ""
    prims = row.get(R.ONEDNN_PRIMITIVES)
    main = ""
    if isinstance(prims, str) and prims:
        parts = [p.rsplit(" x", 1)[0] for p in prims.split(";")]
        main = next((p for p in parts if not p.startswith("reorder")), parts[0])
    text = "|".join(p for p in (first, main) if p)
    return text or None


def _pow2(v: float, most: int = 16) -> float:
    """The largest power of two up to ``most`` dividing ``v`` (the SIMD blocking a size allows: 8 fp32
    lanes in AVX2, 16 in AVX-512); NaN for no size."""
    if not math.isfinite(v) or v <= 0 or v != int(v):
        return np.nan
    n = 1
    while n < most and int(v) % (2 * n) == 0:
        n *= 2
    return float(n)


def regimes(row: Mapping[str, Any]) -> list[str]:
    """The keys under which a layer's implementation is looked up when it has not run, most specific
    first: layer kind and layout; for convolutions whether it is 1x1, strided, grouped or depthwise and
    how its channels per group block (a multiple of 8 or 16 lets oneDNN use its blocked kernels; other
    counts fall back to a GEMM-based one)."""
    layer, fmt = str(row.get(R.LAYER)), str(row.get(R.MEMORY_FORMAT))
    base = f"{layer}|{fmt}"
    if not layer.startswith("conv"):
        return [base]
    cfg = _config(row.get(R.CONFIG))
    g, cin, cout = _first(cfg, "groups"), _first(cfg, "in_channels"), _first(cfg, "out_channels")
    kind = "depthwise" if g > 1 and g == cin else "grouped" if g > 1 else "dense"
    shape = f"{base}|{kind}|{'1x1' if _first(cfg, 'kernel_size') == 1 else 'kxk'}|" \
            f"{'strided' if _first(cfg, 'stride') > 1 else 'unit'}"
    per = min(_pow2(cin / (g if g > 0 else 1)), _pow2(cout / (g if g > 0 else 1)))
    return [f"{shape}|c{int(per) if math.isfinite(per) else 0}", shape, f"{base}|{kind}", base]


def regime(row: Mapping[str, Any]) -> str:
    """The most specific of ``regimes``."""
    return regimes(row)[0]


def features(frame: pd.DataFrame, roof: pd.DataFrame | None = None) -> pd.DataFrame:
    """The features of every row of ``frame`` (stored columns; rows never measured carry the counts,
    the ceilings and, where known, what ran). ``roof``: ``roofline(frame)`` when already computed."""
    roof = roofline(frame) if roof is None else roof
    f = pd.DataFrame(index=frame.index)
    flops, br, bw = num(frame, R.FLOPS), num(frame, R.BYTES_READ), num(frame, R.BYTES_WRITTEN)
    size = frame[R.DTYPE].map(ITEMSIZE).astype(float) if R.DTYPE in frame else pd.Series(4.0, index=frame.index)
    f["log_flops"] = np.log2(flops + 1)
    f["log_bytes_read"] = np.log2(br + 1)
    f["log_bytes_written"] = np.log2(bw + 1)
    f["log_working_set"] = np.log2(br + bw + 1)
    f["log_intensity"] = np.log2(flops / (br + bw).replace(0, np.nan) + 1e-6)
    f["log_params"] = np.log2(num(frame, R.PARAMS) + 1)
    f["log_out_elems"] = np.log2(bw / size + 1)
    cfgs = [_config(t) for t in (frame[R.CONFIG] if R.CONFIG in frame else [None] * len(frame))]
    shapes = [_shapes(t) for t in (frame[R.INPUT_SHAPES] if R.INPUT_SHAPES in frame else [None] * len(frame))]
    first = [s[0] if s else [] for s in shapes]
    f["log_in_elems"] = [np.log2(sum(float(np.prod(x)) for x in s) + 1) if s else np.nan for s in shapes]
    f["batch"] = [float(s[0]) if len(s) > 1 else np.nan for s in first]
    f["c_in"] = [_first(c, "in_channels", "in_features", "channels", "embed_dim") for c in cfgs]
    f["c_out"] = [_first(c, "out_channels", "out_features") for c in cfgs]
    f["groups"] = [_first(c, "groups") for c in cfgs]
    f["ch_per_group"] = f["c_in"] / f["groups"].fillna(1.0)
    f["kernel"] = [_first(c, "kernel_size") for c in cfgs]
    f["stride"] = [_first(c, "stride") for c in cfgs]
    f["padding"] = [_first(c, "padding") for c in cfgs]
    f["dilation"] = [_first(c, "dilation") for c in cfgs]
    f["heads"] = [_first(c, "heads") for c in cfgs]
    f["head_dim"] = [_first(c, "head_dim") for c in cfgs]
    f["seq"] = [_first(c, "seq") for c in cfgs]
    f["causal"] = [_first(c, "causal") for c in cfgs]
    f["gemm_m"] = [_first(c, "m") for c in cfgs]
    f["gemm_n"] = [_first(c, "n") for c in cfgs]
    f["gemm_k"] = [_first(c, "k") for c in cfgs]
    f["spatial"] = [float(np.prod(s[2:])) if len(s) > 2 else np.nan for s in first]
    out_pg = [_first(c, "out_channels") / (_first(c, "groups") if _first(c, "groups") > 0 else 1) for c in cfgs]
    f["align_group"] = [min(_pow2(a), _pow2(b)) for a, b in zip(f["ch_per_group"], out_pg)]
    f["align_last"] = [_pow2(float(s[-1])) if s else np.nan for s in first]
    f["threads"] = num(frame, R.THREADS)
    f["aten_ops"] = num(frame, R.ATEN_OPS)
    f["launches"] = launches(frame)
    f["reorders"] = num(frame, R.ONEDNN_REORDERS)
    t = roof["predicted_roofline_s"]
    f["log_roof_s"] = np.log2(t)
    f["compute_share"] = roof["roof_compute_s"] / t
    f["memory_share"] = roof["roof_memory_s"] / t
    f["launch_share"] = roof["roof_launch_s"] / t
    layer = frame[R.LAYER].astype(str) if R.LAYER in frame else pd.Series("?", index=frame.index)
    f["layer"] = layer
    f["op_class"] = layer.map(op_class)
    f["implementation"] = [implementation(r) for r in _records(frame)]
    f["bound"] = roof["predicted_bound"]
    f["layout"] = frame[R.MEMORY_FORMAT] if R.MEMORY_FORMAT in frame else None
    return f[list(FEATURES)]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    cols = [c for c in (R.KERNELS, R.ONEDNN_PRIMITIVES) if c in frame]
    return frame[cols].to_dict("records") if cols else [{} for _ in range(len(frame))]
