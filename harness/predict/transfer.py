"""One machine's efficiency carried to another that has ceilings but no model (Habitat, Yu et al.
2021: scale a kernel measured on one GPU to another by the ratio of the resources that bound it).

The source model predicts the layer on its own machine (its rows' stored roofs, ``EfficiencyModel.roofs``);
that time is scaled by the ratio of the target's roofline bounds to the source's, weighted by op
class (``harness.predict.features.op_class``): a memory-streaming layer (norms, activations,
pools, softmax, elementwise) by the ratio of the memory level's bandwidths its working set
fits on each machine; a shaped kernel (conv, GEMM, attention) by a geometric mix of the compute
and memory ratios, weighted by the memory share of its roofline on the source (Habitat's wave
scaling with the roofline's memory share as its gamma). No time falls below the target's launch
floor. The interval scales the same way. Every such prediction is labelled a transfer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness import record as R
from harness.predict.features import SHAPED, op_class
from harness.predict.roofline import roofline

#: Columns of a row that say which machine it is, set to the source's when it predicts it.
_IDS = (R.MACHINE_ID, R.SETTINGS_ID, R.DEVICE_TYPE)


def as_source(rows: pd.DataFrame, source: Any) -> pd.DataFrame:
    """``rows`` as the source machine would store them: its ids and, per dtype, the roofs its training
    rows stored (rows of a dtype it has no roofs for get none); no canary (another machine's canary
    says nothing of the source's speed: the source predicts at its reference)."""
    src = rows.copy()
    src[R.MACHINE_ID], src[R.SETTINGS_ID], src[R.DEVICE_TYPE] = source.machine_id, source.settings_id, \
        source.device_type
    src[R.CANARY] = np.nan
    cols = sorted({c for roofs in source.roofs.values() for c in roofs})
    for c in cols:
        src[c] = pd.Series([source.roofs.get(str(d), {}).get(c) for d in src[R.DTYPE]], index=src.index, dtype=object)
    return src


def _ratio(target: pd.Series, source: pd.Series) -> pd.Series:
    r = target / source
    return r.where(np.isfinite(r) & (r > 0))


def transfer(source: Any, rows: pd.DataFrame) -> pd.DataFrame:
    """``predicted_s``, ``predicted_low_s``, ``predicted_high_s`` of ``rows`` (a target machine's, with
    its peak columns) from ``source``'s efficiency model; NaN where the source covers no such row."""
    src = source.impute(as_source(rows, source))
    p = source.predict(src)
    r_src = roofline(src)
    tgt = source.impute(rows)
    r_tgt = roofline(tgt)
    mem = _ratio(r_tgt["roof_memory_s"], r_src["roof_memory_s"])
    comp = _ratio(r_tgt["roof_compute_s"], r_src["roof_compute_s"])
    share = (r_src["roof_memory_s"] / (r_src["roof_memory_s"] + r_src["roof_compute_s"])).clip(0, 1)
    shaped = rows[R.LAYER].map(op_class).isin(SHAPED) if R.LAYER in rows else pd.Series(False, index=rows.index)
    gamma = share.where(shaped, 1.0).fillna(1.0)
    ratio = np.exp(gamma * np.log(mem.fillna(comp)) + (1 - gamma) * np.log(comp.fillna(mem)))
    floor = r_tgt["roof_launch_s"].fillna(0.0)
    out = pd.DataFrame(index=rows.index)
    for c in ("predicted_s", "predicted_low_s", "predicted_high_s"):
        out[c] = np.maximum(p[c] * ratio, floor).where(p[c].notna() & ratio.notna())
    return out
