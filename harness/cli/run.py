"""``layerbench run`` and ``layerbench suites``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from harness.errors import SpecError


def prepare_run(args: argparse.Namespace) -> tuple[Any, list[str] | None, str, dict[str, Any]]:
    """What ``run`` and its fleet form share: logging, the suite, its dtypes and device, and the
    ``run_suite`` keyword arguments the flags set (everything but ``out``)."""
    from harness.layers.dtypes import canonical_dtype  # deferred: --help without torch/pandas
    from harness.runner import parse_shard  # deferred: as above
    from harness.suite import load_suite, parse_passes  # deferred: as above
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    suite = load_suite(args.suite)
    if args.passes:
        suite = suite.with_passes(parse_passes([p.strip() for p in args.passes.split(",")], "--pass"))
    dtypes = [canonical_dtype(d.strip(), "--dtype") for d in args.dtype.split(",") if d.strip()] if args.dtype \
        else None
    device = args.device or suite.devices[0]
    kwargs = dict(device=device, dtypes=dtypes, resume=args.resume, threads=args.threads,
                  shard=parse_shard(args.shard) if args.shard else (1, 1), progress=None if not args.quiet else False,
                  mode=args.mode, calibrate=args.calibrate, ceilings=args.ceilings,
                  processes=cli_processes(args, suite), omp_wait=args.omp_wait, worker_start=args.worker_start)
    return suite, dtypes, device, kwargs


def threads_arg(value: str) -> int | str:
    """``--threads``: ``auto`` or an integer >= 1 (one line naming the value otherwise)."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"--threads={value!r}: expected auto or an integer >= 1")
    return n


def counts_text(statuses: dict[str, int]) -> str:
    """``20 ok, 1 skipped`` (or ``nothing new``)."""
    return ", ".join(f"{v} {k}" for k, v in sorted(statuses.items())) or "nothing new"


def cmd_run(args: argparse.Namespace) -> int:
    early = early_workers(args)      # before this process imports pandas and torch: the server imports torch meanwhile
    from harness.store.dataset import is_url  # deferred: --help without torch/pandas
    if args.ray is not None or args.devices or is_url(args.out):
        return cmd_run_fleet(args)
    suite, dtypes, device, kwargs = prepare_run(args)
    from harness.backends import resolve_device  # deferred: --help without torch/pandas
    from harness.runner import run_suite  # deferred: as above
    from harness.timing import heap  # deferred: as above
    try:
        heap.check_env()
        kwargs["device"] = device = resolve_device(device)    # once: a device there is not stops here, silently
    except BaseException:
        if early is not None:
            early.close()
        raise
    print(f"{suite.name}: {suite.count(dtypes):,} cases on {device}" + (f", shard {args.shard}" if args.shard else ""),
          file=sys.stderr)
    policy = kwargs["omp_wait"] if kwargs["omp_wait"] is not None else getattr(suite, "omp_wait", None)
    if early is not None and policy != args.omp_wait:
        early.close()                # the suite asks for another OpenMP policy: run_suite starts the right server
        early = None
    from harness.analysis.confirmed import select  # deferred: as above
    if early is not None and not args.no_report and (kwargs["processes"] > 1 or policy is not None):
        import harness.report.plots  # noqa: F401  # deferred: matplotlib, while the fork server imports torch
    summary = run_suite(suite, out=args.out, workers=early, confirm=None if args.no_confirm else select, **kwargs)
    if summary.interrupted:
        print(f"interrupted: {interrupted_text(summary)}; layerbench run {args.suite} --resume continues",
              file=sys.stderr)
        return 130
    print(f"{summary.run_id}: {counts_text(summary.statuses)} ({summary.already_done} already stored) in "
          f"{summary.seconds:.1f} s -> {summary.parquet}")
    if summary.parquet.exists():
        from harness.report.summary import finish_run  # deferred: --help without torch/pandas
        report = None if args.no_report else Path(args.report) if args.report else summary.run_dir / "report"
        rows = finish_run(summary.run_dir, report)
        if args.benchmark_json:
            from harness.report.pytest_json import write_pytest_benchmark  # deferred: --help without torch/pandas
            written = write_pytest_benchmark(rows if rows is not None else summary.run_dir, args.benchmark_json)
            print(f"pytest-benchmark JSON: {written}")
    return nothing_measured(summary)


