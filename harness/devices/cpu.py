"""What CPU this is: py-cpuinfo (cached: its first call can take over a second), Linux sysfs for
cache sizes (py-cpuinfo's are wrong in VMs), psutil for cores and clock, torch for its kernels,
and how busy the machine is when a run starts."""

from __future__ import annotations

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
        import cpuinfo as _cpuinfo
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


def _sysfs_caches() -> dict[str, int]:
    """Cache sizes in bytes from /sys (L1d, L2, L3 of cpu0); empty off Linux."""
    out: dict[str, int] = {}
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
        out[f"l{level}{'d' if level == '1' else ''}"] = int(size.rstrip("KMG")) * mult
    return out


@dataclass(frozen=True, slots=True)
class CpuDescription:
    """The CPU and its state at the start of a run.

    Attributes:
        brand, vendor, arch: as py-cpuinfo reports them.
        family, model: CPUID family/model (they tell Zen 1 from Zen 2, which share flags).
        logical_cpus, physical_cores, usable_cpus: ``os.cpu_count()``, psutil's physical
            cores, CPUs this process may run on (affinity).
        clock_ghz: psutil's max clock, else the current/advertised one (in VMs often not the
            clock the cores run at; the measured ceiling is the honest denominator).
        l1d_bytes, l2_bytes, l3_bytes: per-core L1d and L2, L3 (sysfs; py-cpuinfo otherwise).
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

    def peak(self, dtype: str, cores: int | None = None) -> Peak | None:
        """Theoretical peak for ``dtype`` on ``cores`` (default: all usable physical cores)."""
        if not self.clock_ghz:
            return None
        core = cpu_flop_per_cycle(frozenset(self.flags), dtype, self.vendor, self.family, self.model)
        return cpu_peak(cores or self.cores_for_peak, self.clock_ghz, core)


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
    freq = None
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
        warnings.append("no max CPU clock exposed (VM?): the formula peak uses the current clock")
    return CpuDescription(
        brand=str(info.get("brand_raw", "")), vendor=str(info.get("vendor_id_raw", "")),
        arch=str(info.get("arch", platform.machine())), family=info.get("family"), model=info.get("model"),
        logical_cpus=logical, physical_cores=physical, usable_cpus=usable, clock_ghz=clock,
        l1d_bytes=caches.get("l1d", info.get("l1_data_cache_size")),
        l2_bytes=caches.get("l2", info.get("l2_cache_size")),
        l3_bytes=caches.get("l3", info.get("l3_cache_size")), flags=tuple(sorted(info.get("flags", []))),
        torch_capability=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
        load_avg=tuple(load) if load else None, busy_percent=busy, warnings=tuple(warnings))
