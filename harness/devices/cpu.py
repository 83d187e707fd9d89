"""What CPU this is: py-cpuinfo (cached: its first call can take over a second), Linux sysfs for
cache sizes (py-cpuinfo's are wrong in VMs), psutil for cores and clock, torch for its kernels,
and how busy the machine is when a run starts."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch

from harness.devices.peaks import Peak, cpu_flop_per_cycle, cpu_peak

log = logging.getLogger(__name__)

#: Other processes using more than this share of all CPUs (sampled over ``BUSY_SAMPLE_S``) make
#: timings unreliable: the description carries a warning.
BUSY_PERCENT_WARN = 20.0
BUSY_SAMPLE_S = 0.2
#: Flags worth showing (the full list is kept in ``flags``).
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile",
              "amx_bf16", "amx_fp16")


def cache_dir() -> Path:
    """Where layerbench caches machine facts: ``$LAYERBENCH_CACHE`` or ``~/.cache/layerbench``."""
    return Path(os.environ.get("LAYERBENCH_CACHE", Path.home() / ".cache" / "layerbench"))


def cpu_fingerprint() -> str:
    """Fingerprint of the CPU as the kernel reports it: model, flags, count (not the clock)."""
    lines = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "vendor_id", "cpu family", "model\t")):
                    lines.append(line)
                if line.strip() == "":
                    break
    except OSError:
        lines.append(platform.processor())
    lines.append(f"{os.cpu_count()} {platform.machine()} {platform.node()}")
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:16]


@functools.cache
def cpuinfo() -> dict[str, Any]:
    """``cpuinfo.get_cpu_info()``, cached in the process and on disk (keyed by the CPU's fingerprint)."""
    path = cache_dir() / f"cpuinfo-{cpu_fingerprint()}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    try:
        import cpuinfo as _cpuinfo  # deferred: without py-cpuinfo (or with its probe failing) the OS's facts serve
        info = json.loads(json.dumps(_cpuinfo.get_cpu_info()))     # the same types as read back from disk
    except Exception as e:       # py-cpuinfo missing or its probe failing: degrade to what the OS says
        log.warning("py-cpuinfo failed (%s); using platform facts only", e)
        return {"brand_raw": platform.processor(), "arch": platform.machine(), "count": os.cpu_count()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(path)
    except OSError:
        pass
    return info


def _sysfs_caches() -> dict[str, tuple[int, int]]:
    """Data/unified caches of cpu0 from /sys: level name (``L1d``, ``L2``, ``L3``) -> (bytes of one
    instance, logical CPUs sharing it); empty off Linux."""
    out: dict[str, tuple[int, int]] = {}
    for idx in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1:], 1)
        out[f"L{level}{'d' if level == '1' else ''}"] = (int(size.rstrip("KMG")) * mult, _shared_count(idx))
    return out


def _shared_count(idx: Path) -> int:
    """Logical CPUs in a cache's ``shared_cpu_list`` (``0-1,4`` -> 3); 1 when unreadable."""
    try:
        text = (idx / "shared_cpu_list").read_text().strip()
    except OSError:
        return 1
    count = 0
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return max(1, count)


#: The largest cache per core shipped in x86 server/desktop CPUs, with margin: a hypervisor's
#: report above ``per core x cores sharing the cache`` is capped to it. Sources: L1d 48 KiB
#: (Intel Golden Cove/Raptor Cove, AMD Zen 5; Intel and AMD optimization manuals); L2 3 MiB
#: (Intel Lion Cove), 2 MiB (Sapphire/Emerald/Granite Rapids), 1 MiB (Zen 4/5); L3 12 MiB per core
#: (AMD 3D V-Cache: 96 MiB per 8-core CCD, Ryzen 7 5800X3D, EPYC Genoa-X); Intel Xeon at most
#: 5 MiB (Emerald Rapids, 320 MiB / 64 cores).
CACHE_LIMIT_PER_CORE: dict[str, int] = {"L1d": 64 * 2**10, "L2": 4 * 2**20, "L3": 12 * 2**20}


