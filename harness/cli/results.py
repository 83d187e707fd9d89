"""``layerbench export``, ``report``, ``compare`` and ``regress``: stored rows in, tables and verdicts out."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any


def _load(paths: list[str], what: str) -> Any:
    """Stored rows under ``paths`` (each refused file named on stderr); ``SpecError`` when none load."""
    from harness.errors import SpecError
    from harness.store import load_runs
    loaded = load_runs(paths)
    for line in loaded.refused:
        print(f"refused: {line}", file=sys.stderr)
    if loaded.frame.empty:
        raise SpecError(what, paths, "run directories, result files or globs that hold rows"
                        + (f" ({len(loaded.refused)} file(s) refused)" if loaded.refused else ""))
    return loaded


def cmd_export(args: argparse.Namespace) -> int:
    from harness.report.model import build_model
    from harness.report.render import render
    loaded = _load(args.paths, "paths")
    model = build_model(loaded, with_plots=False)
    if not args.samples:
        model = dataclasses.replace(model, table=model.table.drop(columns=["samples_s"], errors="ignore"))
    fmt = args.format
    if args.output in (None, "-"):
        if fmt == "parquet":
            from harness.errors import SpecError
            raise SpecError("--output", args.output, "a file for --format parquet")
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"export.{fmt}"
            files = render(model, fmt, path if fmt in ("csv", "json") else Path(tmp))
            sys.stdout.write(files[0].read_text())
        return 0
    out = Path(args.output)
    files = render(model, fmt, out)
    print(f"{len(model.table)} rows -> {files[0]}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.errors import SpecError
    from harness.report import build_report
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    for f in formats:
        if f not in ("html", "markdown", "json"):
            raise SpecError("--format", f, "html, markdown or json (comma-separated)")
    _load(args.runs, "runs")
    rep = build_report(args.runs, args.out, formats=formats, top=args.top)
    for i, text in enumerate(rep.findings, 1):
        print(f"{i}. {text}")
    for f in rep.files:
        if f.suffix in (".html", ".md", ".json"):
            print(f"{f.suffix[1:]}: {f}")
    print(f"{len(rep.files)} files in {Path(args.out)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.analysis import compare, derive
    from harness.errors import SpecError
    from harness.units import percent, seconds
    if args.to:
        a_paths, b_paths = args.a, args.to
    elif len(args.a) == 2:
        a_paths, b_paths = args.a[:1], args.a[1:]
    else:
        raise SpecError("compare", args.a, "A B, or A... --to B... (paths or quoted globs)")
    a, b = derive(_load(a_paths, "A").frame), derive(_load(b_paths, "B").frame)
    table = compare(a, b, threshold=args.threshold, across_machines=args.across_machines)
    if table.attrs.get("cross_device"):
        print(f"cross-device comparison: A = {table.attrs['a']}; B = {table.attrs['b']}")
    for note in table.attrs.get("notes", []):
        print(f"note: {note}")
    if table.empty:
        print("no case in common")
        return 0
    shown = table.sort_values("ratio", ascending=False).copy()
    for c in ("time_a_s", "time_b_s"):
        shown[c] = shown[c].map(seconds)
    for c in ("util_a", "util_b"):
        if c in shown:
            shown[c] = shown[c].map(percent)
    shown["ratio"] = shown["ratio"].map(lambda v: f"{v:.3f}")
    cols = [c for c in ["family", "layer", "input_shapes", "memory_format", "dtype", "time_a_s", "time_b_s",
                        "ratio", "util_a", "util_b", "verdict"] if c in shown]
    print(shown[cols].to_string(index=False))
    counts = table["verdict"].value_counts().to_dict()
    print(f"\nB vs A over {len(table)} cases (threshold {args.threshold:.0%}, beyond each side's noise band): "
          + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("slower", "faster", "same")))
    return 0


def cmd_regress(args: argparse.Namespace) -> int:
    from harness.analysis import derive, regressions
    from harness.analysis.compare import check_history, same_machine_only
    from harness.units import seconds
    new = derive(_load([args.new], "NEW").frame)
    history = derive(_load(args.baseline, "--baseline").frame)
    if args.same_machine_only:
        history, dropped = same_machine_only(history, new)
        if dropped:
            print(f"left out {dropped} baseline run(s) of other machines or settings")
    history = check_history(history, new, args.accept_other_machines, args.accept_other_settings)
    bad = regressions(history, new, threshold=args.threshold)
    if bad.empty:
        print(f"no regression beyond noise and {args.threshold:.0%} "
              f"({history['run_id'].nunique()} baseline run(s))")
        return 0
    print(f"{len(bad)} case(s) slower than their history beyond noise and {args.threshold:.0%}:")
    shown = bad.copy()
    for c in ("time_median_s", "reference_s", "band_high_s"):
        shown[c] = shown[c].map(seconds)
    shown["slowdown"] = shown["slowdown"].map(lambda v: f"{v:.2f}x")
    print(shown.drop(columns=["row_id", "config"], errors="ignore").to_string(index=False))
    return 1


def add(sub: Any) -> None:
    p = sub.add_parser("export", help="stored rows with the derived columns, as csv, json, parquet or markdown")
    p.add_argument("paths", nargs="+", help="run directories, Parquet files, pytest-benchmark JSON or globs")
    p.add_argument("--format", default="csv", choices=["csv", "json", "parquet", "markdown"])
    p.add_argument("--output", "-o", default=None, help="output file (markdown: a folder); default: stdout")
    p.add_argument("--csv", dest="output", help=argparse.SUPPRESS)
    p.add_argument("--samples", action="store_true", help="keep the raw samples column")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="HTML (+ Markdown, JSON) report: findings, rooflines, heatmaps, tables")
    p.add_argument("runs", nargs="+", help="run directories, result files or globs")
    p.add_argument("--out", default="report", help="output folder (default report/)")
    p.add_argument("--format", default="html,markdown", help="comma-separated: html, markdown, json")
    p.add_argument("--top", type=int, default=10, help="findings to state (default 10)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="two sets of runs case by case: time ratio, utilization, verdict beyond noise")
    p.add_argument("a", nargs="+", help="A B, or the A runs when --to gives B (paths or quoted globs)")
    p.add_argument("--to", nargs="+", default=None, help="the B runs")
    p.add_argument("--threshold", type=float, default=0.10, help="relative change counted (default 0.10)")
    p.add_argument("--across-machines", action="store_true",
                   help="compare runs of different machines (an explicit cross-device comparison on case_id)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("regress", help="nightly check: exit 1 when NEW is slower than its history beyond noise")
    p.add_argument("new", help="the new run")
    p.add_argument("--baseline", nargs="+", required=True, help="earlier runs of the same machine (or globs)")
    p.add_argument("--threshold", type=float, default=0.15, help="relative slowdown flagged (default 0.15)")
    p.add_argument("--accept-other-machines", action="store_true", help="use baseline runs of other machines")
    p.add_argument("--accept-other-settings", action="store_true",
                   help="use baseline runs with other threading settings")
    p.add_argument("--same-machine-only", action="store_true",
                   help="leave out baseline runs of other machines or settings (and say how many)")
    p.set_defaults(func=cmd_regress)
