"""Where to measure more: nn-Meter's adaptive sampling (Zhang et al., MobiSys 2021). After a first
pass over the ``fit`` suite, the rows the model predicts worst when they are held out (K-fold by
layer, ``model.cross_validate``) get neighbours: the same sweep with one or two of its sizes
(channels, spatial size, batch, tokens, sequence, GEMM sides) moved by 20-60 % either way, the
rest of the configuration kept. The neighbours form a suite of their own (the ``fit`` suite's
settings, its sweeps reduced to those points), which ``layerbench fit`` measures while its time
budget lasts, before fitting on both passes.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from harness import record as R
from harness.predict.model import canary_reference, cross_validate, group_keys, training_rows

#: Sweep names never moved: they choose the kernel (kernel size, stride, padding, dilation, groups,
#: heads, head size, causal) or are derived; moving them would leave the neighbourhood.
FIXED = frozenset({"k", "s", "p", "d", "g", "groups", "heads", "head_dim", "causal", "kernel", "stride", "padding",
                   "dilation", "op"})
#: A row held out more than this far from its time is "predicted badly".
THRESHOLD = 0.10
#: Factors a neighbour's sizes are moved by.
FACTORS = (0.6, 0.75, 1.3, 1.6)


def heldout_errors(frame: pd.DataFrame) -> pd.DataFrame:
    """The training rows of ``frame`` (one machine and settings) with ``heldout_error``: |held-out
    prediction - measured| / measured, from a K-fold cross-validation grouped by layer, per dtype."""
    rows = training_rows(frame)
    canary = canary_reference(rows)                 # the host's speed taken out, as ``fit`` does
    parts = []
    for _, g in rows.groupby(group_keys(rows)):
        if len(g) < 8:
            continue
        cv = cross_validate(g, canary=canary)
        parts.append(g.assign(heldout_error=(cv["predicted_s"] - cv["time_s"]).abs() / cv["time_s"]))
    return pd.concat(parts) if parts else rows.assign(heldout_error=np.nan)


def _sweep_names(sweep: Mapping[str, Any]) -> list[str]:
    names = list((sweep.get("zip") or {}).keys()) + list((sweep.get("axes") or {}).keys())
    return [n for n in names if n not in (sweep.get("derive") or {})]


def _moved(value: Any, factor: float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value < 4:
        return value
    step = 8 if value % 8 == 0 else 4 if value % 4 == 0 else 1
    return max(step, int(round(value * factor / step)) * step)


def _sweep_of(sweeps: list[dict[str, Any]], row: Mapping[str, Any]) -> int | None:
    return next((i for i, s in enumerate(sweeps) if s.get("family", s.get("layer")) == row.get(R.FAMILY)
                 and s.get("layer") == row.get(R.LAYER)), None)


def _axes(row: Mapping[str, Any]) -> dict[str, Any]:
    try:
        v = json.loads(row.get(R.AXES) or "{}")
    except (TypeError, ValueError):
        return {}
    return v if isinstance(v, dict) else {}


def _key(row: Mapping[str, Any], point: Mapping[str, Any]) -> str:
    return json.dumps([row.get(R.FAMILY), row.get(R.LAYER), sorted(point.items())], default=str)


def neighbours(doc: Mapping[str, Any], worst: pd.DataFrame, n: int, seed: int = 0,
               measured: pd.DataFrame | None = None) -> dict[str, Any] | None:
    """A suite document (``parse_suite``'s input) holding up to ``n`` neighbours of the rows of
    ``worst`` (worst first), taken from the sweeps of ``doc`` with the same family and layer, none
    a point of ``measured`` (rows already stored); ``None`` when none can be made."""
    rng = np.random.default_rng(seed)
    sweeps = [s for s in doc.get("sweep", []) if isinstance(s, dict)]
    done: set[str] = set()
    for _, row in (measured if measured is not None else worst.iloc[:0]).iterrows():
        idx, axes = _sweep_of(sweeps, row), _axes(row)
        if idx is not None:
            done.add(_key(row, {k: axes[k] for k in _sweep_names(sweeps[idx]) if k in axes}))
    points: dict[int, list[dict[str, Any]]] = {}
    made = 0
    for _, row in worst.iterrows():
        if made >= n:
            break
        idx, axes = _sweep_of(sweeps, row), _axes(row)
        if idx is None:
            continue
        names = [k for k in _sweep_names(sweeps[idx]) if k in axes]
        movable = [k for k in names if k not in FIXED and isinstance(axes[k], int) and not isinstance(axes[k], bool)
                   and axes[k] >= 4]
        if not movable:
            continue
        for _ in range(2):
            picks = rng.choice(movable, size=min(len(movable), int(rng.integers(1, 3))), replace=False)
            point = {k: axes[k] for k in names}
            for k in picks:
                point[k] = _moved(axes[k], float(rng.choice(FACTORS)))
            key = _key(row, point)
            if key in done or point == {k: axes[k] for k in names}:
                continue
            done.add(key)
            points.setdefault(idx, []).append(point)
            made += 1
            if made >= n:
                break
    if not points:
        return None
    out = {k: copy.deepcopy(v) for k, v in doc.items() if k != "sweep"}
    out["name"] = f"{doc.get('name', 'fit')}-refine"
    out["description"] = f"neighbours of the layers the model predicted worst when held out ({made} points)"
    out["sweep"] = []
    for idx, pts in sorted(points.items()):
        s = {k: copy.deepcopy(v) for k, v in sweeps[idx].items() if k not in ("zip", "axes")}
        s["zip"] = {k: [p[k] for p in pts] for k in pts[0]}
        out["sweep"].append(s)
    return out


def read_suite_doc(path: str | Path) -> dict[str, Any]:
    """A suite file's TOML document."""
    with open(path, "rb") as f:
        return tomllib.load(f)


def stage_size(budget_s: float, spent_s: float, first_rows: int, first_s: float, reserve_s: float = 30.0,
               most: int | None = None) -> int:
    """How many neighbours fit in what is left of ``budget_s`` (less ``reserve_s`` for fitting), at the
    first pass's seconds per row: at most ``most``, by default as many as the first pass measured."""
    if first_rows <= 0 or first_s <= 0:
        return 0
    per_row = first_s / first_rows
    cap = first_rows if most is None else most
    return max(0, min(cap, int(math.floor((budget_s - spent_s - reserve_s) / per_row))))
