"""Measured ceilings: the fastest this machine runs a large matrix product per dtype (FLOP/s) and a
large copy (bytes/s, read + written), stored per machine and software versions and reused.

Compute: ``torch.mm`` of two n x n matrices, ``2 n^3`` FLOP per call; n doubles from a start
size until one call takes ``GEMM_TARGET_S`` or n reaches the device's cap. Memory: ``dst.copy_(src)``
over a buffer of ``max(COPY_MIN_BYTES, 4 x last-level cache)``, counted as 2 x its bytes
(STREAM's copy convention: write-allocate traffic not counted).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.dtypes import parse_dtype
from harness.errors import SpecError
from harness.timing import Measurement, measure, random_inputs

log = logging.getLogger(__name__)

#: One GEMM call should last about this long before its size stops growing.
GEMM_TARGET_S = 0.05
#: GEMM sizes: (start, cap) per device type.
GEMM_N = {"cpu": (256, 4096), "cuda": (2048, 8192)}
#: Copy buffer: at least this many bytes, and at least 4 x the last-level cache.
COPY_MIN_BYTES = {"cpu": 256 * 2**20, "cuda": 2**30}


def default_store() -> Path:
    """Where ceilings are stored unless told: ``$LAYERBENCH_CEILINGS`` or ``results/ceilings``."""
    return Path(os.environ.get("LAYERBENCH_CEILINGS", "results/ceilings"))


CALIBRATE_DTYPES = ("fp32", "tf32", "fp16", "bf16")


@dataclass(frozen=True, slots=True)
class Ceiling:
    """One measured ceiling. ``value`` is FLOP/s (``compute``) or bytes/s (``memory``)."""

    kind: str          # "compute" or "memory"
    dtype: str         # dtype of the GEMM ("tf32": fp32 with TF32 allowed); "fp32" for the copy
    value: float
    size: int          # GEMM n, or copy buffer bytes
    median_s: float
    rel_iqr: float
    reps: int
    note: str = ""


@dataclass(frozen=True, slots=True)
class Ceilings:
    """The ceilings of one device under one software stack (``key``), and when they were measured."""

    key: dict[str, Any]
    measured_at: str
    entries: tuple[Ceiling, ...]

    def compute(self, dtype: str) -> float | None:
        """Measured GEMM FLOP/s for ``dtype``, or ``None`` if not calibrated."""
        return next((c.value for c in self.entries if c.kind == "compute" and c.dtype == dtype), None)

    @property
    def bandwidth(self) -> float | None:
        """Measured copy bandwidth (bytes/s)."""
        return next((c.value for c in self.entries if c.kind == "memory"), None)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "measured_at": self.measured_at,
                "entries": [dataclasses.asdict(c) for c in self.entries]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Ceilings:
        return cls(key=d["key"], measured_at=d["measured_at"], entries=tuple(Ceiling(**c) for c in d["entries"]))


def machine_key(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """What a ceiling depends on: host, device model, thread count and the software stack."""
    dev = torch.device(device)
    key: dict[str, Any] = {"host": platform.node(), "device": dev.type, "torch": torch.__version__,
                           "cuda": torch.version.cuda}
    if dev.type == "cpu":
        from harness.devices.cpu import cpu_fingerprint, cpuinfo
        info = cpuinfo()
        key["device_name"] = str(info.get("brand_raw", platform.processor()))
        # brand strings repeat across generations ("AMD EPYC" on Zen 1 and Zen 3 VMs): add the CPUID fingerprint
        key["cpu_id"] = f"family {info.get('family')} model {info.get('model')} {cpu_fingerprint()}"
        key["threads"] = threads or torch.get_num_threads()
    else:
        index = dev.index or 0
        props = torch.cuda.get_device_properties(index)
        key["device_name"] = props.name
        key["uuid"] = str(getattr(props, "uuid", ""))
        key["cudnn"] = torch.backends.cudnn.version()
        from harness.devices.nvml import nvml_session
        key["driver"] = nvml_session().query("nvmlSystemGetDriverVersion")
    return key


def _slug(key: dict[str, Any]) -> str:
    name = f"{key['host']}-{key['device']}-{key['device_name']}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120]


def load_ceilings(key: dict[str, Any], store: str | Path | None = None) -> Ceilings | None:
    """The stored ceilings whose key equals ``key`` exactly (same machine, threads, versions)."""
    path = Path(store or default_store()) / f"{_slug(key)}.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for entry in stored:
        if entry.get("key") == key:
            return Ceilings.from_json(entry)
    return None


def save_ceilings(ceilings: Ceilings, store: str | Path | None = None) -> Path:
    """Add (or replace) ``ceilings`` in the machine's JSON file under ``store``; atomic write."""
    path = Path(store or default_store()) / f"{_slug(ceilings.key)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        stored = [e for e in json.loads(path.read_text()) if e.get("key") != ceilings.key]
    except (OSError, ValueError):
        stored = []
    stored.append(ceilings.to_json())
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stored, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


