"""Hierarchical roofline: the memory level bounding a row by its working set, the roof level
(compute, a cache, main memory, launch) of synthetic rows, and the stored levels a run copies into rows."""

import json

import numpy as np
import pandas as pd
import pytest

from harness.analysis.metrics import DERIVED, derive
from harness.predict.roofline import levels_of, memory_roof, roofline

KIB, MIB = 2**10, 2**20
LEVELS = json.dumps([{"level": "L1", "bytes_s": 200e9, "capacity_bytes": 64 * KIB},
                     {"level": "L2", "bytes_s": 100e9, "capacity_bytes": MIB},
                     {"level": "L3", "bytes_s": 50e9, "capacity_bytes": 24 * MIB},
                     {"level": "DRAM", "bytes_s": 20e9, "capacity_bytes": None}])


def row(flops, moved, levels=LEVELS, time_s=1e-3, device_type="cpu", **kw):
    base = dict(status="ok", time_median_s=time_s, flops=flops, bytes_read=moved, bytes_written=0,
                ceiling_flops_s=100e9, ceiling_bytes_s=20e9, peak_flops_s=None, peak_bytes_s=None,
                peak_source="formula", kernel_launches=1, launch_overhead_s=2e-6, ceiling_levels=levels,
                device_type=device_type, main_memory={"cpu": "DRAM", "cuda": "HBM"}[device_type])
    return {**base, **kw}


def test_level_by_working_set():
    moved = pd.Series([32 * KIB, 64 * KIB, 64 * KIB + 1, 20 * MIB, 100 * MIB, np.nan])
    name, secs, own, cache = memory_roof(moved, levels_of(LEVELS))
    assert list(name[:5]) == ["L1", "L1", "L2", "L3", "DRAM"] and pd.isna(name[5])   # a set that fills L1 still fits
    assert list(own[:5]) == [200e9, 200e9, 100e9, 50e9, 20e9] and list(cache[:5]) == [True] * 4 + [False]
    # the levels inside the one that holds the set serve it first, each up to its capacity:
    l1, l2, l3 = 64 * KIB / 200e9, (MIB - 64 * KIB) / 100e9, (24 * MIB - MIB) / 50e9   # seconds to serve each
    served = [32 * KIB / 200e9, l1, l1 + 1 / 100e9, l1 + l2 + (20 * MIB - MIB) / 50e9,
              l1 + l2 + l3 + (100 * MIB - 24 * MIB) / 20e9]
    assert list(secs[:5]) == pytest.approx(served) and pd.isna(secs[5])
    assert moved[2] / secs[2] == pytest.approx(199.997e9, rel=1e-5)     # one byte past L1: still almost all L1
    assert secs[4] == pytest.approx(4.4771e-3, rel=1e-4)                # 0.33 + 9.83 + 482.3 + 3984.6 us
    # a level without a bandwidth is left out: its sets go out to the next measured level, which serves
    # what the measured levels inside it do not
    gap = json.dumps([{"level": "L1", "bytes_s": 200e9, "capacity_bytes": 64 * KIB},
                      {"level": "L2", "bytes_s": None, "capacity_bytes": MIB},
                      {"level": "DRAM", "bytes_s": 20e9, "capacity_bytes": None}])
    name, secs, _, _ = memory_roof(pd.Series([100 * KIB]), levels_of(gap))
    assert list(name) == ["DRAM"] and secs[0] == pytest.approx(64 * KIB / 200e9 + 36 * KIB / 20e9)
    assert levels_of("not json") == () and levels_of('{"level": 1}') == ()


def test_analysis_and_prediction_give_one_roof_whatever_the_mode():
    """A cold row (cache flushed each call) is judged against main memory, a graph replay has no launch
    floor: the analysis' roof level and the prediction's roofline agree on both, row by row, even in a
    frame whose index repeats."""
    rows = [row(1e3, MIB), row(1e3, MIB, mode="cold"), row(10, 100, mode="graph", kernel_launches=4),
            row(10, 100, mode="hot", kernel_launches=4)]
    frame = pd.DataFrame(rows, index=[0, 0, 1, 1])
    d, r = derive(frame.reset_index(drop=True)), roofline(frame)
    assert list(d["roof_level"]) == list(r["predicted_bound"]) == ["L2", "DRAM", "L1", "launch"]
    assert list(r["predicted_roofline_s"]) == pytest.approx(list(d["roof_level_time_s"]))
    assert r["predicted_roofline_s"].iloc[1] == pytest.approx(MIB / 20e9)      # cold: all of it from DRAM
    assert r["predicted_roofline_s"].iloc[3] == pytest.approx(4 * 2e-6)        # hot: 4 launches x 2 us


