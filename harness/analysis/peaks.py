"""The peaks each run measured against, as stored with its rows: one line per machine, device,
dtype and thread count. A pure function of the table (nothing live is read)."""

from __future__ import annotations

import pandas as pd

from harness import record as R

#: Columns of ``peak_table``.
PEAK_COLUMNS = [R.MACHINE_ID, R.MACHINE_NAME, R.DEVICE, R.DEVICE_NAME, R.PEAK_DTYPE, R.THREADS, R.PEAK_FLOPS,
                R.PEAK_BYTES, R.PEAK_SOURCE, "peak_detail", R.PEAK_NATIVE, R.CEILING_FLOPS, R.CEILING_BYTES,
                R.CEILING_SOURCE, "ceiling_gemm_n", "ceiling_copy_bytes", R.CEILING_L1_BYTES, R.CEILING_L2_BYTES,
                R.CEILING_L3_BYTES, R.CEILING_LEVELS, "ceiling_measured_at"]


def peak_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The distinct stored peaks and ceilings (``PEAK_COLUMNS``), sorted by machine, device, dtype."""
    if frame.empty:
        return pd.DataFrame(columns=PEAK_COLUMNS)
    f = frame.copy()
    f[R.PEAK_DTYPE] = f[R.PEAK_DTYPE].fillna(f[R.DTYPE])
    cols = [c for c in PEAK_COLUMNS if c in f]
    out = f[cols].drop_duplicates().sort_values([R.MACHINE_ID, R.DEVICE, R.PEAK_DTYPE, R.THREADS],
                                                 na_position="last", kind="stable")
    return out.reset_index(drop=True)
