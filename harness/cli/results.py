"""``layerbench export``, ``report``, ``compare`` and ``regress``: stored rows in, tables and verdicts out."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import SpecError

NOTHING_JUDGED = 3  # regress, or compare with --fail-on, judged no case: a nightly check that checked nothing fails
#: The share of cases a nightly check must judge (``--min-judged``): below it, it exits ``NOTHING_JUDGED``.
MIN_JUDGED = 0.5


def _coverage(judged: int, total: int, args: argparse.Namespace, nothing: str, what: str) -> int | None:
    """The exit status when a check judged too few of its cases (``--min-judged``), after one line on
    stderr saying so (``nothing`` when it judged none); ``None`` when it judged enough."""
    share = judged / total if total else 0.0
    if judged and share >= args.min_judged:
        return None
    text = nothing if not judged else (f"{what}: {judged} of {total} case(s) judged ({share:.0%}), under "
                                       f"--min-judged {args.min_judged:.0%}")
    print(text + ("" if args.allow_empty else f" (exit {NOTHING_JUDGED}; --allow-empty accepts it)"), file=sys.stderr)
    return 0 if args.allow_empty else NOTHING_JUDGED


def _load(paths: list[str], what: str) -> Any:
    """Stored rows under ``paths`` (each refused file named on stderr); ``SpecError`` when none load."""
    from harness.store.dataset import load_any  # deferred: --help without torch/pandas
    loaded = load_any(paths)
    if loaded.frame.empty:                  # one line: the first refusal says why, the count the rest
        why = f" ({loaded.refused[0]}" + (f"; {len(loaded.refused) - 1} more file(s) refused" if
                                          len(loaded.refused) > 1 else "") + ")" if loaded.refused else ""
        raise SpecError(what, paths, "run directories, result files or globs that hold rows" + why)
    for line in loaded.refused:
        print(f"refused: {line}", file=sys.stderr)
    return loaded


def _without_runs(frame: Any, other: Any, side: str, other_side: str) -> Any:
    """``frame`` without the runs ``other`` holds (a glob on one side that also caught the other
    side's run would compare a run with itself); one line on stderr per run left out, and
    ``SpecError`` when nothing is left."""
    shared = sorted(set(frame["run_id"]) & set(other["run_id"]))
    for run_id in shared:
        print(f"note: run {run_id} is in both {side} and {other_side}: left out of {side}", file=sys.stderr)
    out = frame[~frame["run_id"].isin(shared)]
    if out.empty:
        raise SpecError(side, ", ".join(shared), f"runs other than {other_side}'s")
    return out


def cmd_export(args: argparse.Namespace) -> int:
    from harness.report import build_model, render_to  # deferred: --help without torch/pandas
    loaded = _load(args.paths, "paths")
    model = build_model(loaded, with_plots=False)
    if not args.samples:
        model = dataclasses.replace(model, table=model.table.drop(columns=["samples_s"], errors="ignore"))
    fmt = args.format
    if args.output in (None, "-"):
        if fmt == "parquet":
            raise SpecError("--output", args.output, "a file for --format parquet")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"export.{fmt}"
            files = render_to(model, fmt, path if fmt in ("csv", "json") else Path(tmp))
            sys.stdout.write(files[0].read_text())
        return 0
    out = Path(args.output)
    files = render_to(model, fmt, out)
    print(f"{len(model.table)} rows -> {files[0]}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import build_report  # deferred: --help without torch/pandas
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    for f in formats:
        if f not in ("html", "markdown", "json"):
            raise SpecError("--format", f, "html, markdown or json (comma-separated)")
    from harness.report.wrap import WIDTH, wrap  # deferred: as above
    if args.out is None:            # one run's report beside it, where `run` put it; several runs' in ./report
        one = Path(args.runs[0]) if len(args.runs) == 1 else None
        args.out = str(one / "report") if one is not None and one.is_dir() and any(one.glob("run-*.json")) \
            else "report"
    rep = build_report(_load(args.runs, "runs"), args.out, formats=formats, top=args.top)
    print("findings (equal FLOPs, slowest vs fastest):" if rep.findings else "findings: none")
    for i, text in enumerate(rep.findings, 1):
        print("\n".join(wrap(f"{i}. {text}", WIDTH, initial_indent="  ", subsequent_indent="     ")))
    for f in rep.files:
        if f.suffix in (".html", ".md", ".json"):
            print(f"{f.suffix[1:]}: {f}")
    print(f"{len(rep.files)} files in {Path(args.out)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.analysis import compare, derive  # deferred: --help without torch/pandas
    from harness.analysis.compare import FailOn  # deferred: as above
    from harness.report import render_text  # deferred: as above
    from harness.report.compare import CompareModel  # deferred: as above
    if args.to:
        a_paths, b_paths = args.a, args.to
    elif len(args.a) == 2:
        a_paths, b_paths = args.a[:1], args.a[1:]
    else:
        raise SpecError("compare", args.a, "A B, or A... --to B... (paths, dataset URLs or quoted globs)")
    rules = tuple(FailOn.parse(args.fail_on)) if args.fail_on else ()
    b = derive(_load(b_paths, "B").frame)
    a = derive(_without_runs(_load(a_paths, "A").frame, b, "A", "B"))
    model = CompareModel.of(compare(a, b, threshold=args.threshold, across_machines=args.across_machines),
                            args.threshold, rules, args.only_changed)
    sys.stdout.write(render_text(model, args.format))
    if args.format == "table":
        for line in model.set_aside_lines():
            print(line, file=sys.stderr)
    if model.failed:
        print(f"--fail-on {args.fail_on}: {len(model.failed)} case(s) crossed it", file=sys.stderr)
        return 1
    if rules:
        gate = _coverage(model.judged, len(model.table), args, f"--fail-on {args.fail_on}: nothing judged (no "
                         "case in common judged on both sides)", f"--fail-on {args.fail_on}")
        if gate is not None:
            return gate
    return 0


def cmd_regress(args: argparse.Namespace) -> int:
    from harness.analysis import derive, regressions  # deferred: --help without torch/pandas
    from harness.analysis.compare import check_history, same_machine_only  # deferred: as above
    from harness.report import render_text  # deferred: as above
    from harness.report.compare import RegressModel  # deferred: as above
    new = derive(_load([args.new], "NEW").frame)
    history = derive(_without_runs(_load(args.baseline, "--baseline").frame, new, "the baseline", "NEW"))
    if args.same_machine_only:
        history, dropped = same_machine_only(history, new)
        if dropped:
            print(f"left out {dropped} baseline run(s) of other machines or settings")
    history = check_history(history, new, args.accept_other_machines, args.accept_other_settings)
    model = RegressModel(regressions(history, new, threshold=args.threshold, budget=args.budget),
                         history["run_id"].nunique(), args.threshold, args.budget)
    sys.stdout.write(render_text(model, "text"))
    if not model.bad.empty:
        return 1
    gate = _coverage(model.judged, model.cases, args, f"nothing judged: no case of NEW has a stable baseline in "
                     f"{model.runs} baseline run(s)", "regress")
    return gate if gate is not None else 0


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
    p.add_argument("--out", default=None, help="output folder (default: RUN/report for one run directory, as "
                   "`run` writes it; else report/)")
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
                   help=f"with --fail-on: exit 0, not {NOTHING_JUDGED}, when too few cases are judged on both sides")
    p.add_argument("--min-judged", type=float, default=MIN_JUDGED, metavar="SHARE",
                   help=f"with --fail-on: the share of cases in common that must be judged on both sides (not set "
                        f"aside, timed alike), else exit {NOTHING_JUDGED} (default {MIN_JUDGED})")
    p.add_argument("--only-changed", action="store_true", help="show only cases with a verdict other than same")
    p.add_argument("--across-machines", action="store_true",
                   help="compare runs of different machines (an explicit cross-device comparison on case_id)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("regress", help="nightly check: exit 1 when NEW is slower than its history beyond noise")
    p.add_argument("new", help="the new run")
    p.add_argument("--baseline", nargs="+", required=True, help="earlier runs of the same machine (or globs)")
    p.add_argument("--threshold", type=float, default=0.15, help="relative slowdown flagged (default 0.15)")
    p.add_argument("--budget", type=float, default=0.001,
                   help="false-positive budget per case and night (default 0.001): with 8 or more nights of "
                        "history, z over Student's t quantile at that budget on the log scale (8.3 at 8 nights, 4.2 "
                        "at 20, toward 3.09); with fewer, the history's noise band decides")
    p.add_argument("--accept-other-machines", action="store_true", help="use baseline runs of other machines")
    p.add_argument("--accept-other-settings", action="store_true",
                   help="use baseline runs with other threading settings")
    p.add_argument("--allow-empty", action="store_true",
                   help=f"exit 0, not {NOTHING_JUDGED}, when too few cases of NEW are judged against a baseline")
    p.add_argument("--min-judged", type=float, default=MIN_JUDGED, metavar="SHARE",
                   help=f"the share of NEW's measured cases that must be judged against a stable baseline, else "
                        f"exit {NOTHING_JUDGED} (default {MIN_JUDGED}): a green night that judged 3 of 20 cases "
                        "is not green")
    p.add_argument("--same-machine-only", action="store_true",
                   help="leave out baseline runs of other machines or settings (and say how many)")
    p.set_defaults(func=cmd_regress)
