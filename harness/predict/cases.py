"""Predictions for cases that were never measured: a suite's cases or one layer, on this machine or
on another whose ceilings are stored.

A *target* is the machine the prediction is for: its identity and the peak columns a run there
would store per dtype (``this_machine``: resolved as a run resolves them, from this machine's
stored ceilings; ``stored_machine``: from another machine's stored ceilings file, measured roofs
only). ``rows_for`` gives each case the columns a run of it would store before timing it: its
identity (the same ``case_id``), its analytic counts on the meta device, and the target's peaks.
``predict_rows`` then predicts them: the target's efficiency model where it has one, else this
machine's model transferred by op class (``harness.predict.transfer``), else the roofline alone,
and says which.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import record as R
from harness.backends import Device, get_backend, resolve_device
from harness.ceilings.calibrate import Ceilings, default_store, lookup
from harness.devices.identity import describe_machine_identity
from harness.errors import SpecError
from harness.layers.spec import parse_layer, parse_shape
from harness.predict.model import EfficiencyModel
from harness.predict.roofline import num, roofline
from harness.predict.transfer import transfer
from harness.record import ids
from harness.runner.context import resolve_peaks, stored_layout
from harness.runner.rows import analytic_counts
from harness.suite import Case, Suite


@dataclass(frozen=True)
class Target:
    """The machine and device a prediction is for, and the peak columns its rows would store per dtype."""

    machine_id: str
    machine_name: str
    device_type: str
    device_name: str
    main_memory: str
    settings_id: str | None
    threads: int | None
    peaks: Mapping[str, Mapping[str, Any]]
    source: str
    here: bool
    settings: Mapping[str, Any] = field(default_factory=dict)

    def peak_columns(self, layer: str, dtype: str) -> dict[str, Any]:
        """The peak columns of a row of ``layer`` at ``dtype`` (its peak dtype's, by the backend's rule)."""
        peak_dtype = get_backend(self.device_type).peak_dtype(layer, dtype, self.settings)
        return dict(self.peaks.get(peak_dtype) or self.peaks.get(dtype) or {})


def this_machine(device: str | Device = "cpu", dtypes: Sequence[str] = ("fp32",), threads: int | None = None,
                 ceilings_store: str | Path | None = None) -> Target:
    """This machine's ``device``, with the peaks and stored ceilings a run of ``dtypes`` would store
    (nothing is measured: without stored ceilings the roofline uses the theoretical peaks)."""
    import torch  # deferred: torch's thread count, only when predicting for this machine
    device = resolve_device(device)
    threads = threads or torch.get_num_threads()
    info = describe_machine_identity(threads)
    ceilings = lookup(device, threads, ceilings_store)
    peaks = {d: dataclass_dict(p) for d, p in resolve_peaks(device, list(dtypes), threads, ceilings).items()}
    where = f"ceilings measured {ceilings.measured_at}" if ceilings is not None else \
        "no stored ceilings (theoretical peaks; `layerbench calibrate` measures them)"
    return Target(machine_id=info.machine_id, machine_name=info.name, device_type=device.type,
                  device_name=device.name, main_memory=device.main_memory, settings_id=info.settings_id,
                  threads=threads, peaks=peaks, source=f"this machine, {where}", here=True,
                  settings=device.backend.settings(device))


def dataclass_dict(p: Any) -> dict[str, Any]:
    """A (slotted) dataclass's fields as a dict, values as they are."""
    return {f: getattr(p, f) for f in p.__dataclass_fields__}


def stored_machine(machine_id: str, device_type: str = "cpu", threads: int | None = None,
                   ceilings_store: str | Path | None = None) -> Target:
    """Another machine, from its stored ceilings file (``<store>/<machine_id>-<device>.json``): the
    entry of ``threads`` when given, else the newest. ``SpecError`` when none is stored."""
    get_backend(device_type)                       # a device type with a backend, or a one-line error
    path = Path(ceilings_store or default_store()) / f"{machine_id}-{device_type}.json"
    try:
        entries = json.loads(path.read_text())
        found = [Ceilings.from_json(e) for e in entries if isinstance(e, dict)]
    except (OSError, ValueError, KeyError, TypeError):
        found = []
    found = [c for c in found if threads is None or c.key.get("threads") in (None, threads)]
    if not found:
        raise SpecError("--machine", machine_id, f"a machine with stored {device_type} ceilings"
                        + (f" for {threads} threads" if threads else "") + f" (none in {path})")
    c = max(found, key=lambda c: c.measured_at)
    backend = get_backend(device_type)
    peaks = {}
    for e in c.entries:
        if e.kind == "compute":
            peaks[e.dtype] = ceiling_peaks(c, e.dtype, backend.launch_overhead_s, backend.main_memory)
    return Target(machine_id=machine_id, machine_name=str(c.key.get("device_name") or machine_id),
                  device_type=device_type, device_name=str(c.key.get("device_name") or ""),
                  main_memory=backend.main_memory, settings_id=None,
                  threads=c.key.get("threads") if isinstance(c.key.get("threads"), int) else None, peaks=peaks,
                  source=f"machine {machine_id}'s stored ceilings, measured {c.measured_at}", here=False)


