"""Measured ceilings: the fastest this machine runs a large matrix product per dtype (FLOP/s) and a
large copy (bytes/s, read + written), stored per machine, thread count and software, and reused.

Compute: ``torch.mm`` of two n x n matrices, ``2 n^3`` FLOP per call; n doubles from the backend's
start size until one call takes ``GEMM_TARGET_S`` or n reaches the backend's cap. Memory:
``dst.copy_(src)`` over a buffer of ``max(copy_min_bytes, 4 x last-level cache)``, counted as 2 x
its bytes (STREAM's copy convention: write-allocate traffic not counted).

A run looks its ceilings up when it starts (``lookup``) and stores them in every row, so analysis
never reads this store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.backends import get_backend
from harness.dtypes import parse_dtype
from harness.errors import SpecError
from harness.timing import Measurement, measure, random_inputs

log = logging.getLogger(__name__)

#: One GEMM call should last about this long before its size stops growing.
GEMM_TARGET_S = 0.05
CALIBRATE_DTYPES = ("fp32", "tf32", "fp16", "bf16")


def default_store() -> Path:
    """Where ceilings are stored unless told: ``$LAYERBENCH_CEILINGS``, else
    ``~/.cache/layerbench/ceilings`` (``$LAYERBENCH_CACHE`` moves the cache)."""
    from harness.devices.cpu import cache_dir
    return Path(os.environ.get("LAYERBENCH_CEILINGS") or cache_dir() / "ceilings")


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
        e = self.entry("compute", dtype)
        return e.value if e else None

    def entry(self, kind: str, dtype: str = "fp32") -> Ceiling | None:
        return next((c for c in self.entries if c.kind == kind and (kind == "memory" or c.dtype == dtype)), None)

    @property
    def bandwidth(self) -> float | None:
        """Measured copy bandwidth (bytes/s)."""
        e = self.entry("memory")
        return e.value if e else None

    @property
    def ceiling_id(self) -> str:
        """12 hex digits naming this set of ceilings (its key and when it was measured)."""
        return hashlib.sha256(json.dumps([self.key, self.measured_at], sort_keys=True,
                                         default=str).encode()).hexdigest()[:12]

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "measured_at": self.measured_at,
                "entries": [dataclasses.asdict(c) for c in self.entries]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Ceilings:
        return cls(key=d["key"], measured_at=d["measured_at"], entries=tuple(Ceiling(**c) for c in d["entries"]))


def machine_key(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """What a ceiling depends on: the machine (``machine_id``), device, thread count and software."""
    from harness.devices.identity import describe_machine_identity
    backend = get_backend(device)
    info = describe_machine_identity(threads)
    dev = backend.resolve(device)
    key: dict[str, Any] = {"machine_id": info.machine_id, "device": backend.type,
                           "device_name": backend.device_name(dev), "torch": torch.__version__,
                           "cuda": torch.version.cuda}
    if backend.type == "cpu":
        key["threads"] = info.threading.threads
    else:
        key["cudnn"] = info.software.cudnn
        key["driver"] = info.software.driver
    return key


def _path(key: dict[str, Any], store: str | Path | None) -> Path:
    return Path(store or default_store()) / f"{key['machine_id']}-{key['device']}.json"


def load_ceilings(key: dict[str, Any], store: str | Path | None = None) -> Ceilings | None:
    """The stored ceilings whose key equals ``key`` exactly (same machine, threads, versions)."""
    try:
        stored = json.loads(_path(key, store).read_text())
    except (OSError, ValueError):
        return None
    for entry in stored if isinstance(stored, list) else []:
        if isinstance(entry, dict) and entry.get("key") == key:
            try:
                return Ceilings.from_json(entry)
            except (KeyError, TypeError):
                return None
    return None


def save_ceilings(ceilings: Ceilings, store: str | Path | None = None) -> Path:
    """Add (or replace) ``ceilings`` in the machine's JSON file under ``store``; atomic write."""
    path = _path(ceilings.key, store)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        stored = [e for e in json.loads(path.read_text()) if e.get("key") != ceilings.key]
    except (OSError, ValueError, AttributeError, TypeError):
        stored = []
    stored.append(ceilings.to_json())
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stored, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


MeasureFn = Callable[..., Measurement]


def _gemm(device: str, dtype: str, budget_s: float, threads: int | None, measure_fn: MeasureFn) -> Ceiling:
    backend = get_backend(device)
    tf32 = dtype == "tf32"
    if tf32 and backend.type != "cuda":
        raise SpecError("dtype", dtype, "tf32 only on cuda (it is fp32 on tensor cores)")
    tdtype = torch.float32 if tf32 else parse_dtype(dtype)
    sizes = backend.calibration
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32 if backend.type == "cuda" else before
    try:
        n = sizes.gemm_start
        while True:
            a, b = random_inputs([(n, n), (n, n)], tdtype, device, seed=0)[0]
            backend.synchronize(device)
            t0 = time.perf_counter()
            torch.mm(a, b)
            backend.synchronize(device)
            if time.perf_counter() - t0 >= GEMM_TARGET_S or n >= sizes.gemm_cap:
                break
            n *= 2
        m = measure_fn(torch.mm, device=device, inputs=[(a, b)], threads=threads, budget_s=budget_s, warmup_s=0.2)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return Ceiling("compute", dtype, 2 * n**3 / m.median, n, m.median, m.stats.rel_iqr, m.stats.n,
                   "tf32 allowed" if tf32 else "")


def _copy(device: str, budget_s: float, threads: int | None, measure_fn: MeasureFn) -> Ceiling:
    backend = get_backend(device)
    nbytes = max(backend.calibration.copy_min_bytes, 4 * backend.last_level_cache(device))
    (src,) = random_inputs([(nbytes // 4,)], torch.float32, device, seed=0)[0]
    dst = torch.empty_like(src)
    m = measure_fn(dst.copy_, device=device, inputs=[(src,)], threads=threads, budget_s=budget_s, warmup_s=0.2)
    return Ceiling("memory", "fp32", 2 * nbytes / m.median, nbytes, m.median, m.stats.rel_iqr, m.stats.n,
                   "copy: bytes read + written")


def lookup(device: str, threads: int | None, store: str | Path | None = None) -> Ceilings | None:
    """The stored ceilings of this machine, device, thread count and software, if any."""
    return load_ceilings(machine_key(device, threads), store)


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
        ``Ceilings``: stored ones when the key (machine, device, threads, torch/CUDA/cuDNN/driver
        versions) matches and they cover ``dtypes``, else freshly measured ones (then saved).
    """
    for d in dtypes:
        if d not in CALIBRATE_DTYPES:
            raise SpecError("dtype", d, "one of " + ", ".join(CALIBRATE_DTYPES))
    device = get_backend(device).resolve(device)
    key = machine_key(device, threads)
    old = load_ceilings(key, store) if persist else None
    if old is not None and not force and all(old.compute(d) is not None for d in dtypes) and old.bandwidth:
        log.info("reusing ceilings measured %s", old.measured_at)
        return old
    keep = [e for e in (old.entries if old is not None and not force else ()) if e.kind == "compute"
            and e.dtype not in dtypes]
    entries = keep + [_gemm(device, d, budget_s, threads, measure_fn) for d in dtypes]
    entries.append(_copy(device, budget_s, threads, measure_fn))
    result = Ceilings(key=key, measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), entries=tuple(entries))
    if persist:
        save_ceilings(result, store)
    return result
