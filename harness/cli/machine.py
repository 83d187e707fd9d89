"""``layerbench devices`` and ``layerbench calibrate``: the machine, its peaks and measured ceilings
(rendered by ``harness.report.machine``)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

try:
    import resource
except ImportError:         # not on Windows
    resource = None  # type: ignore[assignment]


def cmd_devices(args: argparse.Namespace) -> int:
    from harness.backends import resolve_device  # deferred: --help without torch/pandas
    from harness.ceilings.calibrate import lookup  # deferred: as above
    from harness.devices import describe_machine  # deferred: as above
    from harness.devices.identity import describe_machine_identity  # deferred: as above
    from harness.report import render_text  # deferred: as above
    from harness.report.machine import DevicesModel  # deferred: as above
    model = DevicesModel(describe_machine(check_load=not args.no_load), describe_machine_identity(),
                         lookup(resolve_device("cpu"), None, args.store))
    sys.stdout.write(render_text(model, args.format))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import torch  # deferred: --help without torch/pandas

    from harness.backends import resolve_device  # deferred: as above
    from harness.ceilings.calibrate import calibrate, defects  # deferred: as above
    from harness.report import render_text  # deferred: as above
    from harness.report.machine import CeilingsModel  # deferred: as above
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    c = calibrate(device, dtypes, threads=args.threads, budget_s=args.budget, store=args.store, force=args.force)
    wall = time.perf_counter() - t0
    threads = args.threads or torch.get_num_threads()
    peaks = {e.dtype: device.backend.peak(device, e.dtype, threads, c.one_thread, clock_mhz=c.clock_mhz)
             for e in c.entries}
    sys.stdout.write(render_text(CeilingsModel(c, peaks), "table"))
    for line in defects(c, device, threads):
        print(f"warning: {line}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10 if resource else None   # Linux: KiB
    print(f"calibrate took {wall:.1f} s" + (f"; peak RSS {rss:.0f} MiB" if rss else ""))
    return 0


def add(sub: Any) -> None:
    p = sub.add_parser("devices", help="describe this machine: CPU, GPUs, peaks, software, identity, ceilings")
    p.add_argument("--format", default="table", choices=["table", "json"])
    p.add_argument("--no-load", action="store_true", help="skip the 0.2 s sample of how busy the CPUs are")
    p.add_argument("--store", default=None, help="ceilings directory (default ~/.cache/layerbench/ceilings)")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("calibrate", help="measure the GEMM ceiling per dtype (a size sweep), the bandwidth per memory "
                           "level and the copy bandwidth; store them")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", default="fp32,bf16,fp16", help="comma-separated: fp32, tf32 (cuda), fp16, bf16")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--budget", type=float, default=0.3, help="seconds per measurement: one GEMM size, one "
                   "memory level (default 0.3; a dtype's sweep starts no size after 12 s)")
    p.add_argument("--store", default=None, help="ceilings directory (default ~/.cache/layerbench/ceilings)")
    p.add_argument("--force", action="store_true", help="measure even if stored ceilings match")
    p.set_defaults(func=cmd_calibrate)
