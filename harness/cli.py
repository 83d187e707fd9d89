"""``layerbench`` command line. Subcommands render what the library returns; none computes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence

import pandas as pd
import torch

from harness.analytic.conventions import conventions
from harness.count import count, totals
from harness.devices import MachineDescription, describe_machine
from harness.devices.ceilings import Ceilings, calibrate, load_ceilings, machine_key
from harness.devices.cpu import SIMD_FLAGS, describe_cpu
from harness.devices.gpu import describe_gpus
from harness.devices.peaks import Peak
from harness.dtypes import parse_dtype
from harness.errors import LayerbenchError, SpecError
from harness.spec import LAYERS, build_case, parse_layer, parse_shape
from harness.units import binary_bytes, si
from harness.zoo import MODELS

#: Columns the ``table`` format shows (csv and json carry every column).
TABLE_COLUMNS = ["op", "module", "input_shapes", "output_shapes", "dtype", "flops", "macs", "params",
                 "bytes_read", "bytes_written", "intensity", "flop_counter_flops"]


def _layer_help() -> str:
    lines = []
    seen: set[type] = set()
    for cls in LAYERS.values():
        if cls in seen:
            continue
        seen.add(cls)
        kinds = [k for k, c in LAYERS.items() if c is cls]
        keys = ", ".join(sorted(cls.keys()))
        lines.append(f"  {'/'.join(kinds)}: {keys or '(no parameters)'}")
    return "layers and their keys:\n" + "\n".join(lines)


def render_count(table: pd.DataFrame, fmt: str) -> str:
    """The count table and its totals as ``table``, ``csv`` or ``json`` text."""
    if fmt == "csv":
        return table.to_csv(index=False)
    t = totals(table)
    if fmt == "json":
        rows = json.loads(table.to_json(orient="records"))
        return json.dumps({"rows": rows, "totals": json.loads(t.to_json())}, indent=2)
    shown = table[TABLE_COLUMNS].copy()
    shown["intensity"] = shown["intensity"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    body = shown.to_string(index=False, na_rep="-")
    foot = (f"\ntotal ({t['convention']}): {t['flops']:,} FLOPs, {t['macs']:,} MACs, {t['params']:,} params, "
            f"{t['bytes_read']:,} B read, {t['bytes_written']:,} B written, intensity {t['intensity']:.2f} FLOP/B; "
            f"{t['ops']} ops, {t['uncounted_ops']} uncounted; torch.utils.flop_counter: "
            f"{t['flop_counter_flops']:,} FLOPs over {t['flop_counter_ops']} ops it covers, "
            f"{t['flop_counter_disagreements']} disagreeing")
    return body + foot


def _cmd_count(args: argparse.Namespace) -> int:
    if args.model:
        if args.layer:
            raise SpecError("layer", args.layer, "no layer when --model is given")
        model = MODELS[args.model](device="meta")
        shapes = [parse_shape(s) for s in (args.input or ["1x3x224x224"])]
        dtype = parse_dtype(args.dtype)
        model = model.to(dtype)
    else:
        if not args.layer:
            raise SpecError("layer", None, "a layer kind (e.g. conv2d) or --model NAME")
        spec = parse_layer(args.layer, args.params)
        model, shapes, dtype = build_case(spec, args.input, args.dtype)
    table = count(model, *shapes, convention=args.convention, dtype=dtype)
    print(render_count(table, args.format))
    return 0


def render_devices(m: MachineDescription, ceilings: Ceilings | None = None) -> str:
    """``layerbench devices`` text: CPU, its formula peaks, GPUs, software, stored ceilings."""
    c = m.cpu
    simd = " ".join(f for f in SIMD_FLAGS if f in c.flags) or "-"
    lines = [f"CPU   {c.brand} ({c.vendor}, family {c.family} model {c.model}), {c.arch}",
             f"      {c.logical_cpus} logical CPUs, {c.physical_cores} physical cores, {c.usable_cpus} usable; "
             f"clock {c.clock_ghz or 0:.3f} GHz",
             f"      caches L1d {binary_bytes(c.l1d_bytes)}, L2 {binary_bytes(c.l2_bytes)}, "
             f"L3 {binary_bytes(c.l3_bytes)}; "
             f"SIMD {simd}; torch kernels {c.torch_capability}",
             f"      torch threads {c.threads}; load average "
             + (" ".join(f"{x:.2f}" for x in c.load_avg) if c.load_avg else "-")
             + (f"; busy {c.busy_percent:.0f}%" if c.busy_percent is not None else "")]
    peaks = []
    for d in ("fp32", "fp64", "bf16", "fp16"):
        p = c.peak(d)
        if p is not None:
            peaks.append(f"{d} {si(p.flops, 'FLOP/s')}" + ("" if p.native else " (not native)"))
    if peaks:
        src = c.peak("fp32")
        lines.append(f"      peak ({src.source if src else 'formula'}): " + ", ".join(peaks))
    lines += [f"      warning: {w}" for w in c.warnings]
    g = m.gpu
    if not g.gpus:
        lines.append("GPU   none")
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
    lines.append(f"software  torch {g.torch_version}, CUDA {g.cuda_runtime or '-'}, cuDNN {g.cudnn_version or '-'}, "
                 f"driver {g.driver_version or '-'}")
    if ceilings is not None:
        parts = [f"{e.dtype} {si(e.value, 'FLOP/s')}" for e in ceilings.entries if e.kind == "compute"]
        parts.append(f"copy {si(ceilings.bandwidth, 'B/s')}")
        lines.append(f"ceilings (measured {ceilings.measured_at}, {ceilings.key.get('threads', '-')} threads): "
                     + ", ".join(parts))
    else:
        lines.append("ceilings  not measured for this machine and software: run `layerbench calibrate`")
    return "\n".join(lines)


def _cmd_devices(args: argparse.Namespace) -> int:
    m = describe_machine(check_load=not args.no_load)
    stored = load_ceilings(machine_key("cpu"), args.store)
    if args.format == "json":
        print(json.dumps({"machine": dataclasses.asdict(m),
                          "ceilings": stored.to_json() if stored else None}, indent=2, default=str))
    else:
        print(render_devices(m, stored))
    return 0


def render_ceilings(c: Ceilings, peak_of: Callable[[str], Peak | None]) -> str:
    """``layerbench calibrate`` table: each ceiling beside the theoretical peak it is measured against."""
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


def _cmd_calibrate(args: argparse.Namespace) -> int:
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device", args.device, "a CUDA device; torch sees none on this machine")
    c = calibrate(args.device, dtypes, threads=args.threads, budget_s=args.budget, store=args.store,
                  force=args.force)
    if dev.type == "cpu":
        cpu = describe_cpu(check_load=False)
        def peak_of(d: str) -> Peak | None:
            return cpu.peak(d, cores=min(args.threads or torch.get_num_threads(), cpu.cores_for_peak))
    else:
        gpu = next(g for g in describe_gpus().gpus if g.index == (dev.index or 0))
        def peak_of(d: str) -> Peak | None:
            return gpu.peak(d)
    print(render_ceilings(c, peak_of))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import logging

    from harness.runner import parse_shard, run_suite
    from harness.suite import load_suite

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    suite = load_suite(args.suite)
    dtypes = [d.strip() for d in args.dtype.split(",")] if args.dtype else None
    device = args.device or suite.devices[0]
    n_cases = suite.count()
    print(f"{suite.name}: {n_cases} cases x {len(dtypes) if dtypes else len(suite.dtypes)} dtypes on {device}"
          + (f", shard {args.shard}" if args.shard else ""), file=sys.stderr)
    summary = run_suite(suite, device=device, dtypes=dtypes, out=args.out, resume=args.resume,
                        shard=parse_shard(args.shard) if args.shard else (1, 1), threads=args.threads,
                        progress=None if not args.quiet else False, mode=args.mode)
    counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.statuses.items())) or "nothing new"
    print(f"{summary.run_id}: {counts} ({summary.already_done} already stored) in {summary.seconds:.1f} s -> "
          f"{summary.parquet}")
    if args.plot and summary.parquet.exists():
        from harness.report.plots import time_vs_flops
        from harness.store import load_results
        frame = load_results(summary.parquet)
        if len(frame):
            for path in time_vs_flops(frame, summary.run_dir / "time_vs_flops"):
                print(f"plot: {path}")
    if summary.interrupted:
        print("interrupted: rows measured so far are stored; --resume continues", file=sys.stderr)
        return 130
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from harness.store import load_results

    frame = load_results(args.paths)
    if frame.empty:
        raise SpecError("paths", args.paths, "result files, run directories or globs that hold rows")
    if "samples_s" in frame and not args.samples:
        frame = frame.drop(columns=["samples_s"])
    if args.csv == "-":
        sys.stdout.write(frame.to_csv(index=False))
    else:
        frame.to_csv(args.csv, index=False)
        print(f"{len(frame)} rows -> {args.csv}")
    return 0


def _cmd_suites(args: argparse.Namespace) -> int:
    from harness.suite import builtin_suites, load_suite

    for name in builtin_suites():
        s = load_suite(name)
        print(f"{name:16} {s.count():6} cases  {','.join(s.devices):9} {','.join(s.dtypes):15} {s.description}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from harness.report.build import build_report

    try:
        rep = build_report(args.runs, args.out, ceilings_dir=args.ceilings, top=args.top)
    except ValueError as e:
        raise SpecError("runs", args.runs, f"run directories or result files with rows ({e})") from None
    for i, text in enumerate(rep.findings, 1):
        print(f"{i}. {text}")
    print(f"report: {rep.html}\nmarkdown: {rep.markdown}\n{len(rep.plots)} plot files in {rep.html.parent}")
    return 0


def _load(paths: list[str], what: str) -> pd.DataFrame:
    from harness.analysis import derive
    from harness.store import load_results

    frame = load_results(paths)
    if frame.empty:
        raise SpecError(what, paths, "run directories or result files with rows")
    return derive(frame)


def _cmd_compare(args: argparse.Namespace) -> int:
    from harness.analysis import compare

    table = compare(_load([args.a], "A"), _load([args.b], "B"), threshold=args.threshold)
    if table.empty:
        print("no case in common")
        return 0
    shown = table.sort_values("ratio", ascending=False)
    cols = [c for c in ["family", "layer", "params", "input_shapes", "memory_format", "dtype", "time_a_s", "time_b_s",
                        "ratio", "util_a", "util_b", "verdict"] if c in shown]
    print(shown[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    counts = table["verdict"].value_counts().to_dict()
    print(f"\nB vs A over {len(table)} cases (threshold {args.threshold:.0%}, beyond each side's noise band): "
          + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("slower", "faster", "same")))
    return 0


def _cmd_regress(args: argparse.Namespace) -> int:
    from harness.analysis import regressions

    bad = regressions(_load(args.baseline, "--baseline"), _load([args.new], "NEW"), threshold=args.threshold)
    if bad.empty:
        print(f"no regression beyond noise and {args.threshold:.0%}")
        return 0
    print(f"{len(bad)} case(s) slower than their history beyond noise and {args.threshold:.0%}:")
    print(bad.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("count", help="analytic counts of one layer (FLOPs, MACs, params, bytes)",
                       epilog=_layer_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("layer", nargs="?", help="layer kind, e.g. conv2d, linear, sdpa (list below)")
    p.add_argument("params", nargs="*", help="key=value parameters, e.g. in=64 out=128 k=3 s=2 p=1 g=1")
    p.add_argument("--input", action="append", metavar="SHAPE",
                   help="input shape such as 1x64x56x56 (repeat for several inputs)")
    p.add_argument("--model", choices=sorted(MODELS), help="count a whole reference model instead of one layer "
                   "(built on the meta device; --input defaults to 1x3x224x224)")
    p.add_argument("--dtype", default="fp32", help="fp32, fp16, bf16, ... (default fp32)")
    p.add_argument("--convention", default="canonical", choices=conventions())
    p.add_argument("--format", default="table", choices=["table", "csv", "json"])
    p.set_defaults(func=_cmd_count)

    p = sub.add_parser("devices", help="describe this machine: CPU, GPUs, peaks, software, stored ceilings")
    p.add_argument("--format", default="table", choices=["table", "json"])
    p.add_argument("--no-load", action="store_true", help="skip the 0.2 s sample of how busy the CPUs are")
    p.add_argument("--store", default=None, help="ceilings directory (default results/ceilings)")
    p.set_defaults(func=_cmd_devices)

    p = sub.add_parser("calibrate", help="measure the GEMM ceiling per dtype and the copy bandwidth; store them")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", default="fp32,bf16,fp16", help="comma-separated: fp32, tf32 (cuda), fp16, bf16")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--budget", type=float, default=3.0, help="seconds per measurement (default 3)")
    p.add_argument("--store", default=None, help="ceilings directory (default results/ceilings)")
    p.add_argument("--force", action="store_true", help="measure even if stored ceilings match")
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("run", help="run a suite on a device; rows stored as they are measured")
    p.add_argument("suite", help="a built-in suite name (layerbench suites) or a .toml file")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the suite's first device)")
    p.add_argument("--dtype", default=None, help="comma-separated dtypes, overriding the suite's (fp32,bf16)")
    p.add_argument("--out", default="results", help="results folder (default results/)")
    p.add_argument("--resume", action="store_true", help="continue the latest run of this suite/device/shard")
    p.add_argument("--shard", default=None, metavar="K/N", help="take the K-th of N deterministic parts")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for timing")
    p.add_argument("--mode", default=None, choices=["hot", "cold", "graph", "auto"],
                   help="CUDA timing: hot, cold (L2 flushed before each call), graph, or auto (graph under "
                        "20 us per call, else hot; the default unless the suite says otherwise)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the time-vs-FLOPs plot")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("export", help="export stored results as CSV")
    p.add_argument("paths", nargs="+", help="run directories, Parquet files or globs")
    p.add_argument("--csv", default="-", help="output file (default: stdout)")
    p.add_argument("--samples", action="store_true", help="keep the raw samples column")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("report", help="HTML + Markdown report: findings, roofline, heatmaps, tables")
    p.add_argument("runs", nargs="+", help="run directories, result files or globs")
    p.add_argument("--out", default="report", help="output folder (default report/)")
    p.add_argument("--top", type=int, default=10, help="findings to state (default 10)")
    p.add_argument("--ceilings", default=None, help="stored ceilings folder (default results/ceilings)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("compare", help="two runs case by case: time ratio, utilization, verdict beyond noise")
    p.add_argument("a", help="run A (the reference)")
    p.add_argument("b", help="run B")
    p.add_argument("--threshold", type=float, default=0.10, help="relative change counted (default 0.10)")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("regress", help="nightly check: exit 1 when NEW is slower than its history beyond noise")
    p.add_argument("new", help="the new run")
    p.add_argument("--baseline", nargs="+", required=True, help="earlier runs of the same machine (or globs)")
    p.add_argument("--threshold", type=float, default=0.15, help="relative slowdown flagged (default 0.15)")
    p.set_defaults(func=_cmd_regress)

    p = sub.add_parser("suites", help="list the built-in suites")
    p.set_defaults(func=_cmd_suites)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LayerbenchError as e:
        print(f"layerbench {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
