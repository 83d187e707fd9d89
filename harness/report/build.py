"""``layerbench report``: a self-contained HTML report (plots embedded) and a Markdown twin, from
stored runs: the machine, the peaks and ceilings, the equal-FLOPs findings in sentences, plots
and tables. Reads tables only."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.analysis import cross_device, derive, equal_flops_groups, findings, peak_table
from harness.analysis.findings import describe_row
from harness.analysis.metrics import peak_dtype
from harness.report.plots import heatmap, roofline, time_vs_flops
from harness.store import load_results

SUMMARY_COLUMNS = ["family", "layer", "params", "input_shapes", "memory_format", "dtype", "device_name", "threads",
                   "time_median_s", "rel_iqr", "achieved_flops_s", "achieved_bytes_s", "util_datasheet",
                   "util_ceiling", "roofline_bound", "roofline_fraction", "label", "kernels", "status", "error"]
MAX_HEATMAPS = 6
#: Rows listed in the report's "All rows" table (the whole table stays in the Parquet files).
MAX_LISTED_ROWS = 1000


@dataclass(frozen=True, slots=True)
class Report:
    html: Path
    markdown: Path
    plots: tuple[Path, ...]
    findings: tuple[str, ...]


def _run_metadata(paths: Iterable[str | Path]) -> list[dict]:
    out = []
    for p in paths:
        p = Path(p)
        for meta in sorted(p.glob("run-*.json") if p.is_dir() else []):
            try:
                out.append(json.loads(meta.read_text()))
            except (OSError, ValueError):
                pass
    return out


def _fmt(frame: pd.DataFrame) -> pd.DataFrame:
    f = frame.copy()
    for c in f.columns:
        if c.startswith("util_") or c in ("roofline_fraction", "rel_iqr"):
            f[c] = f[c].map(lambda v: "" if pd.isna(v) else f"{v:.1%}")
        elif c.endswith("_flops_s"):
            f[c] = f[c].map(lambda v: "" if pd.isna(v) else f"{v / 1e9:.3g} G")
        elif c.endswith("_bytes_s"):
            f[c] = f[c].map(lambda v: "" if pd.isna(v) else f"{v / 1e9:.3g} GB/s")
        elif c == "time_median_s":
            f[c] = f[c].map(lambda v: "" if pd.isna(v) else f"{v * 1e6:.4g} us")
    return f


def _heatmap_axes(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(family, x, y) for families whose ok rows vary along exactly two ``ax_`` columns."""
    out = []
    for family, g in frame[frame["status"] == "ok"].groupby("family"):
        varying = [c for c in g.columns if c.startswith("ax_") and g[c].nunique(dropna=True) > 1]
        # two axes swept independently (not one derived from the other: k and p = k // 2)
        if len(varying) == 2 and len(g[varying].drop_duplicates()) > max(g[c].nunique() for c in varying):
            out.append((str(family), varying[1], varying[0]))
    return out[:MAX_HEATMAPS]


