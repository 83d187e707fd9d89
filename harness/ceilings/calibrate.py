"""Measured ceilings: the fastest this machine runs a matrix product per dtype (FLOP/s), a
streaming read per cache level and a large copy (bytes/s), stored per machine, thread count and
software, and reused.

Compute: ``torch.mm`` of two n x n matrices, ``2 n^3`` FLOP per call, swept over the backend's
sizes (CPU 256 to 4096) per dtype; the ceiling is the best rate of the sweep (its fastest sample)
and its n is stored. The sweep stops after ``PATIENCE`` sizes in a row that do not beat the best by
``IMPROVE``, before a size whose projected call exceeds ``CALL_CAP_S``, or once ``DTYPE_BUDGET_S``
is spent. A dtype is *native* only where its ceiling is at least ``NATIVE_MARGIN`` x the fp32 one.
CPU: a one-thread fp32 GEMM gives the effective clock (``harness.devices.cpu.effective_clock_ghz``).

Memory levels (ERT-style): for each cache level, ``x.expand(r, n).sum(1)`` (r row sums, split over
the threads, each streaming the whole buffer) over an fp32 buffer of
``LEVEL_FRACTION`` x the level's (capped) size per instance, read ``r`` times per call
(``LEVEL_READ_BYTES`` per call), so each thread streams a buffer resident in that level: bytes
read / best sample. Main memory (DRAM, HBM): ``dst.copy_(src)`` over ``4 x`` the caches' total
capacity (at most the backend's ``buffer_cap_bytes``, 1 GiB), counted as 2 x its bytes (STREAM's
copy convention: write-allocate traffic not counted).

A run looks its ceilings up when it starts (``lookup``) and stores them in every row, so analysis
never reads this store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.backends import Device, MemoryLevel, resolve_device
from harness.devices.cpu import cache_dir
from harness.devices.identity import describe_machine_identity
from harness.errors import SpecError
from harness.record import now_iso
from harness.timing import Measurement, hostload, measure, random_inputs
from harness.timing.stability import BUSY_LIMIT

log = logging.getLogger(__name__)

CALIBRATE_DTYPES = ("fp32", "tf32", "fp16", "bf16")
#: Each sweep step (one GEMM size, one memory level) is measured for about this long (seconds).
SIZE_BUDGET_S = 0.3
#: A dtype's GEMM sweep starts no new size once this many seconds are spent.
DTYPE_BUDGET_S = 12.0
#: A size whose projected call (the last call x (n'/n)^3) exceeds this is not started (seconds).
CALL_CAP_S = 0.5
#: A size "improves" when it beats the best rate so far by this factor; the sweep stops after
#: ``PATIENCE`` sizes in a row that do not.
IMPROVE, PATIENCE = 1.02, 2
#: A dtype is native when its GEMM ceiling is at least this multiple of the fp32 one (torch's CPU
#: fp16 GEMM ran at the fp32 rate on an AVX512_FP16 Xeon: the flag alone is not a unit torch uses).
NATIVE_MARGIN = 1.3
#: Cache-level buffers are this fraction of one instance of the level (the rest: code, stack, the other buffers).
LEVEL_FRACTION = 0.5
#: Bytes one call of the cache-level kernel reads (the buffer, repeated): 64 MiB amortises the call overhead.
LEVEL_READ_BYTES = 64 * 2**20
#: Main memory: the copy buffer is this multiple of the caches' total capacity.
MAIN_MEMORY_FACTOR = 4
#: The one-thread fp32 GEMM uses the fp32 winner's n, at most this.
ONE_THREAD_N_CAP = 1536


def default_store() -> Path:
    """Where ceilings are stored unless told: ``$LAYERBENCH_CEILINGS``, else
    ``~/.cache/layerbench/ceilings`` (``$LAYERBENCH_CACHE`` moves the cache)."""
    return Path(os.environ.get("LAYERBENCH_CEILINGS") or cache_dir() / "ceilings")


@dataclass(frozen=True, slots=True)
class Ceiling:
    """One measured ceiling. ``value`` is FLOP/s (``compute``) or bytes/s (``memory``)."""

    kind: str          # "compute", "one_thread" (fp32 GEMM on one thread), "memory" (the main-memory copy), "launch"
    dtype: str         # dtype of the GEMM ("tf32": fp32 with TF32 allowed); "fp32" for the copy
    value: float       # best rate: work / fastest sample; "launch": seconds, the median of a trivial op's call
    size: int          # GEMM n (the sweep's winner), or copy buffer bytes
    median_s: float
    rel_iqr: float
    reps: int
    note: str = ""
    native: bool | None = None                        # compute: >= NATIVE_MARGIN x the fp32 ceiling
    sweep: tuple[tuple[int, float], ...] = ()         # compute: (n, FLOP/s) per size tried, in order


@dataclass(frozen=True, slots=True)
class LevelCeiling:
    """Measured bandwidth of one memory level (bytes/s).

    Attributes:
        level: ``L1``, ``L2``, ``L3``, ``DRAM`` or ``HBM``.
        value: bytes/s: read (cache levels, ``sum`` kernel) or read + written (main memory, ``copy``).
        buffer_bytes: the buffer the kernel streams.
        cache_bytes: one instance of the level as used (capped), the size the buffer came from; ``None``
            for main memory.
        capacity_bytes: what a row's working set is compared with (``MemoryLevel.capacity``).
        reported_bytes: one instance as the device reported it.
        kernel: ``sum`` or ``copy``; repeats: buffer reads per call.
    """

    level: str
    value: float
    buffer_bytes: int
    cache_bytes: int | None
    capacity_bytes: int | None
    reported_bytes: int | None
    kernel: str
    repeats: int
    median_s: float
    rel_iqr: float
    reps: int


@dataclass(frozen=True, slots=True)
class Ceilings:
    """The ceilings of one device under one software stack (``key``), and when they were measured."""

    key: dict[str, Any]
    measured_at: str
    entries: tuple[Ceiling, ...]
    levels: tuple[LevelCeiling, ...] = ()        # empty in files written before levels were measured

    def compute(self, dtype: str) -> float | None:
        """Measured GEMM FLOP/s for ``dtype``, or ``None`` if not calibrated."""
        e = self.entry("compute", dtype)
        return e.value if e else None

    def entry(self, kind: str, dtype: str = "fp32") -> Ceiling | None:
        return next((c for c in self.entries if c.kind == kind and (kind != "compute" or c.dtype == dtype)), None)

    @property
    def one_thread(self) -> float | None:
        """Measured one-thread fp32 GEMM FLOP/s (CPU), or ``None``."""
        e = self.entry("one_thread")
        return e.value if e else None

    def level(self, name: str) -> LevelCeiling | None:
        return next((lv for lv in self.levels if lv.level == name), None)

    def levels_json(self) -> str | None:
        """The row's ``ceiling_levels``: a JSON list, innermost level first, of ``level``, ``bytes_s``,
        ``buffer_bytes``, ``cache_bytes``, ``capacity_bytes``, ``reported_bytes``, ``kernel``."""
        if not self.levels:
            return None
        return json.dumps([{"level": lv.level, "bytes_s": lv.value, "buffer_bytes": lv.buffer_bytes,
                            "cache_bytes": lv.cache_bytes, "capacity_bytes": lv.capacity_bytes,
                            "reported_bytes": lv.reported_bytes, "kernel": lv.kernel} for lv in self.levels])

    @property
    def launch(self) -> float | None:
        """Measured launch/dispatch floor (seconds per call of a trivial op on the device), or ``None``."""
        e = self.entry("launch")
        return e.value if e else None

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
                "entries": [dataclasses.asdict(c) for c in self.entries],
                "levels": [dataclasses.asdict(lv) for lv in self.levels]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Ceilings:
        """Read ``to_json``'s form; files from before sweeps and levels (no ``sweep``, ``native``,
        ``levels``) load with those empty."""
        entries = tuple(Ceiling(**{**c, "sweep": tuple((int(n), float(v)) for n, v in c.get("sweep", ()))})
                        for c in d["entries"])
        return cls(key=d["key"], measured_at=d["measured_at"], entries=entries,
                   levels=tuple(LevelCeiling(**lv) for lv in d.get("levels", ())))


def machine_key(device: str | Device, threads: int | None = None) -> dict[str, Any]:
    """What a ceiling depends on: the machine (``machine_id``), device, software, and what the
    backend adds (``Backend.ceiling_key``: a CPU's thread count, a GPU's cuDNN and driver)."""
    device = resolve_device(device)
    info = describe_machine_identity(threads)
    key: dict[str, Any] = {"machine_id": info.machine_id, "device": device.type, "device_name": device.name,
                           "torch": torch.__version__, "cuda": torch.version.cuda}
    key.update(device.backend.ceiling_key(device, info.threading.threads, info.software))
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
Clock = Callable[[], float]


def _best(m: Measurement) -> float:
    """The fastest sample (seconds per call): a ceiling is the best rate observed."""
    return min(m.samples_s)


def _gemm(device: Device, dtype: str, size_budget_s: float, dtype_budget_s: float, threads: int | None,
          measure_fn: MeasureFn, clock: Clock = time.perf_counter) -> Ceiling:
    """The GEMM sweep of one dtype; the best size wins (module docstring for when it stops)."""
    backend = device.backend
    sweep: list[tuple[int, float]] = []
    best: tuple[int, float, Measurement] | None = None
    reason, stale, t0 = "largest size", 0, clock()
    sizes = backend.calibration.gemm_sizes
    with backend.gemm_dtype(dtype) as tdtype:
        for i, n in enumerate(sizes):
            a, b = random_inputs([(n, n), (n, n)], tdtype, device.tensors, seed=0)[0]
            m = measure_fn(torch.mm, device=device, inputs=[(a, b)], threads=threads, budget_s=size_budget_s,
                           warmup_s=0.05)
            del a, b
            rate = 2 * n**3 / _best(m)
            sweep.append((n, rate))
            stale = 0 if best is None or rate > IMPROVE * best[1] else stale + 1
            if best is None or rate > best[1]:
                best = (n, rate, m)
            if stale >= PATIENCE:
                reason = f"{PATIENCE} sizes without a {IMPROVE - 1:.0%} gain"
                break
            if i + 1 < len(sizes) and m.estimate_s * (sizes[i + 1] / n) ** 3 > CALL_CAP_S:
                reason = f"n={sizes[i + 1]} would take over {CALL_CAP_S:g} s a call"
                break
            if clock() - t0 >= dtype_budget_s:
                reason = f"{dtype_budget_s:g} s spent"
                break
    assert best is not None
    n, rate, m = best
    note = f"best of {len(sweep)} sizes (stopped: {reason})" + ("; tf32 allowed" if dtype == "tf32" else "")
    return Ceiling("compute", dtype, rate, n, m.median, m.stats.rel_iqr, m.stats.n, note, sweep=tuple(sweep))


def _one_thread(device: Device, n: int, size_budget_s: float, measure_fn: MeasureFn) -> Ceiling:
    """fp32 GEMM on one thread (its rate / FLOP per cycle of a core = the effective clock)."""
    a, b = random_inputs([(n, n), (n, n)], torch.float32, device.tensors, seed=0)[0]
    m = measure_fn(torch.mm, device=device, inputs=[(a, b)], threads=1, budget_s=size_budget_s, warmup_s=0.05)
    return Ceiling("one_thread", "fp32", 2 * n**3 / _best(m), n, m.median, m.stats.rel_iqr, m.stats.n,
                   "1 thread: the effective clock")


def _launch(device: Device, threads: int | None, size_budget_s: float, measure_fn: MeasureFn) -> Ceiling:
    """The launch/dispatch floor: the median call of ``torch.neg`` on a one-element tensor of the device
    (a CPU's ATen dispatch, a GPU's kernel launch), the cost each launch a row makes adds at least."""
    (x,) = random_inputs([(1,)], torch.float32, device.tensors, seed=0)[0]
    m = measure_fn(torch.neg, device=device, inputs=[(x,)], threads=threads, budget_s=size_budget_s, warmup_s=0.05)
    return Ceiling("launch", "fp32", m.median, 1, m.median, m.stats.rel_iqr, m.stats.n,
                   "median call of torch.neg on one element: the launch/dispatch floor")


def level_buffers(levels: Sequence[MemoryLevel], threads: int, cap_bytes: int,
                  fallback_bytes: int) -> list[tuple[MemoryLevel, int, int]]:
    """(level, buffer bytes, repeats per call) for each level: ``LEVEL_FRACTION`` of a cache
    instance (a multiple of 4 KiB, at least 4 KiB) read ``LEVEL_READ_BYTES / buffer`` times; main
    memory ``MAIN_MEMORY_FACTOR x`` the caches' total capacity (``fallback_bytes`` when none is
    known), never above ``cap_bytes``."""
    out = []
    caches = [lv for lv in levels if lv.cache_bytes]
    for lv in caches:
        buf = max(4096, int(lv.cache_bytes * LEVEL_FRACTION) // 4096 * 4096)
        out.append((lv, min(buf, cap_bytes), max(1, math.ceil(LEVEL_READ_BYTES / buf))))
    total = sum(lv.capacity(threads) or 0 for lv in caches)
    main = next((lv for lv in levels if lv.cache_bytes is None), None)
    if main is not None:
        out.append((main, min(cap_bytes, MAIN_MEMORY_FACTOR * total if total else fallback_bytes), 1))
    return out


def _levels(device: Device, threads: int | None, size_budget_s: float,
            measure_fn: MeasureFn) -> tuple[tuple[LevelCeiling, ...], Ceiling]:
    """Each level's bandwidth (module docstring), and the main-memory copy as a ``memory`` ceiling."""
    backend = device.backend
    t = threads or torch.get_num_threads()
    sizes = backend.calibration
    out = []
    copy: Ceiling | None = None
    for lv, nbytes, repeats in level_buffers(backend.memory_levels(device), t, sizes.buffer_cap_bytes,
                                             sizes.copy_fallback_bytes):
        (src,) = random_inputs([(nbytes // 4,)], torch.float32, device.tensors, seed=0)[0]
        if lv.cache_bytes is None:
            dst = torch.empty_like(src)
            m = measure_fn(dst.copy_, device=device, inputs=[(src,)], threads=threads, budget_s=size_budget_s,
                           warmup_s=0.05)
            value, kernel = 2 * nbytes / _best(m), "copy"
            copy = Ceiling("memory", "fp32", value, nbytes, m.median, m.stats.rel_iqr, m.stats.n,
                           "copy: bytes read + written")
            del dst
        else:
            m = measure_fn(torch.sum, device=device, inputs=[(src.expand(repeats, src.numel()), 1)],
                           threads=threads, budget_s=size_budget_s, warmup_s=0.05)
            value, kernel = repeats * nbytes / _best(m), "sum"
        out.append(LevelCeiling(lv.name, value, nbytes, lv.cache_bytes, lv.capacity(t), lv.reported_bytes, kernel,
                                repeats, m.median, m.stats.rel_iqr, m.stats.n))
        del src
    assert copy is not None, "a backend's memory_levels ends with main memory"
    return tuple(out), copy


def with_verdicts(entries: Sequence[Ceiling]) -> tuple[Ceiling, ...]:
    """``entries`` with ``native`` set on each GEMM ceiling: fp32 is; another dtype is when its
    ceiling is at least ``NATIVE_MARGIN`` x the fp32 one (unknown without an fp32 ceiling)."""
    ref = next((e.value for e in entries if e.kind == "compute" and e.dtype == "fp32"), None)
    out = []
    for e in entries:
        if e.kind == "compute":
            native = True if e.dtype == "fp32" else (None if ref is None else e.value >= NATIVE_MARGIN * ref)
            e = dataclasses.replace(e, native=native)
        out.append(e)
    return tuple(out)


def lookup(device: str | Device, threads: int | None, store: str | Path | None = None) -> Ceilings | None:
    """The stored ceilings of this machine, device, thread count and software, if any."""
    return load_ceilings(machine_key(device, threads), store)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a ``calibrate`` call measures: GEMM dtypes (fp32 first), the one-thread GEMM, the memory levels."""

    dtypes: tuple[str, ...]
    one_thread: bool
    memory: bool
    #: The launch floor (files before it lack it): measured by ``calibrate`` when missing, without
    #: making a plan non-empty (a run measures nothing for it alone; ``layerbench calibrate`` does).
    launch: bool = dataclasses.field(default=False, compare=False)

    @property
    def empty(self) -> bool:
        return not (self.dtypes or self.one_thread or self.memory)


def plan(dtypes: Sequence[str], old: Ceilings | None, force: bool, one_thread_gemm: bool) -> Plan:
    """What is missing from ``old`` (everything with ``force``): the dtypes not stored (plus fp32,
    the native verdict's reference, when a half dtype is measured and no fp32 is stored), the
    one-thread GEMM where the backend has one, and the memory levels (old files have none)."""
    todo = [d for d in dtypes if force or old is None or old.compute(d) is None]
    has_fp32 = old is not None and not force and old.compute("fp32") is not None
    if todo and "fp32" not in todo and not has_fp32 and any(d != "tf32" for d in todo):
        todo.append("fp32")
    todo.sort(key=lambda d: d != "fp32")
    one = one_thread_gemm and (force or old is None or old.one_thread is None or "fp32" in todo)
    memory = force or old is None or not old.bandwidth or not old.levels
    return Plan(tuple(dict.fromkeys(todo)), one, memory, launch=force or old is None or old.launch is None)


def busy_since(before: Any) -> float | None:
    """Share of the CPUs other processes used since ``before`` (``hostload.sample()``): above
    ``BUSY_LIMIT``, the ceilings just measured understate the machine and are not stored."""
    return hostload.host_busy(before, hostload.sample())


def calibrate(device: str | Device = "cpu", dtypes: Sequence[str] = ("fp32", "bf16", "fp16"), *,
              threads: int | None = None, budget_s: float = SIZE_BUDGET_S, dtype_budget_s: float = DTYPE_BUDGET_S,
              store: str | Path | None = None, persist: bool = True, force: bool = False,
              measure_fn: MeasureFn = measure) -> Ceilings:
    """Measure (or reuse) the GEMM ceiling per dtype, the one-thread fp32 GEMM (CPU) and the
    bandwidth of each memory level of ``device``.

    Args:
        device: ``cpu`` or ``cuda[:N]`` (resolved here), or a resolved ``Device``.
        dtypes: GEMM dtypes (``fp32``, ``tf32`` on CUDA, ``fp16``, ``bf16``).
        threads: CPU threads (part of the key: a 1-thread ceiling is not a 2-thread one).
        budget_s: seconds of each measurement (one GEMM size, one memory level).
        dtype_budget_s: a dtype's sweep starts no new size after this many seconds.
        store: directory of the per-machine JSON files (default ``default_store()``).
        persist: read and write the store (``False``: always measure, keep nothing).
        force: measure everything again even when stored ceilings match.
        measure_fn: the timer (tests inject a fake).

    Returns:
        ``Ceilings``: the stored ones when the key (machine, device, threads, torch/CUDA/cuDNN/driver
        versions) matches and they hold everything asked, else completed by measuring what is
        missing (``plan``) and saved.
    """
    for d in dtypes:
        if d not in CALIBRATE_DTYPES:
            raise SpecError("dtype", d, "one of " + ", ".join(CALIBRATE_DTYPES))
    device = resolve_device(device)
    backend = device.backend
    key = machine_key(device, threads)
    old = load_ceilings(key, store) if persist and not force else None
    todo = plan(dtypes, old, force, backend.calibration.one_thread_gemm)
    launch = todo.launch
    if old is not None and todo.empty and not launch:
        log.info("reusing ceilings measured %s", old.measured_at)
        return old
    before = hostload.sample()
    fresh = [_gemm(device, d, budget_s, dtype_budget_s, threads, measure_fn) for d in todo.dtypes]
    entries = [e for e in (old.entries if old is not None else ()) if not (
        (e.kind == "compute" and e.dtype in todo.dtypes) or (e.kind == "one_thread" and todo.one_thread)
        or (e.kind == "memory" and todo.memory) or (e.kind == "launch" and launch))] + fresh
    if todo.one_thread:
        fp32 = next((e for e in entries if e.kind == "compute" and e.dtype == "fp32"), None)
        n = min(fp32.size, ONE_THREAD_N_CAP) if fp32 else ONE_THREAD_N_CAP
        entries.append(_one_thread(device, n, budget_s, measure_fn))
    if launch:
        entries.append(_launch(device, threads, budget_s, measure_fn))
    levels = old.levels if old is not None else ()
    if todo.memory:
        levels, copy = _levels(device, threads, budget_s, measure_fn)
        entries.append(copy)
    result = Ceilings(key=key, measured_at=now_iso(), entries=with_verdicts(entries),
                      levels=levels)
    busy = busy_since(before) if device.host else None
    if persist and busy is not None and busy > BUSY_LIMIT:
        log.warning("calibrate: other processes used %.0f %% of the CPUs while the ceilings were measured: they are "
                    "used for this run only, not stored (they would understate this machine); calibrate again on a "
                    "quieter host", 100 * busy)
    elif persist:
        save_ceilings(result, store)
    return result
