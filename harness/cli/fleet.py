"""``layerbench query`` (DuckDB over a result dataset), ``layerbench history`` (the static history
site), and ``layerbench run`` with ``--ray`` or a dataset URL as ``--out``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.errors import LayerbenchError


class MissingExtra(LayerbenchError, RuntimeError):
    """An optional dependency a command needs is not installed; says which extra brings it."""


class QueryError(LayerbenchError, ValueError):
    """DuckDB refused the SQL; the first line of its message."""


def cmd_run_fleet(args: argparse.Namespace) -> int:
    """``run`` whose rows go to a dataset: on a Ray cluster (``--ray``), or staged here and published
    to the URL given as ``--out``."""
    from harness.cli.run import counts_text, prepare_run
    from harness.dataset import is_url, publish, staging_dir
    from harness.fleet.plan import parse_devices
    from harness.runner import run_suite
    suite, dtypes, device, kwargs = prepare_run(args)
    devices = parse_devices(args.devices)
    if args.ray is not None:
        from harness.fleet import run_on_ray
        ray_keys = ("device", "dtypes", "threads", "mode", "calibrate", "progress", "processes", "omp_wait")
        summary = run_on_ray(suite, args.out, devices=devices, address=args.ray or None,
                             **{k: kwargs[k] for k in ray_keys})
        for r in summary.results:
            print(f"{r.run_id} shard {r.shard[0]}/{r.shard[1]} on {r.host} [{r.machine_id}]: {counts_text(r.statuses)} "
                  f"({r.already_done} already stored) -> {r.published}")
        print(f"{len(summary.results)} task(s) in {summary.seconds:.1f} s; runs {', '.join(summary.run_ids)}")
        return 0
    if devices:
        from harness.errors import SpecError
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


def cmd_query(args: argparse.Namespace) -> int:
    try:
        import duckdb
    except ImportError:
        raise MissingExtra("DuckDB is not installed: pip install 'layerbench[fleet]' (or pip install duckdb)") from None
    from harness.analysis import derive
    from harness.cli.results import _load
    loaded = _load([args.dataset], "--dataset")
    rows = loaded.frame
    con = duckdb.connect()
    con.register("rows", rows)
    con.register("derived", derive(rows))
    try:
        result = con.execute(args.sql).df()
    except duckdb.Error as e:
        raise QueryError(f"{str(e).splitlines()[0]} (views: rows, derived)") from None
    if args.format == "csv":
        sys.stdout.write(result.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(result.to_json(orient="records", indent=2) + "\n")
    else:
        print(result.to_string(index=False) if not result.empty else "(no rows)")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.cli.results import _load
    from harness.history import build_site
    loaded = _load(args.dataset, "DATASET")
    summaries = build_site(loaded.frame, args.out, threshold=args.threshold)
    bad = [s for s in summaries if s.regressed]
    print(f"{len(summaries)} series, {len(bad)} regressed -> {Path(args.out) / 'index.html'}")
    for s in bad:
        print(f"  regressed: {s.title} ({s.machine}): {s.change}")
    return 0


def add(sub: Any) -> None:
    p = sub.add_parser("query", help="SQL over a result dataset (DuckDB): views rows and derived")
    p.add_argument("sql", help="a DuckDB query over the views rows (stored columns) and derived (+ derived columns)")
    p.add_argument("--dataset", default="results",
                   help="dataset URL, folder, run directories or glob (default results)")
    p.add_argument("--format", default="table", choices=["table", "csv", "json"])
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("history", help="static HTML site: each case across nights, noise bands, change points")
    p.add_argument("dataset", nargs="+", help="dataset URL(s), folders, run directories or globs")
    p.add_argument("--out", default="history", help="output folder (default history/)")
    p.add_argument("--threshold", type=float, default=0.15,
                   help="a last change point slower than this marks the case regressed (default 0.15)")
    p.set_defaults(func=cmd_history)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """``run``'s fleet options: ``--ray [ADDRESS]`` and ``--devices``."""
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the suite's shards as Ray tasks (one per GPU, or one per node on CPU) on the cluster "
                        "at ADDRESS (default: RAY_ADDRESS, else a local one); rows go to the dataset at --out")
    p.add_argument("--devices", default=None, metavar="TYPES",
                   help="with --ray: the suite once per device type (H100,A100), placed by Ray custom resources")