def build_report(paths: Iterable[str | Path], out_dir: str | Path, ceilings_dir: str | None = None,
                 top: int = 10) -> Report:
    """Write ``report.html``, ``report.md`` and the plots (PNG and SVG) under ``out_dir``."""
    paths = list(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = load_results(paths)
    if raw.empty:
        raise ValueError(f"no result rows under {paths}")
    peaks = peak_table(raw.assign(peak_dtype=peak_dtype(raw)), ceilings_dir)
    table = derive(raw, peaks=peaks)
    groups = equal_flops_groups(table)
    found = findings(table, top=top, grouped=groups)
    plots: list[Path] = list(time_vs_flops(table, out / "time_vs_flops"))
    roof_pngs = []
    for (dev, dt), g in table[table["status"] == "ok"].groupby(["device_name", "dtype"]):
        slug = f"roofline_{dev}_{dt}".replace(" ", "_").replace("/", "_")
        ps = roofline(g, out / slug, groups)
        plots += ps
        roof_pngs.append(ps[0])
    heat_pngs = []
    for family, x, y in _heatmap_axes(table):
        sub = table[table["family"] == family]
        value = "util_ceiling" if sub["util_ceiling"].notna().any() else "util_datasheet"
        ps = heatmap(sub, x, y, out / f"heatmap_{family}".replace(" ", "_"), value=value,
                     title=f"{family}: {value} over {x[3:]} x {y[3:]}")
        plots += ps
        heat_pngs.append(ps[0])
    metas = _run_metadata(paths)
    status = table["status"].value_counts().to_dict()
    labels = table["label"].value_counts().to_dict()
    listed = table[[c for c in SUMMARY_COLUMNS if c in table]]
    note = ""
    if len(listed) > MAX_LISTED_ROWS:
        listed = listed.sort_values("util_ceiling" if listed["util_ceiling"].notna().any() else "util_datasheet")
        listed = listed.head(MAX_LISTED_ROWS)
        note = (f"The {MAX_LISTED_ROWS} rows furthest from their peak, of {len(table)}; every row: "
                "`layerbench export`.")
    summary = _fmt(listed)
    xdev = cross_device(table) if table["device_name"].nunique() > 1 else None

    md = ["# layerbench report", ""]
    runs = ", ".join(sorted(table["run_id"].unique()))
    md.append(f"{len(table)} rows from {table['run_id'].nunique()} run(s) ({runs}); "
              + ", ".join(f"{v} {k}" for k, v in sorted(status.items())) + ". Labels: "
              + ", ".join(f"{v} {k}" for k, v in sorted(labels.items())) + ".")
    md += ["", "## Findings: equal FLOPs, different speeds", ""]
    md += [f"{i}. {f.text}" for i, f in enumerate(found, 1)] or ["No equal-FLOPs group differs by more than 10 %."]
    md += ["", "## Machine", ""]
    for m in metas:
        md.append(f"- run `{m.get('run_id')}`: suite {m.get('suite')} on {m.get('device')} ({m.get('device_name')}), "
                  f"host {m.get('host')}, CPU {m.get('cpu')}, {m.get('cpu_threads')} threads, torch "
                  f"{m.get('torch_version')}, CUDA {m.get('cuda_version')}, commit {m.get('git_commit')}, "
                  f"{m.get('started')} to {m.get('finished')}, load {m.get('load_avg')}")
    md += ["", "## Peaks and measured ceilings", "", _fmt(peaks).to_markdown(index=False), ""]
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots if p.suffix == ".png"] + [""]
    for i, f in enumerate(found, 1):
        md += [f"### Finding {i}: group of {len(f.rows)} at spread {f.spread:.2f}x", "",
               _fmt(f.rows).to_markdown(index=False), ""]
    if xdev is not None:
        md += ["## Across devices (utilization)", "", _fmt(xdev.reset_index()).to_markdown(index=False), ""]
    md += ["## All rows", "", note, "", summary.to_markdown(index=False), ""]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md))

    def img(p: Path) -> str:
        data = base64.b64encode(p.read_bytes()).decode()
        return f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,{data}">'

    def tbl(f: pd.DataFrame) -> str:
        return f.to_html(index=False, escape=True, border=0, na_rep="")

    body = [f"<h1>layerbench report</h1><p>{html.escape(md[2])}</p>",
            "<h2>Findings: equal FLOPs, different speeds</h2>",
            "<ol>" + "".join(f"<li>{html.escape(f.text)}</li>" for f in found) + "</ol>" if found else
            "<p>No equal-FLOPs group differs by more than 10 %.</p>", "<h2>Machine</h2><ul>"
            + "".join(f"<li>{html.escape(line[2:])}</li>" for line in md if line.startswith("- run")) + "</ul>",
            "<h2>Peaks and measured ceilings</h2>", tbl(_fmt(peaks)), "<h2>Plots</h2>",
            "".join(img(p) for p in [out / "time_vs_flops.png", *roof_pngs, *heat_pngs])]
    for i, f in enumerate(found, 1):
        body += [f"<h3>Finding {i}: {html.escape(describe_row(f.rows.iloc[-1]))} vs fastest, "
                 f"{f.spread:.2f}x</h3>", tbl(_fmt(f.rows))]
    if xdev is not None:
        body += ["<h2>Across devices (utilization)</h2>", tbl(_fmt(xdev.reset_index()))]
    body += ["<h2>All rows</h2>", f"<p>{html.escape(note)}</p>" if note else "", tbl(summary)]
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "font-size:12px}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}"
             "img{max-width:48%;margin:4px}li{margin:6px 0}")
    html_path = out / "report.html"
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>layerbench report</title>"
                         f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    return Report(html=html_path, markdown=md_path, plots=tuple(plots), findings=tuple(f.text for f in found))