@dataclass(frozen=True, slots=True)
class CacheLevel:
    """One data cache level as reported and as used.

    Attributes:
        name: ``L1d``, ``L2``, ``L3``.
        reported_bytes: one instance, as sysfs (or py-cpuinfo) reports it.
        shared_by: cores sharing one instance (1: private to a core).
        limit_bytes: ``CACHE_LIMIT_PER_CORE x shared_by``: the most that is plausible.
        used_bytes: ``min(reported, limit)``: what calibration, input rotation and analysis use.
        note: why it was capped (empty when it was not).
    """

    name: str
    reported_bytes: int
    shared_by: int
    limit_bytes: int
    used_bytes: int
    note: str = ""

    @property
    def capped(self) -> bool:
        return self.used_bytes < self.reported_bytes


def check_caches(reported: dict[str, tuple[int, int]], smt: int = 1,
                 hypervisor: bool = False) -> tuple[CacheLevel, ...]:
    """Cap each reported cache (``name -> (bytes per instance, logical CPUs sharing it)``) at
    ``CACHE_LIMIT_PER_CORE x cores sharing it`` (``smt`` logical CPUs per core).

    A VM's hypervisor may pass through the host's whole L3 (480 MiB on 2 vCPUs seen on this
    project's machines): sized from that, buffers meant to leave the cache would not."""
    out = []
    for name in ("L1d", "L2", "L3"):
        if name not in reported or not reported[name][0]:
            continue
        size, sharing = reported[name]
        cores = max(1, sharing // max(1, smt))
        limit = CACHE_LIMIT_PER_CORE[name] * cores
        note = ""
        if size > limit:
            note = (f"reported {_mib(size)} exceeds {_mib(CACHE_LIMIT_PER_CORE[name])}/core x {cores} "
                    f"core{'s' if cores > 1 else ''}{' (hypervisor report)' if hypervisor else ''}: "
                    f"capped to {_mib(limit)}")
        out.append(CacheLevel(name, size, cores, limit, min(size, limit), note))
    return tuple(out)


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n / 2**10:g} KiB"


def effective_clock_ghz(one_thread_flops_s: float, flop_per_cycle: int) -> float:
    """The clock a one-thread fp32 GEMM implies: FLOP/s / (FLOP/cycle of one core) / 1e9 (GHz).
    A lower bound on the real clock (no GEMM reaches every cycle's FMA)."""
    return one_thread_flops_s / flop_per_cycle / 1e9


@dataclass(frozen=True, slots=True)
class CpuDescription:
    """The CPU and its state at the start of a run.

    Attributes:
        brand, vendor, arch: as py-cpuinfo reports them.
        family, model: CPUID family/model (they tell Zen 1 from Zen 2, which share flags).
        logical_cpus, physical_cores, usable_cpus: ``os.cpu_count()``, psutil's physical
            cores, CPUs this process may run on (affinity).
        clock_ghz: psutil's max clock, else the current/advertised one (in VMs often not the
            clock the cores run at; ``peak`` takes the effective clock where it is higher).
        clock_reported_max: whether ``clock_ghz`` is a max clock the OS exposes (false in most VMs).
        l1d_bytes, l2_bytes, l3_bytes: one instance of L1d, L2, L3 as reported (sysfs; py-cpuinfo
            otherwise); ``caches`` holds them checked and capped (``check_caches``).
        hypervisor: the CPU flags say this runs under a hypervisor.
        flags: every ISA flag; torch_capability: the kernels torch dispatches (``AVX2``, ...).
        threads: ``torch.get_num_threads()``.
        load_avg: 1/5/15-minute load average; busy_percent: CPU use by everything while this
            process slept ``BUSY_SAMPLE_S`` seconds. warnings: what makes timings unreliable.
    """

    brand: str
    vendor: str
    arch: str
    family: int | None
    model: int | None
    logical_cpus: int
    physical_cores: int
    usable_cpus: int
    clock_ghz: float | None
    l1d_bytes: int | None
    l2_bytes: int | None
    l3_bytes: int | None
    caches: tuple[CacheLevel, ...]
    hypervisor: bool
    clock_reported_max: bool
    flags: tuple[str, ...]
    torch_capability: str
    threads: int
    load_avg: tuple[float, float, float] | None
    busy_percent: float | None
    warnings: tuple[str, ...]

    @property
    def cores_for_peak(self) -> int:
        """Physical cores this process can use (SMT siblings share the FMA units)."""
        return max(1, min(self.physical_cores, self.usable_cpus))

    def cache(self, name: str) -> CacheLevel | None:
        """The checked cache level ``L1d``, ``L2`` or ``L3``, or ``None`` when not reported."""
        return next((c for c in self.caches if c.name == name), None)

    def effective_clock(self, one_thread_flops_s: float | None) -> float | None:
        """GHz implied by a one-thread fp32 GEMM of ``one_thread_flops_s`` (``None`` without one)."""
        if not one_thread_flops_s:
            return None
        core = cpu_flop_per_cycle(frozenset(self.flags), "fp32", self.vendor, self.family, self.model)
        return effective_clock_ghz(one_thread_flops_s, core.flop_per_cycle)

    def peak(self, dtype: str, cores: int | None = None, one_thread_flops_s: float | None = None,
             clock_mhz: float | None = None) -> Peak | None:
        """Theoretical peak for ``dtype`` on ``cores`` (default: all usable physical cores): cores x
        clock x FLOP/cycle/core. The clock is the measured one (``clock_mhz``: the dependent-add
        chain of ``harness.devices.clock``, what the cores run at) where given, else the higher of the
        reported clock and the effective one implied by ``one_thread_flops_s``."""
        core = cpu_flop_per_cycle(frozenset(self.flags), dtype, self.vendor, self.family, self.model)
        reported = f"{self.clock_ghz:.3f} GHz" if self.clock_ghz else "none"
        if clock_mhz:
            peak = cpu_peak(cores or self.cores_for_peak, clock_mhz / 1e3, core)
            return dataclasses.replace(peak, source=peak.source + f"; clock: measured by a dependent-add chain "
                                       f"(reported {reported})")
        effective = self.effective_clock(one_thread_flops_s)
        clock = max(self.clock_ghz or 0.0, effective or 0.0)
        if not clock:
            return None
        peak = cpu_peak(cores or self.cores_for_peak, clock, core)
        if effective and effective > (self.clock_ghz or 0.0):
            peak = dataclasses.replace(peak, source=peak.source + f"; clock: effective, from the 1-thread fp32 "
                                       f"GEMM (reported {reported})")
        return peak


