"""``harness.count``: the per-op cost table of a model's forward pass, and its totals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
from torch import nn

from harness.analytic.catalog import get_convention
from harness.analytic.conventions import Convention
from harness.analytic.counter import InputLike, OpRecord, record, to_frame


def count(model: nn.Module | Callable[..., Any], *inputs: InputLike, convention: str | Convention = "canonical",
          dtype: str | torch.dtype = "fp32", **kwargs: Any) -> pd.DataFrame:
    """Count every op ``model(*inputs, **kwargs)`` dispatches, without computing anything.

    Args:
        model: an ``nn.Module`` (on any device, ``meta`` included) or any callable of tensors.
        inputs: tensors, or shapes (tuples of ints) created as fake tensors of ``dtype`` on the
            model's device; other values are passed through.
        convention: ``"canonical"`` (README, "Counting conventions") or a preset reproducing
            ``thop``, ``ptflops``, ``fvcore``, ``torchinfo``, ``torchstat`` or ``flop_counter``.
        dtype: dtype of inputs given as shapes (``fp32``, ``fp16``, ``bf16``, ...).

    Returns:
        One row per dispatched op, in execution order (columns in the README's "Count table").
        ``totals(table)`` sums it.
    """
    conv = get_convention(convention)
    calls, module_calls = record(model, *inputs, dtype=dtype, **kwargs)
    return to_frame(conv.price(calls, module_calls), conv.name)


def totals(table: pd.DataFrame) -> pd.Series:
    """Totals of a count table: FLOPs, MACs, parameters (each once), bytes, intensity (FLOP/byte),
    the number of ops, of ops the convention does not count, and the independent count."""
    ops = table[~table["category"].isin(["view", "none"])]
    flops = int(table["flops"].sum(skipna=True))
    moved = int(table["bytes_read"].sum() + table["bytes_written"].sum())
    covered = table["flop_counter_flops"].notna()
    return pd.Series({
        "convention": table["convention"].iloc[0] if len(table) else "",
        "flops": flops,
        "macs": int(table["macs"].sum(skipna=True)),
        "params": int(table["params"].sum()),
        "bytes_read": int(table["bytes_read"].sum()),
        "bytes_written": int(table["bytes_written"].sum()),
        "intensity": flops / moved if moved else float("nan"),
        "ops": len(ops),
        "uncounted_ops": int((~table["counted"]).sum()),
        "flop_counter_flops": int(table.loc[covered, "flop_counter_flops"].sum()),
        "flop_counter_ops": int(covered.sum()),
        "flop_counter_disagreements": int((table["flop_counter_agrees"] == False).sum()),  # noqa: E712
    })


def count_totals(model: nn.Module | Callable[..., Any], *inputs: InputLike, convention: str | Convention = "canonical",
                 dtype: str | torch.dtype = "fp32", **kwargs: Any) -> pd.Series:
    """``totals(count(model, *inputs, ...))`` without building the per-op table (the runner counts
    every case: the table's pandas work cost about 20 ms a case, the sums below microseconds)."""
    conv = get_convention(convention)
    calls, module_calls = record(model, *inputs, dtype=dtype, **kwargs)
    return _sum_records(conv.price(calls, module_calls), conv.name)


def _sum_records(records: list[OpRecord], convention: str) -> pd.Series:
    """The sums ``totals`` takes over ``to_frame(records)``, taken over the records directly."""
    flops = sum(r.cost.flops for r in records if r.cost is not None)
    moved = sum(r.bytes_read + r.bytes_written for r in records)
    covered = [r for r in records if r.flop_counter_flops is not None]
    return pd.Series({
        "convention": convention if records else "",
        "flops": flops,
        "macs": sum(r.cost.macs for r in records if r.cost is not None),
        "params": sum(r.params for r in records),
        "bytes_read": sum(r.bytes_read for r in records),
        "bytes_written": sum(r.bytes_written for r in records),
        "intensity": flops / moved if moved else float("nan"),
        "ops": sum(r.category not in ("view", "none") for r in records),
        "uncounted_ops": sum(r.cost is None for r in records),
        "flop_counter_flops": sum(r.flop_counter_flops for r in covered),
        "flop_counter_ops": len(covered),
        "flop_counter_disagreements": sum(r.cost is not None and r.cost.flops != r.flop_counter_flops for r in covered),
    })
