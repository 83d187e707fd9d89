"""Measured ceilings: the fastest this machine runs a matrix product per dtype (FLOP/s), a
streaming read per cache level and a large copy (bytes/s), stored per machine, thread count and
software, and reused.

Compute: ``torch.mm`` of two n x n matrices, ``2 n^3`` FLOP per call, swept over the backend's
sizes (CPU 256 to 4096) per dtype; the sweep stops after ``PATIENCE`` sizes in a row that do not
beat the best by ``IMPROVE``, before a size whose projected call exceeds ``CALL_CAP_S``, or once
``DTYPE_BUDGET_S`` is spent. Then the same product through the other kernels a layer of that dtype
runs (``KERNELS``: ``F.linear`` and a 1x1 convolution, which torch sends to oneDNN where ``torch.mm``
may take a slow path: CPU fp16 ``mm`` ran at a tenth of fp16 ``linear``) at the winning n: the
ceiling is the fastest of them all (its fastest sample), and its op and n are stored. A dtype is
*native* only where its ceiling is at least ``NATIVE_MARGIN`` x the fp32 one. CPU: a one-thread fp32
GEMM gives the effective clock (``harness.devices.cpu.effective_clock_ghz``), and the dependent-add
chain of ``harness.devices.clock`` the clock each CPU runs at (the ``clock`` entry): the formula
peak uses it. A ceiling above the formula peak is a defect of the peak (its clock or FLOP per cycle),
said with the numbers (``defects``), never stored silently.

Memory levels (ERT-style): for each cache level, ``x.expand(r, n).sum(1)`` (r row sums, split over
the threads, each streaming the whole buffer) over an fp32 buffer of
``LEVEL_FRACTION`` x the level's (capped) size per instance, read ``r`` times per call
(``LEVEL_READ_BYTES`` per call), so each thread streams a buffer resident in that level: bytes
read / best sample. Main memory (DRAM, HBM): ``dst.copy_(src)`` over ``4 x`` the caches' total
capacity (at most the backend's ``buffer_cap_bytes``, 1 GiB), counted as 2 x its bytes (STREAM's
copy convention: write-allocate traffic not counted).

A run looks its ceilings up when it starts (``lookup``) and stores them in every row, so analysis
never reads this store.

An accelerator (CUDA) is calibrated in a worker process (``calibrate_in_worker``): the GEMMs and
buffers would leave a CUDA context and the allocator's cache (1-2 GB) in the run's own process
while its workers measure, and on an EXCLUSIVE_PROCESS GPU no worker could then open the device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from harness.backends import Device, MemoryLevel, resolve_device
from harness.devices.clock import measure_clock
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

    kind: str          # "compute", "one_thread" (fp32 GEMM on one thread), "memory" (the main-memory copy),
    #                    "clock" (the CPU clock, Hz, measured by a dependent-add chain on each CPU) or "launch"
    dtype: str         # dtype of the GEMM ("tf32": fp32 with TF32 allowed); "fp32" for the copy
    value: float       # best rate: work / fastest sample; "launch": seconds, the median of a trivial op's call
    size: int          # GEMM n (the sweep's winner), or copy buffer bytes
    median_s: float
    rel_iqr: float
    reps: int
    note: str = ""
    native: bool | None = None                        # compute: >= NATIVE_MARGIN x the fp32 ceiling
    sweep: tuple[tuple[int, float], ...] = ()         # compute: (n, FLOP/s) per size tried, in order
    op: str = "mm"                                    # compute: the kernel that set the ceiling (``KERNELS``)


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

    @property
    def clock_mhz(self) -> float | None:
        """The CPU clock measured by the dependent-add chain (MHz), or ``None``."""
        e = self.entry("clock")
        return e.value / 1e6 if e else None

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
        op, rate, m = max([("mm", rate, m), *_kernels(device, tdtype, n, size_budget_s, threads, measure_fn)],
                          key=lambda k: k[1])
    note = (f"best of {len(sweep)} sizes (stopped: {reason}); the fastest of {', '.join(KERNELS)} at n={n}: {op}"
            + ("; tf32 allowed" if dtype == "tf32" else ""))
    return Ceiling("compute", dtype, rate, n, m.median, m.stats.rel_iqr, m.stats.n, note, sweep=tuple(sweep), op=op)


#: The kernels a dtype's GEMM ceiling is the fastest of: ``torch.mm``, ``F.linear`` (addmm, oneDNN's
#: matmul on CPU) and a 1x1 convolution (oneDNN's convolution), the same n x n x n product.
KERNELS = ("mm", "linear", "conv1x1")


def _kernels(device: Device, dtype: torch.dtype, n: int, size_budget_s: float, threads: int | None,
             measure_fn: MeasureFn) -> list[tuple[str, float, Measurement]]:
    """(op, FLOP/s, measurement) of the n x n x n product through ``F.linear`` and a 1x1 convolution
    (an n-channel 1 x 1 conv over an image of about n pixels: 2 n^2 HW FLOP)."""
    side = max(1, round(math.sqrt(n)))
    (a, b), = random_inputs([(n, n), (n, n)], dtype, device.tensors, seed=1)
    (x, w), = random_inputs([(1, n, side, side), (n, n, 1, 1)], dtype, device.tensors, seed=2)
    out = []
    for op, fn, args, flops in (("linear", F.linear, (a, b), 2 * n**3), ("conv1x1", F.conv2d, (x, w),
                                                                           2 * n * n * side * side)):
        m = measure_fn(fn, device=device, inputs=[args], threads=threads, budget_s=size_budget_s, warmup_s=0.05)
        out.append((op, flops / _best(m), m))
    return out


def _clock(device: Device, threads: int) -> Ceiling | None:
    """The clock of the CPUs a run of ``threads`` threads uses (``harness.devices.clock``), as a
    ``clock`` entry: value Hz (the median over CPUs), size the CPUs read, rel_iqr their spread."""
    cpus = sorted(_cpus())[: max(1, threads)]
    reading = measure_clock(cpus)
    if reading is None:
        return None
    per_cpu = ", ".join(f"{x:.0f}" for x in reading.per_cpu_mhz)
    return Ceiling("clock", "-", reading.mhz * 1e6, len(cpus), 0.0, reading.spread, len(cpus),
                   f"dependent-add chain on CPUs {cpus}: {per_cpu} MHz")


def _cpus() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:
        return set(range(os.cpu_count() or 1))


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
    """What a ``calibrate`` call measures: GEMM dtypes (fp32 first), the one-thread GEMM, the memory
    levels, the CPU clock."""

    dtypes: tuple[str, ...]
    one_thread: bool
    memory: bool
    clock: bool = False
    #: The launch floor (files before it lack it): measured by ``calibrate`` when missing, without
    #: making a plan non-empty (a run measures nothing for it alone; ``layerbench calibrate`` does).
    launch: bool = dataclasses.field(default=False, compare=False)

    @property
    def empty(self) -> bool:
        return not (self.dtypes or self.one_thread or self.memory or self.clock)


def plan(dtypes: Sequence[str], old: Ceilings | None, force: bool, one_thread_gemm: bool,
         clock: bool = False) -> Plan:
    """What is missing from ``old`` (everything with ``force``): the dtypes not stored (plus fp32,
    the native verdict's reference, when a half dtype is measured and no fp32 is stored), the
    one-thread GEMM where the backend has one, the memory levels (old files have none), and the CPU
    clock where the device is the host (``clock``; measured again with any GEMM)."""
    todo = [d for d in dtypes if force or old is None or old.compute(d) is None]
    has_fp32 = old is not None and not force and old.compute("fp32") is not None
    if todo and "fp32" not in todo and not has_fp32 and any(d != "tf32" for d in todo):
        todo.append("fp32")
    todo.sort(key=lambda d: d != "fp32")
    one = one_thread_gemm and (force or old is None or old.one_thread is None or "fp32" in todo)
    memory = force or old is None or not old.bandwidth or not old.levels
    tick = clock and (force or old is None or old.clock_mhz is None or bool(todo))
    return Plan(tuple(dict.fromkeys(todo)), one, memory, tick,
                launch=force or old is None or old.launch is None)


def defects(ceilings: Ceilings, device: Device, threads: int) -> list[str]:
    """One sentence per GEMM ceiling above the theoretical peak its device's backend gives (at the
    measured clock): the peak is wrong (its clock or its FLOP per cycle), not the measurement."""
    out = []
    for e in ceilings.entries:
        if e.kind != "compute":
            continue
        p = device.backend.peak(device, e.dtype, threads, ceilings.one_thread, clock_mhz=ceilings.clock_mhz)
        if p is not None and p.flops and e.value > p.flops:
            out.append(f"{e.dtype} {e.op} ceiling {e.value / 1e9:.4g} GFLOP/s is {e.value / p.flops:.0%} of the "
                       f"theoretical peak {p.flops / 1e9:.4g} GFLOP/s ({p.source}): a defect of the peak (its clock "
                       "or FLOP per cycle), not of the measurement")
    return out + level_defects(ceilings.levels)


def level_defects(levels: Sequence[LevelCeiling]) -> list[str]:
    """One sentence per cache level read slower than a level outside it (both by the ``sum`` kernel):
    its buffer did not stay in that level, or the host was busier while it was read; a row whose set
    fits it would get a lower roof than a larger one."""
    out = []
    for i, inner in enumerate(levels):
        outer = next((o for o in levels[i + 1:] if o.kernel == inner.kernel == "sum" and o.value > inner.value), None)
        if outer is not None:
            name, other = inner.level, outer.level
            out.append(f"{name} read {inner.value / 1e9:.4g} GB/s is below {other}'s {outer.value / 1e9:.4g} GB/s: "
                       f"the {name} reads did not stay in {name}, or the host was busier while they ran; a row that "
                       f"fits {name} gets a lower roof than one that fits {other} (`layerbench calibrate --force` on "
                       "a quiet host)")
    return out


def with_defects(ceilings: Ceilings, device: Device, threads: int) -> Ceilings:
    """``ceilings`` with each defect of the peak (``defects``) logged as a warning and kept in its
    entry's note (never stored silently)."""
    found = defects(ceilings, device, threads)
    for line in found:
        log.warning("calibrate: %s", line)
    if not found:
        return ceilings
    entries = tuple(dataclasses.replace(e, note=f"{e.note}; ABOVE THE THEORETICAL PEAK: {line}")
                    if e.kind == "compute" and (line := next((x for x in found if x.startswith(f"{e.dtype} ")), None))
                    else e for e in ceilings.entries)
    return dataclasses.replace(ceilings, entries=entries)


