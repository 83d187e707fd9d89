"""Derived metrics over the result table: achieved rates, utilization against named peaks, the
roofline bound and position, and a label a user can act on. Pure functions of DataFrames.

Units: FLOP/s, bytes/s, seconds. Roofline (Williams, Waterman, Patterson 2009; the seeds'
roofline article): attainable = min(peak FLOP/s, intensity x bandwidth); roofline time =
max(FLOPs / peak FLOP/s, bytes / bandwidth); fraction of roofline = roofline time / measured time.
The roof is the measured ceiling where one is stored, the datasheet/formula peak otherwise
(``roof_source`` says which).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.peaks import peak_table

#: Per-launch (CUDA kernel) or per-op (CPU dispatch) overhead used for the launch floor, seconds.
LAUNCH_OVERHEAD_S = {"cpu": 2e-6, "cuda": 5e-6}
#: A row whose time is within this factor of its launch floor is ``launch-bound``.
LAUNCH_BOUND_FACTOR = 2.0
#: A row reaching this fraction of its roofline time is labelled by its bound (compute/memory);
#: below it, ``under-utilised`` (parallelism, layout or kernel choice).
NEAR_ROOF = 0.5
LABELS = ("launch-bound", "memory-bound", "compute-bound", "under-utilised")


def peak_dtype(frame: pd.DataFrame) -> pd.Series:
    """The dtype whose peak applies: ``tf32`` for fp32 rows on CUDA with TF32 allowed for that kind
    of op (cuDNN for convolutions, cuBLAS for the rest), the row's dtype otherwise."""
    out = frame["dtype"].astype(str).copy()
    if "allow_tf32_cudnn" not in frame and "allow_tf32_matmul" not in frame:
        return out
    conv = frame["layer"].astype(str).str.startswith("conv")
    cudnn = frame.get("allow_tf32_cudnn", pd.Series(False, index=frame.index)).fillna(False).astype(bool)
    cublas = frame.get("allow_tf32_matmul", pd.Series(False, index=frame.index)).fillna(False).astype(bool)
    cuda = frame["device"].astype(str).str.startswith("cuda")
    tf32 = cuda & (out == "fp32") & ((conv & cudnn) | (~conv & cublas))
    out[tf32] = "tf32"
    return out


def derive(frame: pd.DataFrame, peaks: pd.DataFrame | None = None, ceilings_dir: str | None = None) -> pd.DataFrame:
    """The result table with derived columns added (rows not ``ok`` get NaN):

    ``achieved_flops_s``, ``achieved_bytes_s``; ``peak_dtype``; ``datasheet_flops_s``,
    ``datasheet_bytes_s``, ``ceiling_flops_s``, ``ceiling_bytes_s`` (measured); ``util_datasheet``,
    ``util_ceiling`` (achieved FLOP/s over each), ``bw_util_datasheet``, ``bw_util_ceiling``;
    ``roof_source``, ``attainable_flops_s``, ``roofline_bound`` (compute/memory),
    ``roofline_time_s``, ``roofline_fraction``; ``launch_floor_s``; ``label``.

    Args:
        peaks: a ``peak_table`` (default: built from the rows and the stored ceilings).
        ceilings_dir: where stored ceilings are read from (default ``results/ceilings``).
    """
    f = frame.copy()
    f["peak_dtype"] = peak_dtype(f)
    if peaks is None:
        peaks = peak_table(f, ceilings_dir)
    keys = ["device", "device_name", "peak_dtype", "threads"]
    pk = peaks.rename(columns={"dtype": "peak_dtype"})
    f = f.merge(pk, on=keys, how="left", suffixes=("", "_peak")) if len(pk) else f.assign(
        datasheet_flops_s=np.nan, datasheet_bytes_s=np.nan, ceiling_flops_s=np.nan, ceiling_bytes_s=np.nan)
    ok = f["status"].eq("ok") & (f["time_median_s"] > 0)
    t = f["time_median_s"].where(ok)
    moved = (f["bytes_read"] + f["bytes_written"]).astype(float)
    f["achieved_flops_s"] = f["flops"] / t
    f["achieved_bytes_s"] = moved / t
    f["util_datasheet"] = f["achieved_flops_s"] / f["datasheet_flops_s"]
    f["util_ceiling"] = f["achieved_flops_s"] / f["ceiling_flops_s"]
    f["bw_util_datasheet"] = f["achieved_bytes_s"] / f["datasheet_bytes_s"]
    f["bw_util_ceiling"] = f["achieved_bytes_s"] / f["ceiling_bytes_s"]
    measured = f["ceiling_flops_s"].notna() & f["ceiling_bytes_s"].notna()
    roof_f = f["ceiling_flops_s"].where(measured, f["datasheet_flops_s"])
    roof_b = f["ceiling_bytes_s"].where(measured, f["datasheet_bytes_s"])
    f["roof_source"] = np.where(measured, "measured", np.where(roof_f.notna() & roof_b.notna(), "datasheet", None))
    intensity = f["flops"] / moved.replace(0, np.nan)
    f["attainable_flops_s"] = np.minimum(roof_f, intensity * roof_b)
    f["roofline_bound"] = np.where(roof_f.isna() | roof_b.isna(), None,
                                   np.where(intensity * roof_b >= roof_f, "compute", "memory"))
    f["roofline_time_s"] = np.maximum(f["flops"] / roof_f, moved / roof_b)
    f["roofline_fraction"] = f["roofline_time_s"] / t
    launches = f["kernel_launches"] if "kernel_launches" in f else f.get("aten_ops", pd.Series(1, index=f.index))
    per = f["device"].astype(str).str.split(":").str[0].map(LAUNCH_OVERHEAD_S).fillna(LAUNCH_OVERHEAD_S["cpu"])
    f["launch_floor_s"] = launches.fillna(1).clip(lower=1) * per
    label = np.where(t <= LAUNCH_BOUND_FACTOR * f["launch_floor_s"], "launch-bound",
                     np.where(f["roofline_fraction"] >= NEAR_ROOF,
                              np.where(f["roofline_bound"] == "memory", "memory-bound", "compute-bound"),
                              "under-utilised"))
    f["label"] = np.where(ok & (f["roofline_fraction"].notna() | (t <= LAUNCH_BOUND_FACTOR * f["launch_floor_s"])),
                          label, None)
    return f
