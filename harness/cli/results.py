"""``layerbench export``, ``report``, ``compare`` and ``regress``: stored rows in, tables and verdicts out."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

NOTHING_JUDGED = 3  # regress, or compare with --fail-on, judged no case: a nightly check that checked nothing fails


def _load(paths: list[str], what: str) -> Any:
    """Stored rows under ``paths`` (each refused file named on stderr); ``SpecError`` when none load."""
    from harness.errors import SpecError
    from harness.store.dataset import load_any
    loaded = load_any(paths)
    for line in loaded.refused:
        print(f"refused: {line}", file=sys.stderr)
    if loaded.frame.empty:
        raise SpecError(what, paths, "run directories, result files or globs that hold rows"
                        + (f" ({len(loaded.refused)} file(s) refused)" if loaded.refused else ""))
    return loaded


def _without_runs(frame: Any, other: Any, side: str, other_side: str) -> Any:
    """``frame`` without the runs ``other`` holds (a glob on one side that also caught the other
    side's run would compare a run with itself); one line on stderr per run left out, and
    ``SpecError`` when nothing is left."""
    from harness.errors import SpecError
    shared = sorted(set(frame["run_id"]) & set(other["run_id"]))
    for run_id in shared:
        print(f"note: run {run_id} is in both {side} and {other_side}: left out of {side}", file=sys.stderr)
    out = frame[~frame["run_id"].isin(shared)]
    if out.empty:
        raise SpecError(side, ", ".join(shared), f"runs other than {other_side}'s")
    return out


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
    rep = build_report(_load(args.runs, "runs"), args.out, formats=formats, top=args.top)
    for i, text in enumerate(rep.findings, 1):
        print(f"{i}. {text}")
    for f in rep.files:
        if f.suffix in (".html", ".md", ".json"):
            print(f"{f.suffix[1:]}: {f}")
    print(f"{len(rep.files)} files in {Path(args.out)}")
    return 0


_COMPARE_COLS = ["family", "case", "dtype", "time_a_s", "time_b_s", "ratio",
                 "util_a", "util_b", "stability_a", "stability_b", "verdict"]


def render_compare(table: Any, fmt: str, threshold: float, rules: list[Any], only_changed: bool) -> tuple[str, int]:
    """The comparison as text (``table``, ``markdown``) or JSON, and how many cases crossed ``rules``."""
    import json

    from harness.analysis.compare import SET_ASIDE, family_geomeans
    from harness.units import percent, seconds
    failed: set[Any] = set()
    for rule in rules if not table.empty else ():
        failed |= set(table.index[rule.crossed(table)])
    t = table.assign(failed=[i in failed for i in table.index])
    shown = t[t["verdict"] != "same"] if only_changed else t
    shown = shown.sort_values("ratio", ascending=False)
    geo = family_geomeans(table)
    counts = table["verdict"].value_counts().to_dict() if not table.empty else {}
    head = [f"cross-device comparison: A = {table.attrs['a']}; B = {table.attrs['b']}"] if table.attrs.get(
        "cross_device") else []
    head += [f"note: {n}" for n in table.attrs.get("notes", [])]
    tail = (f"B vs A over {len(table)} cases (threshold {threshold:.0%}, beyond each side's noise band): "
            + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("slower", "faster", "same", SET_ASIDE)))
    if fmt == "json":
        doc = {"a": table.attrs.get("a"), "b": table.attrs.get("b"), "cross_device": bool(table.attrs.get(
            "cross_device")), "notes": table.attrs.get("notes", []), "threshold": threshold,
            "fail_on": [str(r) for r in rules], "failed": len(failed), "judged": _judged_on_both(table),
            "counts": counts,
            "stability": table.attrs.get("stability", {}), "set_aside": table.attrs.get("set_aside", {}),
            "families": json.loads(geo.to_json(orient="records")),
            "cases": json.loads(shown.drop(columns=["config"], errors="ignore").to_json(orient="records"))}
        return json.dumps(doc, indent=2) + "\n", len(failed)
    if table.empty:
        return "\n".join([*head, "no case in common"]) + "\n", 0
    from harness.analysis.findings import describe_row
    view = shown.copy()
    view["case"] = [describe_row(r) for _, r in view.iterrows()]    # k=1, 3, 5 told apart, as in the summary
    for c in ("time_a_s", "time_b_s"):
        view[c] = view[c].map(seconds)
    for c in ("util_a", "util_b"):
        if c in view:
            view[c] = view[c].map(percent)
    view["ratio"] = view["ratio"].map(lambda v: f"{v:.3f}")
    view["verdict"] = [f"{v} (fail-on)" if f else v for v, f in zip(view["verdict"], view["failed"])]
    cols = [c for c in _COMPARE_COLS if c in view]
    g = geo.assign(geomean_ratio=geo["geomean_ratio"].map(lambda v: f"{v:.3f}"))
    if fmt == "markdown":
        body = [view[cols].fillna("-").to_markdown(index=False), "", "Geometric mean of B/A per family:", "",
                g.to_markdown(index=False) if not g.empty else "(no family with a verdict)"]
        return "\n".join([*head, *body, "", tail]) + "\n", len(failed)
    body = [view[cols].to_string(index=False, na_rep="-") if not view.empty else "(no case changed)", "",
            "geometric mean of B/A per family:", g.to_string(index=False) if not g.empty else "(none)"]
    return "\n".join([*head, *body, "", tail]) + "\n", len(failed)


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.analysis import compare, derive
    from harness.analysis.compare import FailOn
    from harness.errors import SpecError
    if args.to:
        a_paths, b_paths = args.a, args.to
    elif len(args.a) == 2:
        a_paths, b_paths = args.a[:1], args.a[1:]
    else:
        raise SpecError("compare", args.a, "A B, or A... --to B... (paths, dataset URLs or quoted globs)")
    rules = FailOn.parse(args.fail_on) if args.fail_on else []
    b = derive(_load(b_paths, "B").frame)
    a = derive(_without_runs(_load(a_paths, "A").frame, b, "A", "B"))
    table = compare(a, b, threshold=args.threshold, across_machines=args.across_machines)
    text, failed = render_compare(table, args.format, args.threshold, rules, args.only_changed)
    sys.stdout.write(text)
    if args.format == "table":
        from harness.analysis.verdicts import set_aside_text
        for side in ("a", "b"):
            line = set_aside_text(table.attrs.get("set_aside", {}).get(side, {}), f" of {side.upper()}")
            if line:
                print(line, file=sys.stderr)
    if failed:
        print(f"--fail-on {args.fail_on}: {failed} case(s) crossed it", file=sys.stderr)
        return 1
    if rules and not _judged_on_both(table):
        print(f"--fail-on {args.fail_on}: nothing judged (no case in common judged on both sides)"
              + ("" if args.allow_empty else f"; exit {NOTHING_JUDGED} (--allow-empty accepts it)"), file=sys.stderr)
        return 0 if args.allow_empty else NOTHING_JUDGED
    return 0


def _judged_on_both(table: Any) -> int:
    """Cases of a comparison with a verdict: in common and set aside on neither side."""
    from harness.analysis.compare import SET_ASIDE
    return 0 if table.empty else int((table["verdict"] != SET_ASIDE).sum())


def cmd_regress(args: argparse.Namespace) -> int:
    from harness.analysis import derive, regressions
    from harness.analysis.compare import check_history, same_machine_only
    from harness.analysis.verdicts import set_aside_text
    from harness.units import seconds
    new = derive(_load([args.new], "NEW").frame)
    history = derive(_without_runs(_load(args.baseline, "--baseline").frame, new, "the baseline", "NEW"))
    if args.same_machine_only:
        history, dropped = same_machine_only(history, new)
        if dropped:
            print(f"left out {dropped} baseline run(s) of other machines or settings")
    history = check_history(history, new, args.accept_other_machines, args.accept_other_settings)
    bad = regressions(history, new, threshold=args.threshold, budget=args.budget)
    aside = set_aside_text(bad.attrs.get("set_aside", {}), " of the new run")
    if aside:
        print(aside)
    basis = (f"{args.threshold:.0%} and noise (false-positive budget {args.budget:g} per case and night; "
             "baseline: the nights since each case's last change point)")
    judged, runs = bad.attrs.get("judged", 0), history["run_id"].nunique()
    unjudged = bad.attrs.get("without_baseline", 0)
    if unjudged:
        print(f"{unjudged} case(s) of NEW have no stable baseline in {runs} run(s): not judged")
    if not judged:
        print(f"nothing judged: no case of NEW has a stable baseline in {runs} baseline run(s)"
              + ("" if args.allow_empty else f" (exit {NOTHING_JUDGED}; --allow-empty accepts it)"), file=sys.stderr)
        return 0 if args.allow_empty else NOTHING_JUDGED
    if bad.empty:
        print(f"no regression beyond {basis}: {judged} case(s) judged against {runs} baseline run(s)")
        return 0
    print(f"{len(bad)} case(s) slower than their baseline beyond {basis}:")
    shown = bad.copy()
    for c in ("time_median_s", "reference_s", "band_high_s"):
        shown[c] = shown[c].map(seconds)
    shown["slowdown"] = shown["slowdown"].map(lambda v: f"{v:.2f}x")
    for c in ("z", "z_limit"):
        shown[c] = shown[c].map(lambda v: f"{v:.1f}")
    print(shown.drop(columns=["row_id", "config"], errors="ignore").to_string(index=False, na_rep="-"))
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
    p.add_argument("a", nargs="+", help="A B, or the A runs when --to gives B (paths, dataset URLs or quoted globs)")
    p.add_argument("--to", nargs="+", default=None, help="the B runs")
    p.add_argument("--threshold", type=float, default=0.10, help="relative change counted (default 0.10)")
    p.add_argument("--format", default="table", choices=["table", "markdown", "json"],
                   help="table (people), markdown (a PR comment) or json (CI)")
    p.add_argument("--fail-on", default=None, metavar="STAT:LIMIT",
                   help="exit 1 when a case (set aside on neither side) is worse by more than LIMIT: median:10%%, "
                        "min:5%%, mean:0.001 (seconds); comma-separated; STAT: min, max, mean, median, stddev, iqr")
    p.add_argument("--allow-empty", action="store_true",
                   help=f"with --fail-on: exit 0, not {NOTHING_JUDGED}, when no case is judged on both sides")
    p.add_argument("--only-changed", action="store_true", help="show only cases with a verdict other than same")
    p.add_argument("--across-machines", action="store_true",
                   help="compare runs of different machines (an explicit cross-device comparison on case_id)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("regress", help="nightly check: exit 1 when NEW is slower than its history beyond noise")
    p.add_argument("new", help="the new run")
    p.add_argument("--baseline", nargs="+", required=True, help="earlier runs of the same machine (or globs)")
    p.add_argument("--threshold", type=float, default=0.15, help="relative slowdown flagged (default 0.15)")
    p.add_argument("--budget", type=float, default=0.001,
                   help="false-positive budget per case and night (default 0.001: z > 3.09 on the log scale)")
    p.add_argument("--accept-other-machines", action="store_true", help="use baseline runs of other machines")
    p.add_argument("--accept-other-settings", action="store_true",
                   help="use baseline runs with other threading settings")
    p.add_argument("--allow-empty", action="store_true",
                   help=f"exit 0, not {NOTHING_JUDGED}, when no case of NEW has a baseline to be judged against")
    p.add_argument("--same-machine-only", action="store_true",
                   help="leave out baseline runs of other machines or settings (and say how many)")
    p.set_defaults(func=cmd_regress)
