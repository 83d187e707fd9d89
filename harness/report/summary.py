"""The end of a run: a compact summary of the stored run (the ``summary`` text renderer of the report
model) and ``finish_run``, which builds that model once, writes the report from it and prints the
summary from it, without ever failing the run.

The summary reads only stored columns and the derived ones (``harness.analysis.derive``):
utilization per family (best and worst row, against the measured GEMM ceiling and the datasheet
or formula peak; a memory-bound row against the measured and theoretical bandwidth, with its cache
level's roof), rows per roofline label (and memory level, where ``roof_level`` is present),
rows per ``stability`` verdict, and the top equal-FLOPs findings: those of judged rows
(``harness.analysis.verdicts``: ``stable``, or no verdict recorded) by their medians, then those
of set-aside rows that hold across processes (``harness.analysis.findings``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness import record as R
from harness import store
from harness.analysis import findings
from harness.analysis.confirmed import INTERLEAVED
from harness.analysis.findings import MIN_PROCESSES, Finding, describe_row
from harness.analysis.metrics import is_cache_level
from harness.analysis.verdicts import counts_text, is_set_aside, judged
from harness.report.model import ReportModel, build_model
from harness.report.predictions import WORST_REPORT, WORST_SUMMARY, as_json, lines, view_of
from harness.report.registry import render, render_text, renderer
from harness.report.trust import trust_lines
from harness.report.wrap import MAX_WIDTH, WIDTH, fit, wrap
from harness.store import Loaded
from harness.timing.stability import BUSY_LIMIT, SPLIT
from harness.timing.stats import NOISY_REL_IQR
from harness.units import percent

#: Findings the summary tells.
TOP_FINDINGS = 3
#: The derived column a hierarchical roofline adds (the cache level or DRAM bounding the row).
ROOF_LEVEL = "roof_level"


def _pct(x: Any) -> str:
    """A whole percent; one decimal under 1 % (``0.8 %``, as the residual lines give it, never ``1 %``)."""
    if x is None or pd.isna(x):
        return "-"
    return f"{100 * float(x):.1f} %" if abs(float(x)) < 0.00995 else f"{100 * float(x):.0f} %"


def _varying(family_rows: pd.DataFrame) -> list[str]:
    """The sweep names (and layout, dtype) whose values differ between a family's rows."""
    axes = [_axes(a) for a in family_rows.get(R.AXES, pd.Series(dtype=object))]
    names = sorted({k for a in axes for k in a})
    out: list[str] = []
    for k in names:
        if len({repr(a.get(k)) for a in axes}) > 1 and not any(all(a.get(k) == a.get(m) for a in axes) for m in out):
            out.append(k)       # in=c, out=c: one name for the same values
    layouts = family_rows[R.MEMORY_FORMAT].replace("contiguous", "nchw") if R.MEMORY_FORMAT in family_rows else None
    return out + [c for c in (R.LAYER, R.MEMORY_FORMAT, R.DTYPE, R.GRADS) if c in family_rows and (
        layouts if c == R.MEMORY_FORMAT else family_rows[c]).nunique(dropna=False) > 1]   # contiguous: no layout


def _axes(text: Any) -> dict[str, Any]:
    try:
        got = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return got if isinstance(got, dict) else {}


def _name(row: pd.Series, varying: list[str]) -> str:
    axes = _axes(row.get(R.AXES))
    parts = [f"{k}={axes[k]}" if k in axes else f"grads={row.get(k)}" if k == R.GRADS else str(row.get(k))
             for k in varying if k in axes or k in row]
    return " ".join(parts) or str(row.get(R.LAYER))


def _peak_kind(rows: pd.DataFrame) -> str:
    kinds = sorted({str(k) for k in rows.get(R.PEAK_SOURCE, pd.Series(dtype=object)).dropna()
                    if k in ("datasheet", "formula")})
    return "/".join(kinds) or "theoretical"




