"""The report's file renderers (``report --format``, ``export --format``), registered in
``harness.report.registry``: Markdown, HTML and JSON render the whole ``ReportModel``; CSV and
Parquet its derived table. Each returns the files it wrote."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from harness import record as R
from harness.analysis.confirmed import INTERLEAVED
from harness.analysis.findings import ACROSS, COINCIDENCE, MEDIANS, Finding, describe_row
from harness.analysis.metrics import is_cache_level
from harness.analysis.verdicts import set_aside, set_aside_text
from harness.report.format import (
    HTML_STYLE,
    cell,
    glossary,
    html_table,
    markdown_table,
    md_escape,
    peaks_view,
    rows_view,
    unstable_view,
)
from harness.report.model import ReportModel
from harness.report.predictions import as_json, view_of
from harness.report.registry import renderer

#: Rows listed in the report's tables (every row is in rows.csv beside it).
MAX_LISTED_ROWS = 1000


def listed(model: ReportModel) -> tuple[pd.DataFrame, str]:
    """The rows the report lists, worst utilization first when there are too many, and a note."""
    t = model.table
    if len(t) <= MAX_LISTED_ROWS:
        return t, ""
    key = "util_ceiling" if t["util_ceiling"].notna().any() else "util_peak"
    return (t.sort_values(key, na_position="last").head(MAX_LISTED_ROWS),
            f"The {MAX_LISTED_ROWS} rows furthest from their peak, of {len(t)}; every row is in rows.csv.")


def _json_default(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = json.loads(frame.to_json(orient="records", double_precision=15, default_handler=str))
    return out


@renderer(ReportModel, "csv")
def to_csv(model: ReportModel, path: Path) -> list[Path]:
    model.table.drop(columns=[R.SAMPLES], errors="ignore").to_csv(path, index=False)
    return [path]


@renderer(ReportModel, "parquet")
def to_parquet(model: ReportModel, path: Path) -> list[Path]:
    t = model.table.copy()
    for c in t.columns:
        if t[c].dtype == object:
            t[c] = t[c].map(lambda v: v if v is None or isinstance(v, (str, list)) else str(v))
    t.to_parquet(path, index=False)
    return [path]


def _rows_csv(model: ReportModel, out: Path) -> list[Path]:
    """``rows.csv`` (every row and column) in ``out``, written once per model however many renderers link it."""
    path = out / "rows.csv"
    if str(path) not in model.csv_written:
        to_csv(model, path)
        model.csv_written.add(str(path))
    return [path]


def _summary(model: ReportModel) -> dict[str, Any]:
    return {"headline": model.headline, "schema_version": R.SCHEMA_VERSION,
            "runs": [dataclasses.asdict(r) for r in model.runs],
            "machines": _records(model.machines), "peaks": _records(model.peaks),
            "findings": [{"text": f.text, "spread": f.spread, "basis": f.basis, "kind": f.kind,
                          "rows": _records(f.rows)} for f in model.findings],
            "unconfirmed": [{"text": f.text, "spread": f.spread, "rows": _records(f.rows)} for f in model.unconfirmed],
            "thread_findings": [{"text": f.text, "slowdown": f.spread} for f in model.threads],
            "statuses": model.statuses, "labels": model.labels, "stability": model.stability,
            "notes": list(model.notes),
            "plots": [f"{p.name}.png" for p in model.plots],
            "predictions": as_json(view_of(model), model.table)}


@renderer(ReportModel, "json")
def to_json(model: ReportModel, path: Path) -> list[Path]:
    """``report.json``: the summary and every row (derived columns included, samples left out)."""
    path = path / "report.json" if path.suffix != ".json" else path
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = _summary(model) | {"rows": _records(model.table.drop(columns=[R.SAMPLES], errors="ignore"))}
    path.write_text(json.dumps(doc, indent=1, default=_json_default, allow_nan=False) + "\n")
    return [path]


def _write_plots(model: ReportModel, out: Path) -> list[Path]:
    paths = []
    for p in model.plots:
        for suffix, data in ((".png", p.png), (".svg", p.svg)):
            path = out / f"{p.name}{suffix}"
            path.write_bytes(data)
            paths.append(path)
    return paths


def _machines_view(model: ReportModel) -> pd.DataFrame:
    return model.machines.rename(columns={R.MACHINE_ID: "machine_id", R.MACHINE_NAME: "machine"})


def _runs_view(model: ReportModel) -> pd.DataFrame:
    cols = ["run_id", "suite", "machine_name", "device", "rows", "threads", "torch", "git_commit", "started",
            "finished", "schema_version"]
    runs = pd.DataFrame([dataclasses.asdict(r) for r in model.runs])[cols] if model.runs else \
        pd.DataFrame(columns=cols)
    runs["git_commit"] = [str(c)[:12] + ("-dirty" if str(c).endswith("-dirty") else "") if isinstance(c, str) else c
                          for c in runs["git_commit"]]
    return runs.rename(columns={"machine_name": "machine", "schema_version": "schema"})


def _aside_note(model: ReportModel) -> str:
    """The set-aside sentence (``verdicts.set_aside_text``), and how many are listed."""
    n = len(model.unstable)
    shown = f"; the first {MAX_LISTED_ROWS} are listed" if n > MAX_LISTED_ROWS else ""
    return f"{set_aside_text(set_aside(model.table))}{shown}."


def _outlier_lines(model: ReportModel) -> list[str]:
    """One sentence per labelled outlier: the row, its time and its share of the roofline."""
    out = []
    for kind, idx in model.outliers:
        r = model.table.loc[idx]
        level = r.get("roof_level")
        hier = pd.notna(r.get("roof_level_fraction"))
        frac = cell("roof_level_fraction", r["roof_level_fraction"]) if hier else \
            cell("roofline_fraction", r["roofline_fraction"])
        bound = (f"bound by {level}" + (": its working set fits that cache" if is_cache_level(level, r) else "")
                 if hier and level else r.get("label") or "no label")
        out.append(f"{kind.capitalize()} ({r[R.DTYPE]}): {r[R.FAMILY]}: {describe_row(r)}, "
                   f"{cell(R.TIME_MEDIAN, r[R.TIME_MEDIAN])}: its roofline's time is {frac} of that ({bound}).")
    return out


def _predictions_view(model: ReportModel) -> tuple[pd.DataFrame | None, list[str], str]:
    """The predicted-vs-measured table per family, the largest residuals (one sentence each) and what
    the predictions rest on."""
    view = view_of(model)
    if view.empty:
        return None, [], "No measured row has a prediction (no roof stored)."
    t = view.families.copy()
    for c in ("median_error", "within_10", "within_20"):
        t[c] = [cell("util_x", v) for v in t[c]]
    t["measured / predicted"] = [f"{a:.2f}x .. {b:.2f}x" for a, b in zip(t.pop("residual_min"), t.pop("residual_max"))]
    t = t.rename(columns={"median_error": "median |error|", "within_10": "within 10 %", "within_20": "within 20 %",
                          "set_aside": "set aside"})
    on, rest = view.basis.get("model", 0), sum(n for k, n in view.basis.items() if k != "model")
    other = f", the hierarchical roofline's on the other {rest}" if rest else ""
    basis = (f"predicted_s is the efficiency model's on {on} row(s) ({'; '.join(view.models)}){other}." if on
             else "predicted_s is the hierarchical roofline's (no efficiency model "
             "applied: `layerbench fit` fits one, `layerbench residuals RUNS --report DIR` applies it).")
    return t, [text for _, text in view.worst], basis


def _cross_view(model: ReportModel) -> pd.DataFrame | None:
    if model.cross_device is None or model.cross_device.empty:
        return None
    x = model.cross_device.reset_index()
    for c in x.columns[len(x.columns) - len(model.cross_device.columns):]:
        x[c] = [cell("util_x", v) for v in x[c]]
    return x


def _spread(f: Finding) -> str:
    """``spread 1.59x`` (slowest over fastest median), or for a finding across processes
    ``at least 2.23x in every process`` (its bound: every process of one over every process of the other)."""
    text = {MEDIANS: f"spread {f.spread:.2f}x",
            INTERLEAVED: f"{f.spread:.2f}x timed interleaved (median over processes)"}.get(
        f.basis, f"at least {f.spread:.2f}x in every process")
    return text + (" (a coincidence: layers of different kinds)" if f.kind == COINCIDENCE else "")


def _finding_view(model: ReportModel, f: Finding, where: bool | None = None) -> pd.DataFrame:
    """A finding's rows; a finding across processes shows each process's median too."""
    return rows_view(model.table.loc[f.rows.index], where=where, per_process=f.basis in (ACROSS, INTERLEAVED))


@renderer(ReportModel, "markdown")
def to_markdown(model: ReportModel, out: Path) -> list[Path]:
    """``report.md`` with the plots as PNG and SVG beside it and ``rows.csv`` (every row)."""
    out.mkdir(parents=True, exist_ok=True)
    rows, note = listed(model)
    md = ["# layerbench report", "", md_escape(model.headline), ""]
    md += [f"> {md_escape(n)}" for n in model.notes] + ([""] if model.notes else [])
    md += ["## Findings: equal FLOPs, different speeds", ""]
    md += [f"{i}. {md_escape(f.text)}" for i, f in enumerate(model.findings, 1)] or \
          ["No equal-FLOPs group differs by more than 10 %."]
    if model.unconfirmed:
        md += ["", "## Unconfirmed: medians differ, interleaved runs do not every time", ""]
        md += [f"- {md_escape(f.text)}" for f in model.unconfirmed]
    if model.threads:
        md += ["", "## Threads: slower with more of them", ""] + [f"- {md_escape(f.text)}" for f in model.threads]
    md += ["", "## Outliers", ""] + ([f"- {md_escape(t)}" for t in _outlier_lines(model)] or ["(no roofline)"])
    pred, worst, basis = _predictions_view(model)
    md += ["", "## Predicted against measured", "", md_escape(basis), ""]
    if pred is not None:
        md += [markdown_table(pred), "", "Largest residuals (* not stable):", ""]
        md += [f"{i}. {md_escape(t)}" for i, t in enumerate(worst, 1)]
    md += ["", "## Machines", "", markdown_table(_machines_view(model)), "", "## Runs", "",
           markdown_table(_runs_view(model)), "", "## Peaks and measured ceilings (stored with the runs)", "",
           markdown_table(peaks_view(model.peaks, model.table)), ""]
    md += ["## Plots", ""] + [f"![{md_escape(p.title)}]({p.name}.png)" for p in model.plots] + [""]
    for i, f in enumerate(model.findings, 1):
        md += [f"### Finding {i}: {_spread(f)}", "", markdown_table(_finding_view(model, f)), ""]
    if len(model.unstable):
        md += ["## Set aside: rows not stable (drawn hollow)", "", _aside_note(model), "",
               markdown_table(unstable_view(model.unstable.head(MAX_LISTED_ROWS))), ""]
    cross = _cross_view(model)
    if cross is not None:
        md += ["## Across devices (utilization, an explicit cross-device view)", "", markdown_table(cross), ""]
    md += ["## Rows", "", md_escape(note), "", "Every row and column: [rows.csv](rows.csv).", "",
           markdown_table(rows_view(rows, where=_several_devices(model))), "", "## Column glossary", "",
           markdown_table(pd.DataFrame(glossary(), columns=["column", "unit", "meaning"])), ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return [path, *_write_plots(model, out), *_rows_csv(model, out)]


def _img(p: Any) -> str:
    data = base64.b64encode(p.png).decode()
    return (f"<figure><img alt='{html.escape(p.title)}' title='{html.escape(p.title)}' "
            f"src='data:image/png;base64,{data}'></figure>")


def _several_devices(model: ReportModel) -> bool:
    return len(model.machines) > 1


def _predictions_html(model: ReportModel) -> list[str]:
    pred, worst, basis = _predictions_view(model)
    out = ["<h2>Predicted against measured</h2>", f"<p>{html.escape(basis)}</p>"]
    if pred is not None:
        out += [html_table(pred), "<p>Largest residuals (* not stable):</p>",
                "<ol>" + "".join(f"<li>{html.escape(t)}</li>" for t in worst) + "</ol>"]
    return out


@renderer(ReportModel, "html")
def to_html(model: ReportModel, out: Path) -> list[Path]:
    """``report.html``: self-contained (plots embedded), opens without a server or network; every
    text escaped; row tables of the chosen columns (``format.SHOWN``), the full table as ``rows.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    rows, note = listed(model)
    where = _several_devices(model)
    found = "".join(f"<li>{html.escape(f.text)}</li>" for f in model.findings)
    lines = "".join(f"<li>{html.escape(t)}</li>" for t in _outlier_lines(model))
    body = ["<h1>layerbench report</h1>", f"<p>{html.escape(model.headline)} Every row and column: "
            "<a class='download' href='rows.csv' download>rows.csv</a>.</p>",
            *(f"<p class='note'>{html.escape(n)}</p>" for n in model.notes),
            "<h2>Findings: equal FLOPs, different speeds</h2>",
            f"<ol>{found}</ol>" if found else "<p>No equal-FLOPs group differs by more than 10 %.</p>",
            *(["<h2>Unconfirmed: medians differ, interleaved runs do not every time</h2>",
               "<ul>" + "".join(f"<li>{html.escape(f.text)}</li>" for f in model.unconfirmed) + "</ul>"]
              if model.unconfirmed else []),
            *(["<h2>Threads: slower with more of them</h2>",
               "<ul>" + "".join(f"<li>{html.escape(f.text)}</li>" for f in model.threads) + "</ul>"]
              if model.threads else []),
            "<h2>Outliers (labelled in the plots)</h2>", f"<ul>{lines}</ul>" if lines else "<p>(no roofline)</p>",
            *_predictions_html(model),
            "<h2>Plots</h2>", "<div class='plots'>" + "".join(_img(p) for p in model.plots) + "</div>"]
    for i, f in enumerate(model.findings, 1):
        body += [f"<h3>Finding {i}: {_spread(f)}</h3>",
                 html_table(_finding_view(model, f, where), docs=True)]
    cross = _cross_view(model)
    if cross is not None:
        body += ["<h2>Across devices (utilization, an explicit cross-device view)</h2>", html_table(cross)]
    body += ["<h2>Rows</h2>", f"<p>{html.escape(note)}</p>" if note else "",
             html_table(rows_view(rows, where=where), docs=True, ident="rows"),
             "<p>Every row and column: <a class='download' href='rows.csv' download>rows.csv</a> (beside this "
             "file). Hover a header for its meaning; the glossary below explains every column.</p>",
             *(["<h2>Set aside: rows not stable (drawn hollow in the plots)</h2>", f"<p>{_aside_note(model)}</p>",
                html_table(unstable_view(model.unstable.head(MAX_LISTED_ROWS)))] if len(model.unstable) else []),
             "<h2>Machines</h2>", html_table(_machines_view(model)), "<h2>Runs</h2>", html_table(_runs_view(model)),
             "<h2>Peaks and measured ceilings (stored with the runs)</h2>",
             html_table(peaks_view(model.peaks, model.table)),
             "<details><summary>Column glossary</summary>",
             html_table(pd.DataFrame(glossary(), columns=["column", "unit", "meaning"])), "</details>"]
    path = out / "report.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>layerbench report</title>"
                    f"<style>{HTML_STYLE}</style></head><body>{''.join(body)}</body></html>")
    return [path, *_rows_csv(model, out)]