def busy_since(before: Any) -> float | None:
    """Share of the CPUs other processes used since ``before`` (``hostload.sample()``): above
    ``BUSY_LIMIT``, the ceilings just measured understate the machine and are not stored."""
    return hostload.host_busy(before, hostload.sample())


def calibrate(device: str | Device = "cpu", dtypes: Sequence[str] = ("fp32", "bf16", "fp16"), *,
              threads: int | None = None, budget_s: float = SIZE_BUDGET_S, dtype_budget_s: float = DTYPE_BUDGET_S,
              store: str | Path | None = None, persist: bool = True, force: bool = False,
              measure_fn: MeasureFn = measure, isolate: bool | None = None) -> Ceilings:
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
        isolate: measure in a worker process (``calibrate_in_worker``); default: for an
            accelerator, unless this process is that worker or ``measure_fn`` cannot be imported
            by name there (a test's closure).

    Returns:
        ``Ceilings``: the stored ones when the key (machine, device, threads, torch/CUDA/cuDNN/driver
        versions) matches and they hold everything asked, else completed by measuring what is
        missing (``plan``) and saved.
    """
    for d in dtypes:
        if d not in CALIBRATE_DTYPES:
            raise SpecError("dtype", d, "one of " + ", ".join(CALIBRATE_DTYPES))
    device = resolve_device(device)
    if _isolate(device, measure_fn, isolate):
        return calibrate_in_worker(device, dtypes, threads=threads, budget_s=budget_s, dtype_budget_s=dtype_budget_s,
                                   store=store, persist=persist, force=force, measure_fn=measure_fn)
    backend = device.backend
    key = machine_key(device, threads)
    old = load_ceilings(key, store) if persist and not force else None
    todo = plan(dtypes, old, force, backend.calibration.one_thread_gemm, device.host)
    launch = todo.launch
    if old is not None and todo.empty and not launch:
        log.info("reusing ceilings measured %s", old.measured_at)
        return old
    before = hostload.sample()
    tick = _clock(device, threads or torch.get_num_threads()) if todo.clock else None   # first: a quiet CPU
    fresh = [_gemm(device, d, budget_s, dtype_budget_s, threads, measure_fn) for d in todo.dtypes]
    entries = [e for e in (old.entries if old is not None else ()) if not (
        (e.kind == "compute" and e.dtype in todo.dtypes) or (e.kind == "one_thread" and todo.one_thread)
        or (e.kind == "memory" and todo.memory) or (e.kind == "clock" and todo.clock)
        or (e.kind == "launch" and launch))] + fresh
    entries += [tick] if tick is not None else []
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
    result = Ceilings(key=key, measured_at=now_iso(), entries=with_verdicts(entries), levels=levels)
    result = with_defects(result, device, threads or torch.get_num_threads())
    busy = busy_since(before) if device.host else None
    if persist and busy is not None and busy > BUSY_LIMIT:
        log.warning("calibrate: other processes used %.0f %% of the CPUs while the ceilings were measured: they are "
                    "used for this run only, not stored (they would understate this machine); calibrate again on a "
                    "quieter host", 100 * busy)
    elif persist:
        save_ceilings(result, store)
    return result


# --- calibration in a worker process ----------------------------------------------------------------------

#: Set in a calibration worker's environment: calibrate measures in that process.
WORKER_ENV = "LAYERBENCH_CALIBRATION_WORKER"
#: What a calibration worker runs (``-c``: the package imports this module; ``-m`` would load it twice).
WORKER_CODE = "import sys; from harness.ceilings.calibrate import worker_main; worker_main(sys.argv[1], sys.argv[2])"


def _import_name(fn: Callable[..., Any]) -> str | None:
    """``module:qualname`` of a module-level function (a worker imports it), else ``None``."""
    name = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    return None if "<" in name or name.startswith(("__main__", ":")) or name.endswith(":") else name


def _isolate(device: Device, measure_fn: MeasureFn, isolate: bool | None) -> bool:
    if os.environ.get(WORKER_ENV):
        return False
    if isolate is None:
        return bool(device.backend.accelerator) and _import_name(measure_fn) is not None
    if isolate and _import_name(measure_fn) is None:
        raise SpecError("measure_fn", measure_fn, "a module-level function (a calibration worker imports it)")
    return isolate


def _worker_env() -> dict[str, str]:
    """This environment, marked as a calibration worker's, with Python's path (``measure_fn`` imports)."""
    env = dict(os.environ)
    env[WORKER_ENV] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def run_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Run one calibration job in a fresh interpreter (``WORKER_CODE``) and return its ``Ceilings``
    JSON. The worker's log goes to this process's stderr; ``RuntimeError`` when it fails."""
    with tempfile.TemporaryDirectory(prefix="layerbench-calibrate-") as tmp:
        src, dst = Path(tmp) / "job.json", Path(tmp) / "ceilings.json"
        src.write_text(json.dumps(job))
        code = subprocess.run([sys.executable, "-c", WORKER_CODE, str(src), str(dst)], env=_worker_env()).returncode
        if code != 0 or not dst.exists():
            raise RuntimeError(f"the calibration worker exited with code {code} (its log is above)")
        return json.loads(dst.read_text())


def calibrate_in_worker(device: Device, dtypes: Sequence[str], *, threads: int | None = None,
                        budget_s: float = SIZE_BUDGET_S, dtype_budget_s: float = DTYPE_BUDGET_S,
                        store: str | Path | None = None, persist: bool = True, force: bool = False,
                        measure_fn: MeasureFn = measure) -> Ceilings:
    """``calibrate`` in a fresh process (``run_worker``): this process never opens the device for
    it, so it holds no context or cached memory while a run's workers measure. The worker resolves
    the same device spec (CUDA_VISIBLE_DEVICES is inherited) and reads and writes the same store."""
    name = _import_name(measure_fn)
    if name is None:
        raise SpecError("measure_fn", measure_fn, "a module-level function (a calibration worker imports it)")
    job = {"device": device.spec, "dtypes": list(dtypes), "threads": threads, "budget_s": budget_s,
           "dtype_budget_s": dtype_budget_s, "store": str(store) if store is not None else None,
           "persist": persist, "force": force, "measure_fn": name}
    return Ceilings.from_json(run_worker(job))


def worker_main(job_path: str, out_path: str) -> None:
    """In a calibration worker: calibrate as the job says and write the ``Ceilings`` JSON."""
    job = json.loads(Path(job_path).read_text())
    module, _, qualname = job.pop("measure_fn").partition(":")
    fn: Any = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    result = calibrate(job.pop("device"), job.pop("dtypes"), measure_fn=fn, isolate=False, **job)
    Path(out_path).write_text(json.dumps(result.to_json(), default=str))