def _side(row: pd.Series) -> str:
    """``memory`` when the row falls on the memory side of the ridge its label is judged by
    (``roof_bound``; ``roofline_bound`` in a table without it) and a bandwidth figure is stored,
    else ``compute``."""
    bw = (row.get("bw_util_ceiling"), row.get("bw_util_peak"), row.get("bw_util_level"))
    bound = row.get("roof_bound", row.get("roofline_bound"))
    return "memory" if bound == "memory" and any(pd.notna(x) for x in bw) else "compute"


def _figures(row: pd.Series) -> tuple[Any, Any, str, str]:
    """(of the measured ceiling, of the theoretical peak, unit text, roof text): FLOP/s utilization
    for a compute-side row; B/s utilization for a memory-side one, against the roof of the memory
    level its working set fits: a cache level's measured roof (``bw_util_level``; no datasheet
    figure) or the DRAM copy and datasheet bandwidth. A cache-resident row is never shown as a
    fraction of DRAM, which it outruns; nor is its launch floor's share of its time
    (``roof_level_fraction`` of a launch-bound row) shown as bandwidth."""
    if _side(row) == "compute":
        return row.get("util_ceiling"), row.get("util_peak"), "", ""
    level, frac = row.get("roof_mem_level"), row.get("bw_util_level")
    if is_cache_level(level, row) and pd.notna(frac):
        return frac, float("nan"), "B/s ", f" ({level} roof)"
    return row.get("bw_util_ceiling"), row.get("bw_util_peak"), "B/s ", ""


def _rank_key(row: pd.Series) -> float:
    ceiling, peak, _, _ = _figures(row)
    return float(ceiling) if pd.notna(ceiling) else float(peak) if pd.notna(peak) else float("nan")


#: The footnote of a utilization block with a row set aside.
ASIDE_NOTE = ("  (* a row set aside, not stable: its time may not hold in another process; see the stability "
              "line)")


def utilization_lines(ok: pd.DataFrame, named_by: pd.DataFrame | None = None, which: str = "",
                      width: int | None = None) -> list[str]:
    """Per family: the best and the worst row of ``ok`` by the utilization of the roof that binds
    each (``_figures``: FLOP/s of the measured ceiling and of the theoretical peak; B/s for a
    memory-side row), named by the sweep names that vary within the family in ``named_by``
    (default: ``ok``). Utilization is a figure, not a verdict: every measured row counts, and a
    set-aside row (``verdicts.is_set_aside``) is marked ``*``. ``which`` names the rows (a pass);
    ``width``: of the family column (default: the longest family here)."""
    named_by = ok if named_by is None else named_by
    of = f" ({which})" if which else ""
    if ok.empty:
        return [f"utilization{of}: no measured row"]
    if ok["util_peak"].isna().all() and ok["util_ceiling"].isna().all():
        return [f"utilization{of}: no peak or ceiling stored with these rows"]
    ok = ok.assign(_aside=is_set_aside(ok), _key=[_rank_key(r) for _, r in ok.iterrows()])
    lines = [f"utilization per family{of}, best and worst: measured ceiling / {_peak_kind(ok)} peak "
             "(FLOP/s; B/s if memory-bound)"]
    width = width or _family_width(ok)
    for family, rows in ok.groupby(R.FAMILY, sort=False):
        rows = rows[rows["_key"].notna()]
        if rows.empty:
            continue
        varying = _varying(named_by[named_by[R.FAMILY] == family])
        best, worst = rows.loc[rows["_key"].idxmax()], rows.loc[rows["_key"].idxmin()]
        line = f"  {family:<{width}}  best {_cell(best, varying)}"
        if len(rows) > 1:
            worst_text = f"worst {_cell(worst, varying)}"
            two_lines = len(line) + len(worst_text) + 3 > MAX_WIDTH   # past a terminal's width
            line += f";\n  {'':<{width}}  {worst_text}" if two_lines else f";  {worst_text}"
        lines += line.split("\n")
    if ok["_aside"].any():
        lines.append(ASIDE_NOTE)
    return lines


def _family_width(ok: pd.DataFrame) -> int:
    return max(len(str(f)) for f in ok[R.FAMILY].unique())


