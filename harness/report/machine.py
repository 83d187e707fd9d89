"""The machine as people read it: ``layerbench devices`` (``DevicesModel``: the CPU and its formula
peaks, the GPUs, the software, the identity, the stored ceilings) and ``layerbench calibrate``
(``CeilingsModel``: each ceiling beside the peak it is measured against), text and JSON renderers."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.ceilings.calibrate import Ceilings
from harness.devices import MachineDescription
from harness.devices.cpu import SIMD_FLAGS
from harness.devices.identity import MachineInfo
from harness.devices.peaks import Peak, cpu_flop_per_cycle
from harness.report.registry import renderer
from harness.units import binary_bytes, seconds, si


@dataclass(frozen=True)
class DevicesModel:
    """What ``layerbench devices`` shows: the machine's description, its identity (``machine_id``,
    ``settings_id``) and the ceilings stored for it (``None``: not calibrated)."""

    machine: MachineDescription
    identity: MachineInfo | None = None
    ceilings: Ceilings | None = None


@renderer(DevicesModel, "json", text=True)
def devices_json(d: DevicesModel) -> str:
    return json.dumps({"machine": dataclasses.asdict(d.machine),
                       "identity": d.identity.to_json() if d.identity is not None else None,
                       "ceilings": d.ceilings.to_json() if d.ceilings else None}, indent=2, default=str) + "\n"


@renderer(DevicesModel, "table", text=True)
def devices_table(d: DevicesModel) -> str:
    return render_devices(d.machine, d.ceilings, d.identity) + "\n"


def render_devices(m: Any, ceilings: Any = None, identity: Any = None) -> str:
    """``layerbench devices`` text: CPU, its formula peaks, GPUs, software, identity, stored ceilings."""
    c = m.cpu
    simd = " ".join(f for f in SIMD_FLAGS if f in c.flags) or "-"
    one = ceilings.one_thread if ceilings is not None else None
    mhz = ceilings.clock_mhz if ceilings is not None else None
    caches = ", ".join(f"{x.name} {binary_bytes(x.reported_bytes)}"
                       + (f" (used: {binary_bytes(x.used_bytes)}, capped)" if x.capped else "") for x in c.caches)
    lines = [f"CPU   {c.brand} ({c.vendor}, family {c.family} model {c.model}), {c.arch}"
             + ("; under a hypervisor" if c.hypervisor else ""),
             f"      {c.logical_cpus} logical CPUs, {c.physical_cores} physical cores, {c.usable_cpus} usable; "
             f"clock {c.clock_ghz or 0:.3f} GHz ({'max' if c.clock_reported_max else 'reported, no max exposed'})"
             + _effective(c, one, mhz) + (f"; measured {mhz / 1e3:.3f} GHz (dependent-add chain; the formula "
                                          "uses it)" if mhz else ""),
             f"      caches (one instance, as reported) {caches or '-'}; SIMD {simd}; torch kernels "
             f"{c.torch_capability}",
             f"      torch threads {c.threads}; load average "
             + (" ".join(f"{x:.2f}" for x in c.load_avg) if c.load_avg else "-")
             + (f"; busy {c.busy_percent:.0f}%" if c.busy_percent is not None else "")]
    peaks = [f"{d} {si(p.flops, 'FLOP/s')}" + ("" if p.native else " (not native)")
             for d in ("fp32", "fp64", "bf16", "fp16")
             if (p := c.peak(d, one_thread_flops_s=one, clock_mhz=mhz)) is not None]
    if peaks:
        src = c.peak("fp32", one_thread_flops_s=one, clock_mhz=mhz)
        lines.append(f"      peak ({src.source if src else 'formula'}): " + ", ".join(peaks))
    lines += [f"      warning: {w}" for w in c.warnings]
    lines += _gpu_lines(m.gpu)
    g = m.gpu
    lines.append(f"software  torch {g.torch_version}, CUDA {g.cuda_runtime or '-'}, cuDNN {g.cudnn_version or '-'}, "
                 f"driver {g.driver_version or '-'}")
    if identity is not None:
        lines.append(f"identity  machine_id {identity.machine_id} ({identity.name}), settings_id "
                     f"{identity.settings_id}; threading env "
                     + (", ".join(f"{k}={v}" for k, v in identity.threading.env) or "none set"))
    if ceilings is not None:
        parts = [f"{e.dtype} {si(e.value, 'FLOP/s')} (n={e.size}, {_verdict(e)})" for e in ceilings.entries
                 if e.kind == "compute"]
        lines.append(f"ceilings  measured {ceilings.measured_at}, {ceilings.key.get('threads', '-')} threads: "
                     + ", ".join(parts))
        lines.append("          bandwidth " + (", ".join(_level_text(lv) for lv in ceilings.levels)
                                               or f"copy {si(ceilings.bandwidth, 'B/s')} (no levels stored)")
                     + (f"; launch floor {seconds(ceilings.launch)}" if getattr(ceilings, "launch", None) else ""))
    else:
        lines.append("ceilings  not measured for this machine, thread count and software: `layerbench calibrate` "
                     "(or `layerbench run` measures them)")
    return "\n".join(lines)


def _effective(c: Any, one_thread_flops_s: float | None, measured_mhz: float | None = None) -> str:
    """``; effective X GHz (...)`` where a one-thread fp32 GEMM is stored, else nothing; which clock
    the formula takes (``devices.cpu.peak``): the measured one where stored, else the higher of this
    and the reported one."""
    eff = c.effective_clock(one_thread_flops_s)
    if eff is None:
        return ""
    fpc = cpu_flop_per_cycle(frozenset(c.flags), "fp32", c.vendor, c.family, c.model).flop_per_cycle
    used = ("the formula uses the measured clock" if measured_mhz else
            "the formula uses it" if eff > (c.clock_ghz or 0) else "the formula uses the reported clock")
    return (f"; effective {eff:.3f} GHz (1-thread fp32 GEMM {si(one_thread_flops_s, 'FLOP/s')} / {fpc} "
            f"FLOP/cycle; {used})")


def _verdict(e: Any) -> str:
    return {True: "native", False: "not native", None: "native: no fp32 ceiling"}[e.native]


def _level_text(lv: Any) -> str:
    of = f" of {binary_bytes(lv.cache_bytes)}" if lv.cache_bytes else ""
    return f"{lv.level} {si(lv.value, 'B/s')} ({lv.kernel}, {binary_bytes(lv.buffer_bytes)}{of})"


def _gpu_lines(g: Any) -> list[str]:
    lines = [] if g.gpus else ["GPU   none"]
    for gpu in g.gpus:
        cc = ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else "-"
        lines.append(f"GPU {gpu.index} {gpu.name} (CC {cc}, {gpu.sm_count or '-'} SMs, "
                     f"L2 {binary_bytes(gpu.l2_bytes)}, "
                     f"{binary_bytes(gpu.memory_total_bytes)}; from {gpu.source})")
        lines.append(f"      SM clock {gpu.sm_clock_mhz or '-'} / max {gpu.sm_clock_max_mhz or '-'} MHz; memory clock "
                     f"{gpu.mem_clock_mhz or '-'} / max {gpu.mem_clock_max_mhz or '-'} MHz; bus "
                     f"{gpu.memory_bus_width_bits or '-'} bit")
        lines.append(f"      power {gpu.power_draw_w or '-'} / limit {gpu.power_limit_w or '-'} W; "
                     f"{gpu.temperature_c or '-'} C; clock reasons {','.join(gpu.clock_reasons) or 'none'}; "
                     f"MIG {gpu.mig_mode if gpu.mig_mode is not None else '-'}")
        pk = [f"{d} {si(p.flops, 'FLOP/s')}" for d in ("fp32", "tf32", "fp16", "bf16")
              if (p := gpu.peak(d)) is not None and p.native]
        bw = gpu.peak("fp32")
        if pk or bw:
            lines.append(f"      peak: {', '.join(pk)}; memory {si(bw.bandwidth if bw else None, 'B/s')}"
                         f" ({bw.source if bw else '-'})")
    lines += [f"      note: {n}" for n in g.notes]
    return lines


@dataclass(frozen=True)
class CeilingsModel:
    """What ``layerbench calibrate`` shows: the ceilings and the theoretical peak of each dtype they
    are measured against (``peaks``: by dtype, resolved by the device's backend)."""

    ceilings: Ceilings
    peaks: Mapping[str, Peak | None]


@renderer(CeilingsModel, "table", text=True)
def ceilings_table(m: CeilingsModel) -> str:
    return render_ceilings(m.ceilings, m.peaks.get) + "\n"


def _ceiling_row(e: Any, p: Any) -> dict[str, Any]:
    """One ceiling's table row beside its theoretical peak ``p`` (the one-thread GEMM and the clock
    have none: the peak is of all threads)."""
    theo = (p.flops if e.kind == "compute" else p.bandwidth) if p is not None else None
    unit = {"memory": "B/s", "clock": "Hz"}.get(e.kind, "FLOP/s")
    size = {"memory": binary_bytes(e.size), "clock": f"{e.size} CPUs"}.get(e.kind, f"n={e.size}")
    return {"ceiling": e.kind, "dtype": e.dtype if e.kind not in ("memory", "clock") else "-",
            "op": e.op if e.kind == "compute" else "-", "size": size,
            "measured (best sample)": si(e.value, unit),
            "median time": si(e.median_s, "s") if e.kind != "clock" else "-",
            "rel_iqr": f"{e.rel_iqr:.1%}", "reps": e.reps,
            "native": _verdict(e) if e.kind == "compute" else "-",
            "theoretical": si(theo, unit) + ("" if p is None or p.native else " (not native)"),
            "of_theoretical": f"{e.value / theo:.0%}" if theo else "-"}


def render_ceilings(c: Any, peak_of: Callable[[str], Any]) -> str:
    """``layerbench calibrate`` table: each ceiling beside the theoretical peak it is measured against."""
    rows = [_ceiling_row(e, peak_of(e.dtype) if e.kind in ("compute", "memory") else None) for e in c.entries
            if e.kind != "launch"]          # the launch floor is seconds, not a rate: its own line below
    head = (f"{c.key.get('device_name')} ({c.key['device']}, {c.key.get('threads', '-')} threads), "
            f"measured {c.measured_at}")
    sweeps = [f"sweep {e.dtype}: " + ", ".join(f"n={n} {si(v, 'FLOP/s')}" for n, v in e.sweep) + f"; {e.note}"
              for e in c.entries if e.kind == "compute" and e.sweep]
    levels = [{"level": lv.level, "kernel": lv.kernel, "buffer": binary_bytes(lv.buffer_bytes),
               "sized from": binary_bytes(lv.cache_bytes) if lv.cache_bytes else "-",
               "reported": binary_bytes(lv.reported_bytes) if lv.reported_bytes else "-",
               "reads/call": lv.repeats, "bandwidth": si(lv.value, "B/s")} for lv in c.levels]
    launch = [f"launch floor: {seconds(e.value)} per call ({e.note}; rel IQR {e.rel_iqr:.1%}, {e.reps} samples)"
              for e in c.entries if e.kind == "launch"]
    return "\n".join([head, pd.DataFrame(rows).to_string(index=False), *sweeps, *launch]
                     + ([pd.DataFrame(levels).to_string(index=False)] if levels else []))