MeasureFn = Callable[..., Measurement]


def _gemm(device: str, dtype: str, budget_s: float, threads: int | None, measure_fn: MeasureFn) -> Ceiling:
    dev = torch.device(device)
    tf32 = dtype == "tf32"
    if tf32 and dev.type != "cuda":
        raise SpecError("dtype", dtype, "tf32 only on cuda (it is fp32 on tensor cores)")
    tdtype = torch.float32 if tf32 else parse_dtype(dtype)
    start, cap = GEMM_N[dev.type]
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32 if dev.type == "cuda" else before
    try:
        n = start
        while True:
            a, b = random_inputs([(n, n), (n, n)], tdtype, dev, seed=0)[0]
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            torch.mm(a, b)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            once = time.perf_counter() - t0
            if once >= GEMM_TARGET_S or n >= cap:
                break
            n *= 2
        m = measure_fn(torch.mm, device=device, inputs=[(a, b)], threads=threads, budget_s=budget_s, warmup_s=0.2)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    flops = 2 * n**3
    note = "tf32 allowed" if tf32 else ""
    return Ceiling("compute", dtype, flops / m.median, n, m.median, m.stats.rel_iqr, m.stats.n, note)


def last_level_cache(device: str) -> int:
    """Bytes of the last-level cache: the GPU's L2, or the CPU's L3 (0 when unknown)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(dev.index or 0), "L2_cache_size", 0) or 0)
    from harness.devices.cpu import describe_cpu
    cpu = describe_cpu(check_load=False)
    return int(cpu.l3_bytes or cpu.l2_bytes or 0)


def _copy(device: str, budget_s: float, threads: int | None, measure_fn: MeasureFn) -> Ceiling:
    dev = torch.device(device)
    nbytes = max(COPY_MIN_BYTES[dev.type], 4 * last_level_cache(device))
    (src,) = random_inputs([(nbytes // 4,)], torch.float32, dev, seed=0)[0]
    dst = torch.empty_like(src)
    m = measure_fn(dst.copy_, device=device, inputs=[(src,)], threads=threads, budget_s=budget_s, warmup_s=0.2)
    return Ceiling("memory", "fp32", 2 * nbytes / m.median, nbytes, m.median, m.stats.rel_iqr, m.stats.n,
                   "copy: bytes read + written")


def calibrate(device: str = "cpu", dtypes: Sequence[str] = ("fp32", "bf16", "fp16"), *, threads: int | None = None,
              budget_s: float = 3.0, store: str | Path | None = None, persist: bool = True, force: bool = False,
              measure_fn: MeasureFn = measure) -> Ceilings:
    """Measure (or reuse) the compute ceiling per dtype and the copy bandwidth of ``device``.

    Args:
        device: ``cpu`` or ``cuda[:N]``.
        dtypes: GEMM dtypes (``fp32``, ``tf32`` on CUDA, ``fp16``, ``bf16``).
        threads: CPU threads (part of the key: a 1-thread ceiling is not a 2-thread one).
        budget_s: time budget of each measurement.
        store: directory of the per-machine JSON files (default ``default_store()``).
        persist: read and write the store (``False``: always measure, keep nothing).
        force: measure again even when stored ceilings match.
        measure_fn: the timer (tests inject a fake).

    Returns:
        ``Ceilings``: stored ones when the key (host, device, threads, torch/CUDA/cuDNN/driver
        versions) matches and they cover ``dtypes``, else freshly measured ones (then saved).
    """
    for d in dtypes:
        if d not in CALIBRATE_DTYPES:
            raise SpecError("dtype", d, "one of " + ", ".join(CALIBRATE_DTYPES))
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SpecError("device", device, "a CUDA device (torch sees none)")
    key = machine_key(device, threads)
    if persist and not force:
        old = load_ceilings(key, store)
        if old is not None and all(old.compute(d) is not None for d in dtypes) and old.bandwidth is not None:
            log.info("reusing ceilings measured %s", old.measured_at)
            return old
    entries = [_gemm(device, d, budget_s, threads, measure_fn) for d in dtypes]
    entries.append(_copy(device, budget_s, threads, measure_fn))
    result = Ceilings(key=key, measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), entries=tuple(entries))
    if persist:
        save_ceilings(result, store)
    return result