def _cell(row: pd.Series, varying: list[str]) -> str:
    """``k=5 p=2*: 84 % / 75 %``; a cache-resident row against its level's measured roof alone (a
    cache has no datasheet figure): ``relu: B/s 24 % of its L3 roof``."""
    ceiling, peak, unit, cache = _figures(row)
    if cache and pd.isna(peak):
        return f"{_name(row, varying)}{_mark(row)}: {unit}{_pct(ceiling)} of its {cache.strip(' ()')}"
    return f"{_name(row, varying)}{_mark(row)}: {unit}{_pct(ceiling)} / {_pct(peak)}{cache}"


def _mark(row: pd.Series) -> str:
    """``*`` for a set-aside row (``_aside``, from ``verdicts.is_set_aside``)."""
    return "*" if row["_aside"] else ""


def _counts(values: pd.Series) -> str:
    return ", ".join(f"{n} {k}" for k, n in values.value_counts().items())


def pass_utilization_lines(ok: pd.DataFrame) -> list[str]:
    """``utilization_lines`` of the run, one block per pass when it holds more than one."""
    passes = ok[R.PASS].fillna(R.PASSES[0]) if R.PASS in ok else pd.Series(R.PASSES[0], index=ok.index)
    held = [p for p in R.PASSES if (passes == p).any()]
    if len(held) <= 1:
        return utilization_lines(ok)
    width = _family_width(ok)                                    # one column over every pass's block
    lines = [line for p in held for line in utilization_lines(ok[passes == p], which=p, width=width)
             if line != ASIDE_NOTE]
    return lines + ([ASIDE_NOTE] if is_set_aside(ok).any() else [])


#: Rows the backward/forward lines tell.
TOP_RATIOS = 3


def ratio_lines(ok: pd.DataFrame, top: int = TOP_RATIOS) -> list[str]:
    """The backward rows furthest above their FLOPs ratio to their layer's forward
    (``bwd_fwd_time_ratio`` over ``bwd_fwd_flops_ratio``), one sentence each; nothing where the run
    holds no forward beside a backward."""
    if "bwd_fwd_time_ratio" not in ok:
        return []
    r = ok[ok["bwd_fwd_time_ratio"].notna() & ok["bwd_fwd_flops_ratio"].gt(0)]
    if r.empty:
        return []
    r = r.assign(_gap=r["bwd_fwd_time_ratio"] / r["bwd_fwd_flops_ratio"], _aside=is_set_aside(r))
    lines = ["backward/forward (time against FLOPs, over the layer's forward; the largest gap first):"]
    for _, row in r.sort_values("_gap", ascending=False).head(top).iterrows():
        text = (f"{row[R.FAMILY]}: {describe_row(row)}{_mark(row)} takes {row['bwd_fwd_time_ratio']:.1f}x its "
                f"forward's time for {row['bwd_fwd_flops_ratio']:.1f}x its FLOPs")
        lines += wrap(text, WIDTH, initial_indent="  ", subsequent_indent="    ")
    return lines


def label_line(ok: pd.DataFrame) -> str:
    """Rows per roofline label; memory-bound rows per level where ``roof_level`` is stored."""
    labels = ok["label"].dropna()
    if labels.empty:
        return "roofline: no label (no roof stored with these rows)"
    parts = []
    for label, n in labels.value_counts().items():
        levels = ok.loc[ok["label"] == label, ROOF_LEVEL].dropna() if ROOF_LEVEL in ok else pd.Series(dtype=object)
        levels = levels[levels.ne("compute")]           # only memory levels say more than the label
        parts.append(f"{n} {label}" + (f" ({_counts(levels)})" if not levels.empty else ""))
    return "roofline: " + ", ".join(parts)


def finding_lines(ok: pd.DataFrame, top: int = TOP_FINDINGS, found: Sequence[Finding] | None = None,
                  unconfirmed: Sequence[Finding] = ()) -> list[str]:
    """The ``top`` equal-FLOPs findings of the measured rows ``ok`` (``found``: those the report model
    already holds, else ``analysis.findings``: judged rows by their medians, then set-aside rows
    across processes), one sentence each, wrapped to ``WIDTH``; or why there is none; then the
    candidates interleaving did not confirm (``unconfirmed``)."""
    found = list(findings(ok, top=top) if found is None else found)[:top]
    return _found_lines(ok, found) + _unconfirmed_lines(unconfirmed)


