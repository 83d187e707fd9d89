"""Older result files into the current record (``harness.record``), so every run ever stored loads.

Version 1 (the store before ``harness.record``; no version in the file): parameters keyed by the
suite's spelling in ``params`` (JSON) and ``ax_<name>`` columns, the parameter count in
``parameters``, ``intensity`` without its unit, ``device`` ``cuda`` on error rows and ``cuda:0`` on
measured ones, no machine identity, and no peaks (analysis then read them from the live machine).
Upgraded rows get canonical ``config``, ``axes``, recomputed ``case_id``/``config_id``/``row_id``,
a ``machine_id`` of ``v1`` + a hash of host and device name (the hardware was not recorded), and
``peak_source`` / ``ceiling_source`` = ``not stored``: utilization is then unknown, never guessed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from harness.layers.spec import LAYERS, parse_layer
from harness.record import BY_NAME, COLUMN_NAMES, RunMeta, ids

#: Reason stored in peak_source / ceiling_source of upgraded rows.
NOT_STORED = "not stored"
_RENAMED_V1 = {"parameters": "params", "intensity": "intensity_flop_per_byte"}


def canonical_config(layer: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A layer's parameters under canonical names with defaults (validated), else canonical names only."""
    try:
        return parse_layer(layer, dict(params)).canonical()
    except Exception:
        keys = LAYERS[layer].keys() if layer in LAYERS else {}
        return {keys.get(k, k): v for k, v in params.items()}


def _shapes(text: Any) -> list[list[int]] | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return [[int(x) for x in s.split("x")] for s in text.split(";")]
    except ValueError:
        return None


def v1_record(row: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """One version-1 row (a dict of its columns) as a current record."""
    out = {_RENAMED_V1.get(k, k): v for k, v in row.items() if not k.startswith("ax_")}
    try:
        params = json.loads(row.get("params") or "{}")
    except (TypeError, ValueError):
        params = {}
    layer = str(row.get("layer") or "unknown")
    config = canonical_config(layer, params if isinstance(params, dict) else {})
    out["config"] = json.dumps(config, sort_keys=True, default=str)
    out["axes"] = json.dumps({k[3:]: v for k, v in row.items() if k.startswith("ax_") and v is not None},
                             sort_keys=True, default=str)
    what = ids.config_key(layer, config.items(), _shapes(row.get("input_shapes")), row.get("memory_format"),
                      row.get("dtype"))
    out["config_id"] = ids.digest(what)
    out["case_id"] = ids.case_id(row.get("family"), what)
    device = str(row.get("device") or meta.get("device") or "cpu")
    out["device"] = "cuda:0" if device == "cuda" else device
    out["device_type"] = out["device"].split(":")[0]
    host = str(meta.get("host") or "unknown")
    name = str(row.get("device_name") or meta.get("device_name") or "unknown")
    out["host"] = host
    out["machine_id"] = "v1" + ids.digest([host, name, meta.get("cpu")], 10)
    out["machine_name"] = f"{name} on {host} (schema v1: hardware not recorded)"
    out["settings_id"] = "v1" + ids.digest([row.get("threads"), meta.get("cpu_threads")], 10)
    out["row_id"] = ids.row_id(out["machine_id"], out["device"], out["case_id"])
    out["device_name"] = name
    out["peak_source"] = out["ceiling_source"] = NOT_STORED
    out["suite"] = row.get("suite") or meta.get("suite") or "unknown"
    out["run_id"] = row.get("run_id") or meta.get("run_id") or "unknown"
    out["family"] = row.get("family") or layer
    out["memory_format"] = row.get("memory_format") or "nchw"
    out["timestamp"] = row.get("timestamp") or meta.get("started") or ""
    out["harness_version"] = row.get("harness_version") or meta.get("harness_version") or "0.1.0"
    out["torch_version"] = row.get("torch_version") or meta.get("torch_version") or "unknown"
    out["python_version"] = row.get("python_version") or meta.get("python_version") or "unknown"
    return {k: _coerce(k, out.get(k)) for k in COLUMN_NAMES}


def _coerce(name: str, v: Any) -> Any:
    """Values as the schema types them (JSON and pandas give floats for ints, NaN for null)."""
    if v is None or (isinstance(v, float) and v != v and BY_NAME[name].python is not float):
        return None
    py = BY_NAME[name].python
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if py is int and isinstance(v, float) and v.is_integer():
        return int(v)
    if py is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if py is list and isinstance(v, (list, tuple)):
        return [float(x) for x in v]
    return v


#: stability_reason of rows upgraded from versions 1 and 2.
UPGRADED_STABILITY = "schema v{v}: judged by the within-process spread only (no cross-process repeats, no host load)"


def v2_record(row: Mapping[str, Any], version: int = 2) -> dict[str, Any]:
    """One version-2 row as a version-3 record (version-4 columns null): one process; stability
    from the stored ``noisy`` flag (the only evidence a v2 row has); the per-level bandwidths,
    oneDNN trace and thread policy null (not recorded)."""
    out = {k: row.get(k) for k in COLUMN_NAMES}
    if out.get("status") == "ok" and out.get("time_median_s") is not None:
        median = float(out["time_median_s"])
        out.update(processes=1, process_medians_s=[median], process_median_s=median, process_spread=0.0,
                   stability="noisy" if out.get("noisy") else "stable",
                   stability_reason=UPGRADED_STABILITY.format(v=version))
    return {k: _coerce(k, out.get(k)) for k in COLUMN_NAMES}


#: The two device types rows were stored for before version 4, and what their backends called their
#: main memory: the only place a stored device type is read as a kind of device (a fact about old files).
LEGACY_MAIN_MEMORY = {"cpu": "DRAM", "cuda": "HBM"}


def v3_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """One version-3 row as a version-4 record: the device's main-memory name and its label, as the
    two backends that existed then would have stored them (the host CPU is named by the machine)."""
    out = {k: row.get(k) for k in COLUMN_NAMES}
    kind = str(out.get("device_type") or "")
    out["main_memory"] = LEGACY_MAIN_MEMORY.get(kind)
    out["device_label"] = out.get("machine_name") if kind == "cpu" else out.get("device_name")
    return {k: _coerce(k, out.get(k)) for k in COLUMN_NAMES}


def v4_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """One version-4 row as a version-5 record: a forward pass (nothing else was measured before
    version 5); the clock, canary, modes and peak-memory columns null (not recorded)."""
    out = {k: row.get(k) for k in COLUMN_NAMES}
    out["pass"] = "forward"
    return {k: _coerce(k, out.get(k)) for k in COLUMN_NAMES}


def v5_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """One version-5 row as a version-6 record: the heap policy and page faults null (not recorded)."""
    return {k: _coerce(k, row.get(k)) for k in COLUMN_NAMES}


def upgrade_records(rows: list[dict[str, Any]], version: int, meta: RunMeta | None) -> list[dict[str, Any]]:
    """Records of schema ``version`` as current records (``ValueError`` for an unknown version).
    ``meta``: the file's run metadata; a version-1 file's is read as the JSON object it stored."""
    if version == 1:
        legacy = meta.to_json() if meta is not None else {}
        return [v4_record(v3_record(v2_record(v1_record(r, legacy), 1))) for r in rows]
    if version == 2:
        return [v4_record(v3_record(v2_record(r))) for r in rows]
    if version == 3:
        return [v4_record(v3_record(r)) for r in rows]
    if version == 4:
        return [v4_record(r) for r in rows]
    if version == 5:
        return [v5_record(r) for r in rows]
    raise ValueError(f"schema version {version}: expected 1 to 6 (a newer layerbench wrote it?)")
