"""``layerbench devices`` and ``layerbench calibrate``: the machine, its peaks and measured ceilings."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from typing import Any


def render_devices(m: Any, ceilings: Any = None, identity: Any = None) -> str:
    """``layerbench devices`` text: CPU, its formula peaks, GPUs, software, identity, stored ceilings."""
    from harness.devices.cpu import SIMD_FLAGS
    from harness.units import binary_bytes, si
    c = m.cpu
    simd = " ".join(f for f in SIMD_FLAGS if f in c.flags) or "-"
    lines = [f"CPU   {c.brand} ({c.vendor}, family {c.family} model {c.model}), {c.arch}",
             f"      {c.logical_cpus} logical CPUs, {c.physical_cores} physical cores, {c.usable_cpus} usable; "
             f"clock {c.clock_ghz or 0:.3f} GHz",
             f"      caches L1d {binary_bytes(c.l1d_bytes)}, L2 {binary_bytes(c.l2_bytes)}, "
             f"L3 {binary_bytes(c.l3_bytes)}; SIMD {simd}; torch kernels {c.torch_capability}",
             f"      torch threads {c.threads}; load average "
             + (" ".join(f"{x:.2f}" for x in c.load_avg) if c.load_avg else "-")
             + (f"; busy {c.busy_percent:.0f}%" if c.busy_percent is not None else "")]
    peaks = [f"{d} {si(p.flops, 'FLOP/s')}" + ("" if p.native else " (not native)")
             for d in ("fp32", "fp64", "bf16", "fp16") if (p := c.peak(d)) is not None]
    if peaks:
        src = c.peak("fp32")
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
        parts = [f"{e.dtype} {si(e.value, 'FLOP/s')} (n={e.size})" for e in ceilings.entries if e.kind == "compute"]
        parts.append(f"copy {si(ceilings.bandwidth, 'B/s')}")
        lines.append(f"ceilings  measured {ceilings.measured_at}, {ceilings.key.get('threads', '-')} threads: "
                     + ", ".join(parts))
    else:
        lines.append("ceilings  not measured for this machine, thread count and software: `layerbench calibrate` "
                     "(or `layerbench run` measures them)")
    return "\n".join(lines)


def _gpu_lines(g: Any) -> list[str]:
    from harness.units import binary_bytes, si
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


def cmd_devices(args: argparse.Namespace) -> int:
    from harness.calibrate import lookup
    from harness.devices import describe_machine
    from harness.devices.identity import describe_machine_identity
    m = describe_machine(check_load=not args.no_load)
    stored = lookup("cpu", None, args.store)
    identity = describe_machine_identity()
    if args.format == "json":
        print(json.dumps({"machine": dataclasses.asdict(m), "identity": identity.to_json(),
                          "ceilings": stored.to_json() if stored else None}, indent=2, default=str))
    else:
        print(render_devices(m, stored, identity))
    return 0


def render_ceilings(c: Any, peak_of: Callable[[str], Any]) -> str:
    """``layerbench calibrate`` table: each ceiling beside the theoretical peak it is measured against."""
    import pandas as pd

    from harness.units import binary_bytes, si
    rows = []
    for e in c.entries:
        p = peak_of(e.dtype)
        theo = (p.flops if e.kind == "compute" else p.bandwidth) if p is not None else None
        unit = "FLOP/s" if e.kind == "compute" else "B/s"
        rows.append({"ceiling": e.kind, "dtype": e.dtype if e.kind == "compute" else "-",
                     "size": f"n={e.size}" if e.kind == "compute" else binary_bytes(e.size),
                     "measured": si(e.value, unit), "median": si(e.median_s, "s"),
                     "rel_iqr": f"{e.rel_iqr:.1%}", "reps": e.reps,
                     "theoretical": si(theo, unit) + ("" if p is None or p.native else " (not native)"),
                     "of_theoretical": f"{e.value / theo:.0%}" if theo else "-"})
    head = (f"{c.key.get('device_name')} ({c.key['device']}, {c.key.get('threads', '-')} threads), "
            f"measured {c.measured_at}")
    return head + "\n" + pd.DataFrame(rows).to_string(index=False)


def cmd_calibrate(args: argparse.Namespace) -> int:
    import torch

    from harness.backends import get_backend
    from harness.calibrate import calibrate
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    backend = get_backend(args.device)
    device = backend.resolve(args.device)
    c = calibrate(device, dtypes, threads=args.threads, budget_s=args.budget, store=args.store, force=args.force)
    threads = args.threads or torch.get_num_threads()
    print(render_ceilings(c, lambda d: backend.peak(device, d, threads)))
    return 0


def add(sub: Any) -> None:
    p = sub.add_parser("devices", help="describe this machine: CPU, GPUs, peaks, software, identity, ceilings")
    p.add_argument("--format", default="table", choices=["table", "json"])
    p.add_argument("--no-load", action="store_true", help="skip the 0.2 s sample of how busy the CPUs are")
    p.add_argument("--store", default=None, help="ceilings directory (default ~/.cache/layerbench/ceilings)")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("calibrate", help="measure the GEMM ceiling per dtype and the copy bandwidth; store them")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", default="fp32,bf16,fp16", help="comma-separated: fp32, tf32 (cuda), fp16, bf16")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--budget", type=float, default=3.0, help="seconds per measurement (default 3)")
    p.add_argument("--store", default=None, help="ceilings directory (default ~/.cache/layerbench/ceilings)")
    p.add_argument("--force", action="store_true", help="measure even if stored ceilings match")
    p.set_defaults(func=cmd_calibrate)
