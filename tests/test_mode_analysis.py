"""The launch floor and the roof level depend on how a row was timed (its ``mode``): graph replays
and cold calls pay no host dispatch per call, and a cold row's L2 is flushed before every call."""

import json

import numpy as np
import pandas as pd
import pytest

from harness.analysis.metrics import derive

US, MIB = 1e-6, 2**20
LEVELS = json.dumps([{"level": "L2", "bytes_s": 8e12, "capacity_bytes": 50 * MIB},
                     {"level": "HBM", "bytes_s": 3e12, "capacity_bytes": None}])


def gpu_row(mode, time_s=8 * US, launches=3, moved=1024, flops=1000):
    return dict(status="ok", mode=mode, time_median_s=time_s, flops=flops, bytes_read=moved, bytes_written=0,
                ceiling_flops_s=700e12, ceiling_bytes_s=3e12, peak_flops_s=989e12, peak_bytes_s=3.35e12,
                peak_source="datasheet", kernel_launches=launches, launch_overhead_s=5e-6, ceiling_levels=LEVELS,
                device_type="cuda", main_memory="HBM")


def test_graph_and_cold_rows_have_no_launch_floor():
    # 3 kernels in 8 us: hot, that is host dispatch (floor 15 us); replayed or cold, it is not
    d = derive(pd.DataFrame([gpu_row("hot"), gpu_row("graph"), gpu_row("cold"), gpu_row(None)]))
    assert d["label"][0] == "launch-bound" and d["launch_floor_s"][0] == pytest.approx(15e-6)
    assert d["roof_level"][0] == "launch"
    for i in (1, 2):
        assert d["label"][i] != "launch-bound" and np.isnan(d["launch_floor_s"][i]) and d["roof_level"][i] != "launch"
    assert d["label"][3] == "launch-bound"                      # no mode stored (pytest-benchmark): as hot


def test_cold_rows_are_judged_against_main_memory():
    rows = [gpu_row(m, time_s=20 * US, launches=1, moved=10 * MIB, flops=0) for m in ("hot", "graph", "cold")]
    d = derive(pd.DataFrame(rows))
    assert list(d["roof_mem_level"]) == ["L2", "L2", "HBM"]     # a flushed L2 never holds the set
    assert d["roof_level_bytes_s"][2] == 3e12 and d["roof_mem_cache"][2] is False
    assert d["roof_level_time_s"][2] == pytest.approx(10 * MIB / 3e12)
