"""``harness.count``: the per-op cost table of a model's forward pass (or backward pass, or both:
``passes=``, ``grads=``; ``harness.analytic.backward``), and its totals."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from harness.analytic.backward import (
    attention_convention,
    parse_grads,
    parse_passes,
    record_training,
    training_records,
    training_table,
)
from harness.analytic.catalog import get_convention
from harness.analytic.conventions import Convention
from harness.analytic.counter import InputLike, OpRecord, record, to_frame


def count(model: nn.Module | Callable[..., Any], *inputs: InputLike, convention: str | Convention = "canonical",
          dtype: str | torch.dtype = "fp32", passes: str = "forward", grads: str | Sequence[str] | None = None,
          **kwargs: Any) -> pd.DataFrame:
    """Count every op ``model(*inputs, **kwargs)`` dispatches, without computing anything.

    Args:
        model: an ``nn.Module`` (on any device, ``meta`` included) or any callable of tensors.
        inputs: tensors, or shapes (tuples of ints) created as fake tensors of ``dtype`` on the
            model's device; other values are passed through.
        convention: ``"canonical"`` (docs/conventions.md) or a preset reproducing
            ``thop``, ``ptflops``, ``fvcore``, ``torchinfo``, ``torchstat`` or ``flop_counter``.
        dtype: dtype of inputs given as shapes (``fp32``, ``fp16``, ``bf16``, ...).
        passes: ``"forward"`` (default: this table, as it always was), ``"backward"`` (autograd's
            ops only; the forward runs unrecorded) or ``"forward+backward"`` (both, in order).
        grads: the gradients the backward computes: ``None`` (default: every gradient the layer
            has), ``("input", "weight")``, ``("weight",)`` (the input needs none) or ``("input",)``
            (parameters frozen). Ignored by the forward; see ``harness.analytic.backward``.

    Returns:
        One row per dispatched op, in execution order (columns in docs/counting.md, "The count table").
        ``totals(table)`` sums it. A table with a backward pass adds the columns ``pass``
        (``forward``/``backward``) and ``flop_counter_reason`` (why a row disagrees with
        torch.utils.flop_counter), and ``attrs["saved_activation_bytes"]``.
    """
    conv = get_convention(convention)
    if parse_passes(passes) != "forward":
        return training_table(conv, record_training(model, *inputs, dtype=dtype, passes=passes, grads=grads,
                                                    **kwargs))
    parse_grads(grads)
    calls, module_calls = record(model, *inputs, dtype=dtype, **kwargs)
    return to_frame(conv.price(calls, module_calls), conv.name)


def totals(table: pd.DataFrame) -> pd.Series:
    """Totals of a count table: FLOPs, MACs, parameters (each once), bytes, intensity (FLOP/byte),
    the number of ops, of ops the convention does not count, and the independent count (and, for a
    table with a backward pass, ``saved_activation_bytes`` and ``count_note``)."""
    ops = table[~table["category"].isin(["view", "none"])]
    flops = int(table["flops"].sum(skipna=True))
    moved = int(table["bytes_read"].sum() + table["bytes_written"].sum())
    covered = table["flop_counter_flops"].notna()
    sums = pd.Series({
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
    if "pass" in table.columns:
        sums["saved_activation_bytes"] = int(table.attrs.get("saved_activation_bytes", 0))
        sums["count_note"] = str(table.attrs.get("count_note") or "")
    return sums


def count_totals(model: nn.Module | Callable[..., Any], *inputs: InputLike, convention: str | Convention = "canonical",
                 dtype: str | torch.dtype = "fp32", passes: str = "forward", grads: str | Sequence[str] | None = None,
                 **kwargs: Any) -> pd.Series:
    """``totals(count(model, *inputs, ...))`` without building the per-op table (the runner counts
    every case: the table's pandas work cost about 20 ms a case, the sums below microseconds).
    ``passes`` and ``grads`` as for :func:`count`; with a backward pass the totals add
    ``saved_activation_bytes`` (the analytic saved-activation bytes of the training step) and
    ``count_note`` (which attention backward was counted: ``harness.analytic.backward.attention_convention``;
    empty when the layer has none)."""
    conv = get_convention(convention)
    if parse_passes(passes) != "forward":
        trace = record_training(model, *inputs, dtype=dtype, passes=passes, grads=grads, **kwargs)
        sums = _sum_records(training_records(conv, trace)[0], conv.name)
        sums["saved_activation_bytes"] = trace.saved_bytes
        sums["count_note"] = attention_convention(trace) or ""
        return sums
    parse_grads(grads)
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