def test_roof_level_of_synthetic_rows():
    rows = [row(1e6, 32 * KIB),          # 1e6/100e9 = 10 us compute > 32 KiB/200 GB/s = 0.16 us: compute
            row(1e3, 512 * KIB),         # L2: 64 KiB at 200 GB/s + 448 KiB at 100 GB/s = 0.33 + 4.59 us
            row(1e3, 4 * MIB),           # L3: 0.33 us (L1) + 9.83 us (L2's other 960 KiB) + 3 MiB at 50 GB/s
            row(1e3, 100 * MIB),         # DRAM: 0.33 + 9.83 + 482.35 (L3's 23 MiB) + 76 MiB at 20 GB/s
            row(10, 100),                # launch: 2 us floor > 0.1 ns compute, 0.5 ns L1
            row(1e3, 4 * MIB, levels=None)]   # no stored levels: main memory, ceiling_bytes_s
    d = derive(pd.DataFrame(rows))
    assert list(d["roof_level"]) == ["compute", "L2", "L3", "DRAM", "launch", "DRAM"]
    assert list(d["roof_mem_level"]) == ["L1", "L2", "L3", "DRAM", "L1", "DRAM"]
    expected = [1e-5, 4.9152e-6, 73.07264e-6, 4477.09184e-6, 2e-6, 4 * MIB / 20e9]
    assert d["roof_level_bytes_s"].tolist() == pytest.approx(
        [200e9, 512 * KIB / expected[1], 4 * MIB / expected[2], 100 * MIB / expected[3], 200e9, 20e9])
    assert d["roof_level_time_s"].tolist() == pytest.approx(expected)
    assert d["roof_level_fraction"].tolist() == pytest.approx([t / 1e-3 for t in expected])
    # the single-roof columns keep their meaning: the L3 row is memory-bound against DRAM
    assert d["roofline_time_s"][2] == pytest.approx(4 * MIB / 20e9)


def test_a_row_above_the_dram_roof_is_explained_by_its_level():
    # ReLU-like: 1.6 MB moved in 30 us = 53 GB/s, 2.7x the 20 GB/s DRAM copy roof; it fits L3 (50 GB/s),
    # whose roof serves its first 64 KiB from L1 and the next 960 KiB from L2: 0.33 + 9.83 + 11.14 us
    d = derive(pd.DataFrame([row(0, 1_605_632, time_s=30e-6)]))
    assert d["roofline_fraction"][0] > 2.5                    # beyond the single memory roof
    assert d["roof_level"][0] == "L3" and d["roof_level_fraction"][0] == pytest.approx(21.2992e-6 / 30e-6)
    assert d["bw_util_level"][0] == pytest.approx(21.2992 / 30) and d["label"][0] == "memory-bound"


def test_gpu_rows_without_levels_name_hbm_and_rows_not_ok_are_empty():
    d = derive(pd.DataFrame([row(1e3, 100 * MIB, levels=None, device_type="cuda"),
                             row(1e3, 100 * MIB, status="error", time_median_s=None),
                             row(1e3, 100 * MIB, levels=None, ceiling_bytes_s=None, ceiling_flops_s=None)]))
    assert d["roof_level"][0] == "HBM" and d["roof_mem_level"][0] == "HBM"
    assert pd.isna(d["roof_level"][1]) and np.isnan(d["roof_level_time_s"][1])
    assert pd.isna(d["roof_level"][2])                        # no roof stored at all


def test_derived_declares_the_new_columns():
    names = {d.name for d in DERIVED}
    assert {"roof_mem_level", "roof_level", "roof_level_bytes_s", "roof_level_time_s",
            "roof_level_fraction"} <= names
    frame = derive(pd.DataFrame([row(1e6, 32 * KIB)]))
    assert names <= set(frame.columns)