def _unconfirmed_lines(unconfirmed: Sequence[Finding]) -> list[str]:
    if not unconfirmed:
        return []
    lines = ["unconfirmed (medians differ; interleaved in the same processes they do not every time):"]
    for f in unconfirmed[:TOP_FINDINGS]:
        lines += wrap(f.text, WIDTH, initial_indent="  - ", subsequent_indent="    ")
    return lines


def _found_lines(ok: pd.DataFrame, found: list[Finding]) -> list[str]:
    if not found:
        if not judged(ok).empty:
            return ["findings: no equal-FLOPs layers differ by 10 % or more"]
        processes = ok[R.PROCESSES] if R.PROCESSES in ok else pd.Series(dtype=float)
        if pd.to_numeric(processes, errors="coerce").ge(MIN_PROCESSES).any():
            return ["findings: none (every measured row set aside, and no equal-FLOPs layer took 1.1x or more "
                    "of another in every process)"]
        return [f"findings: none (every measured row set aside; rows measured in {MIN_PROCESSES} or more "
                "processes, --processes, may still carry one)"]
    interleaved = any(f.basis == INTERLEAVED for f in found)
    lines = ["findings (equal FLOPs, slowest vs fastest" + (", confirmed interleaved):" if interleaved else "):")]
    for i, f in enumerate(found, 1):
        lines += wrap(f.text, WIDTH, initial_indent=f"  {i}. ", subsequent_indent="     ")
    return lines


def spread_lines(ok: pd.DataFrame) -> list[str]:
    """When rows are set aside: how far their times spread against the thresholds that set them aside
    (``harness.timing.stability``), and what to try; wrapped to ``WIDTH``."""
    if not is_set_aside(ok).any():
        return []
    parts = []
    processes = pd.to_numeric(ok.get(R.PROCESSES, pd.Series(dtype=float)), errors="coerce")
    spread = pd.to_numeric(ok.get(R.PROCESS_SPREAD, pd.Series(dtype=float)), errors="coerce")[processes > 1]
    if spread.notna().any():
        parts.append(f"processes of a row spread {100 * spread.median():.1f} % (median; stable within "
                     f"{100 * SPLIT:.0f} %)")
    iqr = pd.to_numeric(ok.get(R.REL_IQR, pd.Series(dtype=float)), errors="coerce")
    if iqr.notna().any():
        parts.append(f"samples within a process {100 * iqr.median():.1f} % (median IQR / median; noisy above "
                     f"{100 * NOISY_REL_IQR:.0f} %)")
    busy = pd.to_numeric(ok.get(R.HOST_BUSY, pd.Series(dtype=float)), errors="coerce")
    if busy.notna().any():
        parts.append(f"other processes took up to {percent(busy.max())} of the CPUs (contended above "
                     f"{100 * BUSY_LIMIT:.0f} %)")
    text = ("spread: " + "; ".join(parts) + ". To set fewer rows aside: more processes (--processes 5), fewer "
            "threads than CPUs (--threads 1), or a quieter host (README, Shared hosts)")
    return wrap(text, WIDTH, subsequent_indent="  ")


def thread_lines(found: Sequence[Finding], top: int = TOP_FINDINGS) -> list[str]:
    """The layers slower with more threads than with fewer (none: no line)."""
    if not found:
        return []
    lines = ["threads (slower with more of them):"]
    for f in list(found)[:top]:
        lines += wrap(f.text, WIDTH, initial_indent="  - ", subsequent_indent="    ")
    return lines