def nothing_measured(summary: Any) -> int:
    """1, with one line on stderr, when the run had cases to measure and measured none of them (every
    case invalid, skipped or failed: a CI job must not pass on it); else 0."""
    if summary.statuses.get("ok") or summary.already_done or not summary.statuses:
        return 0
    print(f"nothing measured: {counts_text(summary.statuses)} (each row's reason: its `error` column, and the "
          "progress line above)", file=sys.stderr)
    return 1


def interrupted_text(summary: Any) -> str:
    """What an interrupted run stored, in one clause: ``12 rows stored in <dir> (8 before this start)``."""
    new = sum(n for status, n in summary.statuses.items() if status != "duplicate")
    stored = new + summary.already_done
    before = f" ({summary.already_done} before this start)" if summary.already_done else ""
    return f"{stored} row(s) stored in {summary.run_dir}{before}" if stored else f"no row stored in {summary.run_dir}"


def cmd_run_fleet(args: argparse.Namespace) -> int:
    """``run`` whose rows go to a dataset: on a Ray cluster (``--ray``), or staged here and published
    to the URL given as ``--out``."""
    from harness.fleet.plan import parse_devices  # deferred: --help without torch/pandas
    from harness.runner import run_suite  # deferred: as above
    from harness.store.dataset import is_url, publish, staging_dir  # deferred: as above
    suite, dtypes, device, kwargs = prepare_run(args)
    devices = parse_devices(args.devices)
    if args.ray is not None:
        from harness.fleet import run_on_ray  # deferred: the optional extra 'fleet' (Ray)
        ray_keys = ("device", "dtypes", "threads", "mode", "calibrate", "progress", "processes", "omp_wait",
                    "worker_start")
        summary = run_on_ray(suite, args.out, devices=devices, address=args.ray or None,
                             **{k: kwargs[k] for k in ray_keys})
        for r in summary.results:
            print(f"{r.run_id} shard {r.shard[0]}/{r.shard[1]} on {r.host} [{r.machine_id}]: {counts_text(r.statuses)} "
                  f"({r.already_done} already stored) -> {r.published}")
        print(f"{len(summary.results)} task(s) in {summary.seconds:.1f} s; runs {', '.join(summary.run_ids)}")
        return 0
    if devices:
        raise SpecError("--devices", args.devices, "--ray (device types are placed through Ray custom resources)")
    if not is_url(args.out):
        raise AssertionError("cmd_run_fleet needs --ray or a URL --out")
    stage = staging_dir(args.out)
    print(f"{suite.name}: {suite.count(dtypes):,} cases on {device}, staged in {stage}, published to {args.out}",
          file=sys.stderr)
    s = run_suite(suite, out=stage, **kwargs)
    url = publish(s.parquet, args.out)
    counts = counts_text(s.statuses)
    print(f"{s.run_id}: {counts} ({s.already_done} already stored) in {s.seconds:.1f} s -> {url}")
    if s.interrupted:
        print("interrupted: rows measured so far are stored and published; --resume continues", file=sys.stderr)
        return 130
    return 0


def early_workers(args: argparse.Namespace) -> Any:
    """The fork server of a run whose flags (``--processes``, ``$LAYERBENCH_PROCESSES``, the CLI
    default, ``--omp-wait``) say it measures in workers, started now, before this process imports
    torch (``harness.runner.launch`` imports none); ``None`` otherwise. A suite that sets
    ``processes = 1`` makes ``run_suite`` close it unused."""
    from harness.runner.launch import launcher, omp_env  # deferred: --help without torch/pandas
    if args.ray is not None or args.devices or "://" in str(args.out):
        return None                  # a fleet run (Ray, or a dataset URL: ``store.dataset.is_url``) starts none here
    try:
        n = args.processes if args.processes is not None else int(os.environ.get("LAYERBENCH_PROCESSES")
                                                                   or CLI_PROCESSES)
    except ValueError:
        return None                  # cli_processes names the bad value in one line
    return launcher(args.worker_start, omp_env(args.omp_wait)) if n > 1 or args.omp_wait else None


#: Worker processes per case for ``layerbench run`` when neither --processes nor the suite says, and
#: $LAYERBENCH_PROCESSES is unset (docs/measuring.md, "Stability": the measured cost and gain behind it).
CLI_PROCESSES = 3


def cli_processes(args: argparse.Namespace, suite: Any) -> int:
    """--processes, else the suite's ``processes``, else $LAYERBENCH_PROCESSES, else ``CLI_PROCESSES``."""
    if args.processes is not None:
        if not 1 <= args.processes <= 64:
            raise SpecError("--processes", args.processes, "an integer from 1 to 64")
        return args.processes
    if getattr(suite, "processes", None):
        return suite.processes
    env = os.environ.get("LAYERBENCH_PROCESSES")
    if env:
        try:
            return int(env)
        except ValueError:
            raise SpecError("LAYERBENCH_PROCESSES", env, "an integer from 1 to 64") from None
    return CLI_PROCESSES