def describe_cpu(check_load: bool = True) -> CpuDescription:
    """Describe this machine's CPU; with ``check_load``, sample how busy it is (``BUSY_SAMPLE_S``)."""
    info = cpuinfo()
    caches = _sysfs_caches()
    logical = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = logical
    try:
        freq = psutil.cpu_freq()
    except Exception:
        freq = None
    clock = None
    if freq is not None and freq.max:
        clock = freq.max / 1e3
    elif freq is not None and freq.current:
        clock = freq.current / 1e3
    elif info.get("hz_advertised"):
        clock = info["hz_advertised"][0] / 1e9
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    busy = psutil.cpu_percent(interval=BUSY_SAMPLE_S) if check_load else None
    warnings = []
    if busy is not None and busy > BUSY_PERCENT_WARN:
        warnings.append(f"other processes use {busy:.0f}% of the CPUs (over {BUSY_PERCENT_WARN:.0f}%): "
                        "timings will be noisy")
    if clock is not None and not (freq and freq.max):
        warnings.append("no max CPU clock exposed (VM?): the formula peak uses the clock `layerbench calibrate` "
                        "measures (a dependent-add chain); before that, the current clock, or the effective clock of "
                        "the 1-thread fp32 GEMM where calibrated and higher")
    flags = tuple(sorted(info.get("flags", [])))
    hypervisor = "hypervisor" in flags
    reported = caches or {k: (int(info[v]), 1) for k, v in (("L1d", "l1_data_cache_size"), ("L2", "l2_cache_size"),
                                                              ("L3", "l3_cache_size")) if info.get(v)}
    checked = check_caches(reported, smt=max(1, logical // max(1, physical)), hypervisor=hypervisor)
    warnings += [f"cache {c.name}: {c.note}" for c in checked if c.capped]
    return CpuDescription(
        brand=str(info.get("brand_raw", "")), vendor=str(info.get("vendor_id_raw", "")),
        arch=str(info.get("arch", platform.machine())), family=info.get("family"), model=info.get("model"),
        logical_cpus=logical, physical_cores=physical, usable_cpus=usable, clock_ghz=clock,
        l1d_bytes=reported.get("L1d", (None,))[0], l2_bytes=reported.get("L2", (None,))[0],
        l3_bytes=reported.get("L3", (None,))[0], caches=checked, hypervisor=hypervisor,
        clock_reported_max=bool(freq and freq.max), flags=flags,
        torch_capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
        load_avg=tuple(load) if load else None, busy_percent=busy, warnings=tuple(warnings))