def ceiling_peaks(c: Ceilings, dtype: str, launch_default: float, main_memory: str) -> dict[str, Any]:
    """The peak columns a row of ``dtype`` stores from ceilings ``c`` alone (no theoretical peak)."""
    gemm = c.entry("compute", dtype)
    copy = c.entry("memory")
    levels = {lv.level: lv.value for lv in c.levels}
    return {R.PEAK_DTYPE: dtype, R.PEAK_FLOPS: None, R.PEAK_BYTES: None, R.PEAK_SOURCE: "none",
            R.PEAK_NATIVE: gemm.native if gemm else None, R.CEILING_FLOPS: gemm.value if gemm else None,
            R.CEILING_BYTES: copy.value if copy else None, R.CEILING_SOURCE: "measured", "ceiling_id": c.ceiling_id,
            R.LAUNCH_OVERHEAD: c.launch or launch_default, R.CEILING_L1_BYTES: levels.get("L1"),
            R.CEILING_L2_BYTES: levels.get("L2"), R.CEILING_L3_BYTES: levels.get("L3"),
            R.CEILING_LEVELS: c.levels_json(), R.MAIN_MEMORY: main_memory}


def layer_case(kind: str, params: Sequence[str], inputs: Sequence[str] | None, dtype: str = "fp32",
               memory_format: str = "nchw", family: str | None = None) -> Case:
    """One layer as a case (its family: ``family``, else the layer kind, as a sweep without one names
    it), with the ``case_id`` a suite sweep of that layer stores."""
    spec = parse_layer(kind, list(params))
    shapes = spec.inputs([parse_shape(s) for s in inputs] if inputs else None)
    shapes = tuple(tuple(s) for s in shapes)
    if memory_format not in ("nchw", "channels_last"):
        raise SpecError("--memory-format", memory_format, "nchw or channels_last")
    if memory_format == "channels_last" and not any(len(s) in (4, 5) for s in shapes):
        raise SpecError("--memory-format", memory_format, "nchw for inputs that are not 4-d or 5-d", kind)
    config = tuple(sorted(spec.canonical().items()))
    what = ids.config_key(spec.kind, config, shapes, memory_format, dtype)
    fam = family or spec.kind
    return Case(case_id=ids.case_id(fam, what), config_id=ids.digest(what), suite="predict", family=fam,
                layer=spec.kind, config=config, inputs=shapes, axes=(), memory_format=memory_format, dtype=dtype,
                device=None, threads=None, skip=None, spec=spec)


def suite_cases(suite: Suite, dtypes: Sequence[str] | None = None) -> list[Case]:
    return list(suite.cases(dtypes))


def rows_for(cases: Iterable[Case], target: Target) -> pd.DataFrame:
    """The rows a run of ``cases`` on ``target`` would store before timing them: identity, counts,
    peaks (status ``predicted``; ``skipped`` with the reason for an invalid case)."""
    out = []
    for case in cases:
        row: dict[str, Any] = {
            R.CASE_ID: case.case_id, R.CONFIG_ID: case.config_id, R.SUITE: case.suite, R.FAMILY: case.family,
            R.LAYER: case.layer, R.CONFIG: case.config_json(), R.AXES: case.axes_json(),
            R.INPUT_SHAPES: case.input_text(), R.MEMORY_FORMAT: stored_layout(case), R.DTYPE: case.dtype,
            R.PASS: case.pass_, R.GRADS: case.grads_text(),
            R.MACHINE_ID: target.machine_id, R.MACHINE_NAME: target.machine_name, R.SETTINGS_ID: target.settings_id,
            R.DEVICE_TYPE: target.device_type, R.DEVICE_NAME: target.device_name,
            R.MAIN_MEMORY: target.main_memory, R.THREADS: case.threads or target.threads,
            R.STATUS: "predicted", R.ERROR: None}
        if case.skip is not None:
            row.update({R.STATUS: "skipped", R.ERROR: case.skip})
        else:
            try:
                row.update(dataclass_dict(analytic_counts(case)))
            except SpecError as e:
                row.update({R.STATUS: "skipped", R.ERROR: str(e)})
            row.update(target.peak_columns(case.layer, case.dtype))
        out.append(row)
    return pd.DataFrame(out)


