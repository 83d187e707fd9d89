"""Dtype names as users write them (fp32, bf16, ...) and their storage size in bytes."""

from __future__ import annotations

import torch

from harness.errors import SpecError

#: Canonical short name -> torch dtype. The short names are the ones tables and the CLI use.
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp64": torch.float64,
    "int8": torch.int8,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
_ALIASES: dict[str, str] = {
    "float32": "fp32",
    "float": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "float64": "fp64",
    "double": "fp64",
}
_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
#: The dtypes layers are timed in (floating point: a layer's weights and activations); a suite, ``--dtype``
#: and the pytest plugin accept these (and their aliases) only.
TIMED = ("fp32", "fp16", "bf16", "fp64")
#: How a one-line error lists what a dtype may be.
TIMED_TEXT = "fp32, fp16, bf16 or fp64 (aliases: float32, float, float16, half, bfloat16, float64, double)"


def canonical_dtype(name: object, field: str = "dtype") -> str:
    """The short name a timed dtype is stored under (``"float16"`` -> ``"fp16"``): a suite's
    ``dtypes``, ``--dtype`` and the rows' ``dtype`` column use it, so two spellings of one dtype make
    one case id. ``SpecError`` naming ``field`` for anything else (integer dtypes: layers are timed
    in floating point)."""
    key = _ALIASES.get(str(name).lower(), str(name).lower()) if isinstance(name, str) else None
    if key in TIMED:
        return key
    why = " (integer dtypes are not timed: layers run in floating point)" if key in DTYPES else ""
    raise SpecError(field, name, TIMED_TEXT + why)


def parse_dtype(name: str | torch.dtype, field: str = "dtype") -> torch.dtype:
    """Return the torch dtype for ``name`` (``"bf16"``, ``"float32"``, a torch.dtype)."""
    if isinstance(name, torch.dtype):
        return name
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in DTYPES:
        raise SpecError(field, name, "one of " + ", ".join(DTYPES) + " (or float32, float16, bfloat16)")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    """Short name of a dtype (``torch.bfloat16`` -> ``"bf16"``); unknown ones keep torch's name."""
    return _NAMES.get(dtype, str(dtype).removeprefix("torch."))


def itemsize(dtype: torch.dtype) -> int:
    """Bytes per element: FP32 4, FP16/BF16 2, ..."""
    return torch.empty((), dtype=dtype, device="meta").element_size()
