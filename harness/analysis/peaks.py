"""The peaks a row is measured against: the datasheet (GPU table) or formula (CPU) peak, and the
ceiling measured by ``layerbench calibrate`` on that machine, per device, dtype and thread count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from harness.devices.ceilings import default_store
from harness.devices.peaks import datasheet_peak

PEAK_COLUMNS = ["device", "device_name", "dtype", "threads", "datasheet_flops_s", "datasheet_bytes_s",
                "datasheet_native", "datasheet_source", "ceiling_flops_s", "ceiling_bytes_s", "ceiling_measured_at"]


def stored_ceilings(ceilings_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every stored ceilings entry (``{"key", "measured_at", "entries"}``) under the directory."""
    out = []
    for p in sorted(Path(ceilings_dir or default_store()).glob("*.json")):
        try:
            out += json.loads(p.read_text())
        except (OSError, ValueError):
            continue
    return out


def _ceiling(entries: list[dict[str, Any]], device: str, device_name: str, dtype: str,
             threads: Any) -> tuple[float | None, float | None, str | None]:
    best = None
    for e in entries:
        k = e["key"]
        if k.get("device") != device.split(":")[0] or k.get("device_name") != device_name:
            continue
        if k.get("device") == "cpu" and threads is not None and k.get("threads") != threads:
            continue
        if best is None or e["measured_at"] > best["measured_at"]:
            best = e
    if best is None:
        return None, None, None
    flops = next((c["value"] for c in best["entries"] if c["kind"] == "compute" and c["dtype"] == dtype), None)
    bw = next((c["value"] for c in best["entries"] if c["kind"] == "memory"), None)
    return flops, bw, best["measured_at"]


def _datasheet(device: str, device_name: str, dtype: str, threads: Any) -> tuple[Any, Any, Any, Any]:
    if device.startswith("cuda"):
        p = datasheet_peak(device_name, dtype) if dtype in ("fp32", "tf32", "fp16", "bf16", "fp64") else None
    else:
        from harness.devices.cpu import cpuinfo, describe_cpu
        if str(cpuinfo().get("brand_raw", "")) != device_name or dtype not in ("fp32", "fp16", "bf16", "fp64"):
            return None, None, None, None         # another machine's CPU: no formula from here
        cpu = describe_cpu(check_load=False)
        cores = min(int(threads), cpu.cores_for_peak) if threads == threads and threads else None
        p = cpu.peak(dtype, cores=cores)
    if p is None:
        return None, None, None, None
    return p.flops, p.bandwidth, p.native, p.source


def peak_table(frame: pd.DataFrame, ceilings_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per (device, device_name, dtype, threads) of ``frame`` (``dtype`` from its
    ``peak_dtype`` column when present): datasheet/formula peaks and measured ceilings."""
    col = "peak_dtype" if "peak_dtype" in frame else "dtype"
    combos = frame[["device", "device_name", col, "threads"]].drop_duplicates()
    entries = stored_ceilings(ceilings_dir)
    rows = []
    for device, name, dtype, threads in combos.itertuples(index=False):
        device, name = str(device), str(name)
        df, db, native, src = _datasheet(device, name, str(dtype), threads)
        cf, cb, at = _ceiling(entries, device, name, str(dtype), threads)
        rows.append({"device": device, "device_name": name, "dtype": dtype, "threads": threads,
                     "datasheet_flops_s": df, "datasheet_bytes_s": db, "datasheet_native": native,
                     "datasheet_source": src, "ceiling_flops_s": cf, "ceiling_bytes_s": cb, "ceiling_measured_at": at})
    out = pd.DataFrame(rows, columns=PEAK_COLUMNS)
    for c in ("datasheet_flops_s", "datasheet_bytes_s", "ceiling_flops_s", "ceiling_bytes_s"):
        out[c] = out[c].astype(float)
    return out
