"""Who measured: the machine (CPU, memory, GPUs), the software stack and the threading settings,
with a short ``machine_id`` (hardware only) and ``settings_id`` (threads and threading/math
environment) that every row carries. Like pytest-benchmark's ``machine_info`` and asv's
``machine.json``, but complete enough to tell an AMD EPYC Zen 1 VM from a Zen 3 one.

``machine_id`` hashes what decides speed and does not change between nights: CPU vendor, brand,
family/model/stepping, ISA flags, logical CPUs, physical cores, memory (GiB), and the model name of
every GPU on the node as NVML lists them (``node_gpus``), whatever CUDA_VISIBLE_DEVICES hides from
torch (Ray's ``num_gpus=1`` shows each task one GPU: the machine is the same). Not the hostname
(ephemeral fleet nodes of one type are one machine) and not GPU UUIDs (a swapped board of the same
model is the same machine). Without NVML only the GPUs torch sees can be named. ``settings_id`` hashes the
torch thread count, the CPU affinity size and the threading/math environment variables; the
software versions are stored beside it but kept out of it, so a nightly torch upgrade is measured,
not refused (``regress`` names the change).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil
import torch

import harness
from harness.devices.cpu import cpuinfo, describe_cpu
from harness.devices.gpu import GpuDescription, describe_gpus

#: Environment variables that change threading or math (stored; hashed into ``settings_id``).
ENV_PREFIXES = ("OMP_", "KMP_", "GOMP_", "MKL_", "ONEDNN_", "DNNL_", "OPENBLAS_", "BLIS_")
ENV_NAMES = ("LD_PRELOAD", "NVIDIA_TF32_OVERRIDE", "CUBLAS_WORKSPACE_CONFIG", "TORCH_CUDNN_V8_API_DISABLED")


@dataclass(frozen=True, slots=True)
class CpuId:
    vendor: str
    brand: str
    arch: str
    family: int | None
    model: int | None
    stepping: int | None
    flags: tuple[str, ...]
    logical_cpus: int
    physical_cores: int
    clock_ghz: float | None
    l1d_bytes: int | None
    l2_bytes: int | None
    l3_bytes: int | None


@dataclass(frozen=True, slots=True)
class GpuId:
    """One GPU of the node; ``visible``: torch sees it (not hidden by CUDA_VISIBLE_DEVICES)."""

    index: int
    name: str
    uuid: str | None
    compute_capability: tuple[int, int] | None
    sm_count: int | None
    memory_bytes: int | None
    l2_bytes: int | None
    visible: bool = True


def node_gpus(gpus: tuple[GpuId, ...]) -> list[str]:
    """What ``machine_id`` takes of the GPUs: every model name on the node, sorted (the SM count
    and memory torch reports exist only for the GPUs it sees, so they are left out)."""
    return sorted(g.name for g in gpus)


@dataclass(frozen=True, slots=True)
class Software:
    torch: str
    torch_git: str | None
    cuda: str | None
    cudnn: int | None
    driver: str | None
    python: str
    os: str
    harness: str


@dataclass(frozen=True, slots=True)
class Threading:
    threads: int
    interop_threads: int
    affinity: tuple[int, ...]
    env: tuple[tuple[str, str], ...]
    parallel_info: str


@dataclass(frozen=True, slots=True)
class MachineInfo:
    """Everything a run records about where it ran (stored in the run metadata)."""

    host: str
    memory_bytes: int | None
    cpu: CpuId
    gpus: tuple[GpuId, ...]
    software: Software
    threading: Threading

    @property
    def machine_id(self) -> str:
        """12 hex digits identifying the hardware (module docstring)."""
        c = self.cpu
        hw = [c.vendor, c.brand, c.arch, c.family, c.model, c.stepping, sorted(c.flags), c.logical_cpus,
              c.physical_cores, round((self.memory_bytes or 0) / 2**30), node_gpus(self.gpus)]
        return _digest(hw)

    @property
    def settings_id(self) -> str:
        """12 hex digits identifying the threading settings (module docstring)."""
        t = self.threading
        return _digest([t.threads, len(t.affinity), list(t.env)])

    @property
    def name(self) -> str:
        """A short human label: ``AMD EPYC (family 25 model 1, 2 CPUs)``, GPUs first when present."""
        c = self.cpu
        cpu = f"{c.brand or c.arch} (family {c.family} model {c.model}, {c.logical_cpus} CPUs)"
        gpus = sorted({g.name for g in self.gpus})
        return " + ".join(gpus + [cpu])

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(machine_id=self.machine_id, settings_id=self.settings_id, name=self.name)
        return d


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()[:12]


def threading_env() -> tuple[tuple[str, str], ...]:
    """The threading and math environment variables that are set, sorted."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES))


def _affinity() -> tuple[int, ...]:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:
        return tuple(range(os.cpu_count() or 1))


def describe_threading(threads: int | None = None) -> Threading:
    """Threads torch uses (``threads`` when the run sets them), affinity and environment."""
    return Threading(threads=threads or torch.get_num_threads(), interop_threads=torch.get_num_interop_threads(),
                     affinity=_affinity(), env=threading_env(), parallel_info=torch.__config__.parallel_info())


def gpu_ids(gpus: Iterable[GpuDescription]) -> tuple[GpuId, ...]:
    """The GPUs a run records, from ``describe_gpus``: those torch sees and those only NVML lists."""
    return tuple(GpuId(index=x.index, name=x.name, uuid=x.uuid, compute_capability=x.compute_capability,
                       sm_count=x.sm_count, memory_bytes=x.memory_total_bytes, l2_bytes=x.l2_bytes,
                       visible=x.source != "nvml") for x in gpus)


@functools.cache
def _hardware() -> tuple[CpuId, int | None, tuple[GpuId, ...], Software]:
    c = describe_cpu(check_load=False)
    cpu = CpuId(vendor=c.vendor, brand=c.brand, arch=c.arch, family=c.family, model=c.model,
                stepping=cpuinfo().get("stepping"), flags=c.flags, logical_cpus=c.logical_cpus,
                physical_cores=c.physical_cores, clock_ghz=c.clock_ghz, l1d_bytes=c.l1d_bytes,
                l2_bytes=c.l2_bytes, l3_bytes=c.l3_bytes)
    g = describe_gpus()
    gpus = gpu_ids(g.gpus)
    soft = Software(torch=torch.__version__, torch_git=getattr(torch.version, "git_version", None),
                    cuda=torch.version.cuda, cudnn=g.cudnn_version, driver=g.driver_version,
                    python=platform.python_version(), os=f"{platform.system()} {platform.release()}",
                    harness=harness.__version__)
    try:
        memory = int(psutil.virtual_memory().total)
    except Exception:
        memory = None
    return cpu, memory, gpus, soft


def describe_machine_identity(threads: int | None = None) -> MachineInfo:
    """This machine as a run records it (the hardware part is probed once per process)."""
    cpu, memory, gpus, soft = _hardware()
    return MachineInfo(host=platform.node(), memory_bytes=memory, cpu=cpu, gpus=gpus, software=soft,
                       threading=describe_threading(threads))