@renderer(ReportModel, "summary", text=True)
def summary_text(model: ReportModel) -> str:
    """The end-of-run summary of a report model: its derived table and the findings it holds (nothing
    is derived or found again). The report's path is the caller's to add."""
    d = model.table
    ok = d[d[R.STATUS].eq("ok")]
    first = d.iloc[0]
    head = (f"{first.get(R.SUITE)} on {first.get(R.DEVICE)} ({first.get(R.MACHINE_NAME) or first.get(R.DEVICE_NAME)}): "
            f"{len(d)} rows, {_counts(d[R.STATUS])}")
    lines = [head, *[w for r in model.runs if r.threads_choice and "other processes" in r.threads_choice
                     for w in wrap(f"at the start: {r.threads_choice}", WIDTH, subsequent_indent="  ")]]
    if not ok.empty:
        lines += [*wrap(counts_text(ok), WIDTH, subsequent_indent="  "), *spread_lines(ok),
                  *trust_lines(ok), *pass_utilization_lines(ok), label_line(ok), *ratio_lines(ok),
                  *finding_lines(ok, found=model.findings, unconfirmed=model.unconfirmed)]
        lines += thread_lines(model.threads)
    return "\n".join(fit(lines))


@renderer(ReportModel, "predictions", text=True)
def predictions_text(model: ReportModel) -> str:
    """Predicted against measured per family and the ``WORST_REPORT`` largest residuals (``layerbench residuals``)."""
    view = view_of(model)
    return "\n".join(fit(([f"models: {'; '.join(view.models)}"] if view.models else []) + lines(view, WORST_REPORT)))


@renderer(ReportModel, "predictions-summary", text=True)
def predictions_summary(model: ReportModel) -> str:
    """The end of a run's predicted-vs-measured lines (the ``WORST_SUMMARY`` largest residuals)."""
    return "\n".join(fit(lines(view_of(model), WORST_SUMMARY)))


@renderer(ReportModel, "predictions-json", text=True)
def predictions_json(model: ReportModel) -> str:
    return json.dumps(as_json(view_of(model), model.table), indent=1, allow_nan=False) + "\n"


def summarize(frame: pd.DataFrame, report: str | Path | None = None) -> str:
    """The summary of stored rows (one run's, as ``harness.load_runs`` returns them); ``report``:
    the HTML report's path (None: not written)."""
    if frame.empty:
        return "no rows stored"
    return _with_report(render_text(build_model(Loaded(frame), with_plots=False, top=TOP_FINDINGS), "summary"),
                        report)


def _with_report(text: str, report: str | Path | None) -> str:
    return f"{text}\nreport: {report}" if report is not None else f"{text}\nreport: not written"


def summary_of(model: ReportModel, report: str | Path | None) -> str:
    """What the end of a run prints: the summary, predicted against measured, the report's path."""
    return _with_report(render_text(model, "summary") + "\n" + render_text(model, "predictions-summary"), report)


def summarize_run(run_dir: str | Path, report: str | Path | None = None) -> str:
    """The end-of-run text of a stored run (its interleaved confirmations included), as
    ``layerbench run`` printed it once measured: the README's first screen is one."""
    return summary_of(build_model(store.load_runs([run_dir]), with_plots=False), report)


def finish_run(run_dir: Path, report_dir: Path | None) -> pd.DataFrame | None:
    """Load ``run_dir`` once, build its report model once (plots only when the report is written),
    write the HTML report to ``report_dir`` (None: skip; ``layerbench report`` writes Markdown and
    JSON too) and print the summary from the same model;
    returns the stored rows (None when they could not be read). Never raises: a failure becomes one
    line on stderr."""
    try:
        loaded = store.load_runs([run_dir])
    except Exception as e:
        print(f"layerbench run: no summary: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    if loaded.frame.empty:
        print("no rows stored")
        return loaded.frame
    try:
        model = build_model(loaded, with_plots=report_dir is not None)
    except Exception as e:              # nor does a model that cannot be built fail the run
        print(f"layerbench run: no summary: {type(e).__name__}: {e}", file=sys.stderr)
        return loaded.frame
    html = None
    if report_dir is not None:
        try:
            render(model, "html", report_dir)          # self-contained; `layerbench report` writes the others
            html = Path(report_dir) / "report.html"
        except Exception as e:          # the report never fails the run
            print(f"layerbench run: report not written: {type(e).__name__}: {e}", file=sys.stderr)
    try:
        print(summary_of(model, html))
    except Exception as e:              # nor does the summary
        print(f"layerbench run: no summary: {type(e).__name__}: {e}", file=sys.stderr)
    return loaded.frame