@dataclass(frozen=True, slots=True)
class Basis:
    """What a prediction rests on: ``model``, ``transfer`` or ``roofline``, and a sentence."""

    kind: str
    text: str


def predict_rows(rows: pd.DataFrame, target: Target, model: EfficiencyModel | None = None,
                 source: EfficiencyModel | None = None) -> pd.DataFrame:
    """``rows`` (``rows_for``) with ``predicted_s``, its interval (``predicted_low_s``,
    ``predicted_high_s``), ``predicted_roofline_s``, ``predicted_bound`` (``compute``, a memory level
    or ``launch``), ``basis`` (``model``, ``transfer``, ``roofline``) and ``basis_detail``: ``model``
    (the target's) where it covers the row, else ``source`` (this machine's) transferred by op class,
    else the roofline."""
    f = rows.copy()
    roof = roofline(f)
    f["predicted_roofline_s"], f["predicted_bound"] = roof["predicted_roofline_s"], roof["predicted_bound"]
    f["predicted_s"], f["predicted_low_s"], f["predicted_high_s"] = (roof["predicted_roofline_s"], np.nan, np.nan)
    f["basis"], f["basis_detail"] = "roofline", _roofline_text(target, model, source)
    valid = f[R.STATUS].eq("predicted") & roof["predicted_roofline_s"].gt(0)
    f.loc[~valid, ["predicted_s", "basis", "basis_detail"]] = [np.nan, None, None]
    f.loc[~f[R.STATUS].eq("predicted"), ["predicted_roofline_s", "predicted_bound"]] = [np.nan, None]   # not a case
    unmeasured = valid & num(f, R.CEILING_FLOPS).isna()
    for idx in f.index[unmeasured]:
        f.at[idx, "basis_detail"] = f"{f.at[idx, 'basis_detail']}{_peak_text(f.loc[idx])}"
    done = ~valid
    if model is not None and valid.any():
        p = model.predict(f[valid], impute=True)
        hit = p.index[p["predicted_s"].notna()]
        for c in ("predicted_s", "predicted_low_s", "predicted_high_s", "predicted_roofline_s", "predicted_bound"):
            f.loc[hit, c] = p.loc[hit, c]
        for idx in hit:
            g = model.group({R.DTYPE: f.at[idx, R.DTYPE], "pass": f.at[idx, "pass"] if "pass" in f else None})
            f.at[idx, "basis"], f.at[idx, "basis_detail"] = "model", _model_text(model, g)
        done = done | f.index.isin(hit)
    if source is not None and (~done).any():
        todo = f[~done]
        p = transfer(source, todo)
        hit = p.index[p["predicted_s"].notna()]
        for c in ("predicted_s", "predicted_low_s", "predicted_high_s"):
            f.loc[hit, c] = p.loc[hit, c]
        f.loc[hit, "basis"] = "transfer"
        f.loc[hit, "basis_detail"] = (f"transfer: {source.machine_name} [{source.machine_id}]'s efficiency scaled to "
                                      f"{target.machine_name}'s roofs by op class (Habitat's scaling); "
                                      f"{target.machine_id} has no efficiency model")
    return f


def _peak_text(row: pd.Series) -> str:
    """What the compute roof of a row without a measured GEMM ceiling is, and how far to trust it."""
    d = row.get(R.DTYPE)
    text = f"; {d}: no measured GEMM ceiling, the compute roof is the theoretical peak"
    if row.get(R.PEAK_NATIVE) == False:  # noqa: E712 (False or numpy's False; None is not)
        text += (f", and {d} has no native unit here: torch's {d} kernels can run far below the fp32 rate that "
                 "peak takes")
    return text + f" (`layerbench calibrate --dtype {d}` measures one)"


def _model_text(model: EfficiencyModel, g: Any) -> str:
    if g is None:
        return f"model of {model.machine_id}"
    err = g.heldout.get("median_error")
    within = g.heldout.get("within_10")
    fig = f"; held-out median error {100 * err:.1f} %, {100 * within:.0f} % within 10 %" \
        if isinstance(err, float) and isinstance(within, float) and math.isfinite(err) else ""
    return f"model: {g.label} fitted on {g.rows} rows ({g.configs} layers) of {len(model.runs)} run(s){fig}"


def _roofline_text(target: Target, model: EfficiencyModel | None, source: EfficiencyModel | None) -> str:
    if model is not None:
        why = "its efficiency model has no fitted group for this dtype"
    elif source is not None:
        why = f"no efficiency model of {target.machine_id}, and {source.machine_id}'s covers no such dtype"
    else:
        why = "no efficiency model for this machine and settings (`layerbench fit` fits one)"
    return f"roofline only: {why}"
