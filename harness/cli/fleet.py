"""``layerbench query`` (DuckDB over a result dataset) and ``layerbench history`` (the static history
site)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.cli.results import _load
from harness.errors import LayerbenchError


class MissingExtra(LayerbenchError, RuntimeError):
    """An optional dependency a command needs is not installed; says which extra brings it."""


class QueryError(LayerbenchError, ValueError):
    """DuckDB refused the SQL; the first line of its message."""


def this_machine(frame: Any, paths: list[str], all_machines: bool) -> Any:
    """The rows of this machine, unless ``all_machines`` or every path is a dataset URL (a fleet's
    dataset is read whole); one line on stderr says how many runs of other machines were left out."""
    from harness.store.dataset import is_url  # deferred: --help without torch/pandas
    if all_machines or frame.empty or all(is_url(p) for p in paths):
        return frame
    from harness.devices.identity import describe_machine_identity  # deferred: --help without torch/pandas
    mine = frame["machine_id"] == describe_machine_identity().machine_id
    others = frame.loc[~mine, "run_id"].nunique()
    if others:
        print(f"note: {others} run(s) of other machines left out (--all-machines keeps them)", file=sys.stderr)
    return frame[mine]


def cmd_query(args: argparse.Namespace) -> int:
    try:
        import duckdb  # deferred: the optional extra 'fleet'
    except ImportError:
        raise MissingExtra("DuckDB is not installed: pip install 'layerbench[fleet]' (or pip install duckdb)") from None
    from harness.analysis import derive  # deferred: --help without torch/pandas
    loaded = _load([args.dataset], "--dataset")
    rows = this_machine(loaded.frame, [args.dataset], args.all_machines)
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
    from harness.report.site import build_site  # deferred: --help without torch/pandas
    loaded = _load(args.dataset, "DATASET")
    summaries = build_site(this_machine(loaded.frame, args.dataset, args.all_machines), args.out,
                           threshold=args.threshold)
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
    p.add_argument("--all-machines", action="store_true",
                   help="read every machine's runs in a folder (default: this machine's; a dataset URL is read whole)")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("history", help="static HTML site: each case across nights, noise bands, change points")
    p.add_argument("dataset", nargs="+", help="dataset URL(s), folders, run directories or globs")
    p.add_argument("--out", default="history", help="output folder (default history/)")
    p.add_argument("--threshold", type=float, default=0.15,
                   help="a last change point slower than this marks the case regressed (default 0.15)")
    p.add_argument("--all-machines", action="store_true",
                   help="read every machine's runs in a folder (default: this machine's; a dataset URL is read whole)")
    p.set_defaults(func=cmd_history)