def cmd_suites(args: argparse.Namespace) -> int:
    from harness.suite import builtin_suites, load_suite  # deferred: --help without torch/pandas
    names = builtin_suites()
    width = max(map(len, names), default=0)
    for name in names:
        s = load_suite(name)
        print(f"{name:{width}} {s.count():6} cases  {','.join(s.devices):9} {','.join(s.dtypes):15} "
              f"{','.join(s.all_passes()):16} {s.description}")
    return 0


def add(sub: Any) -> None:
    p = sub.add_parser("run", help="run a suite on a device; rows stored as they are measured")
    p.add_argument("suite", help="a built-in suite name (layerbench suites) or a .toml file")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: the suite's first device)")
    p.add_argument("--dtype", default=None, metavar="DTYPES",
                   help="comma-separated dtypes replacing the suite's: fp32, fp16, bf16, fp64 (aliases float32, "
                        "float16, half, bfloat16, float64, double)")
    p.add_argument("--pass", dest="passes", default=None, metavar="PASSES",
                   help="comma-separated passes replacing the suite's: forward, backward (the gradients from a "
                        "forward made before timing), forward+backward (both in one call)")
    p.add_argument("--out", default="results",
                   help="results folder (default results/), or a dataset URL (s3://, gs://, file://): the run is "
                        "staged locally and each committed shard published there")
    p.add_argument("--resume", action="store_true", help="continue the latest run of this suite/device/shard")
    p.add_argument("--shard", default=None, metavar="K/N", help="take the K-th of N deterministic parts")
    p.add_argument("--threads", type=threads_arg, default="auto",
                   help="CPU threads for timing: a count, or auto (default where the suite sets none: as many as "
                        "CPUs free of other processes at the start, at most torch's default; the choice is printed "
                        "and stored with the run)")
    p.add_argument("--mode", default=None, choices=["hot", "cold", "graph", "auto"],
                   help="GPU timing: hot, cold (L2 flushed before each call), graph, or auto (graph under "
                        "20 us per call, else hot; the default unless the suite says otherwise)")
    p.add_argument("--calibrate", default="missing", choices=["missing", "always", "never"],
                   help="measured ceilings stored with the rows: measure the dtypes not calibrated yet (default), "
                        "all again, or use only what is stored")
    p.add_argument("--processes", type=int, default=None, metavar="N",
                   help="measure each case in N fresh worker processes, one after another, each in a different "
                        "case order; rows keep every process's median and a stability verdict (default: the "
                        "suite's `processes`, else $LAYERBENCH_PROCESSES, else 3)")
    p.add_argument("--omp-wait", default=None, choices=["active", "passive"],
                   help="OMP_WAIT_POLICY in the worker processes (measures in a worker even with one process; "
                        "default: the suite's `omp_wait`, else the environment as it is)")
    p.add_argument("--worker-start", default="fork-server", choices=["fork-server", "spawn"],
                   help="how worker processes start: forked from one interpreter that imported torch once "
                        "(default; milliseconds each) or a fresh interpreter each (seconds each)")
    p.add_argument("--ceilings", default=None, help="ceilings store (default ~/.cache/layerbench/ceilings)")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="where the HTML report of this run goes (default: <run dir>/report); a summary "
                        "(utilization, roofline labels, findings) is printed at the end either way")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--no-confirm", action="store_true",
                   help="do not time the candidate findings again interleaved (ABAB blocks in each of the run's "
                        "processes) once the rows are stored; findings then rest on medians and process bounds")
    p.add_argument("--benchmark-json", default=None, metavar="FILE",
                   help="also write the run's ok rows as pytest-benchmark JSON (`pytest-benchmark compare` reads it; "
                        "layerbench reads it back)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("suites", help="list the built-in suites")
    p.set_defaults(func=cmd_suites)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``run``'s fleet options: ``--ray [ADDRESS]`` and ``--devices``."""
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the suite's shards as Ray tasks (one per GPU, or one per node on CPU) on the cluster "
                        "at ADDRESS (default: RAY_ADDRESS, else a local one); rows go to the dataset at --out")
    p.add_argument("--devices", default=None, metavar="TYPES",
                   help="with --ray: the suite once per device type (H100,A100), placed by Ray custom resources")
