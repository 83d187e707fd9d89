"""Cells for people: times in automatic units (ns/us/ms/s), rates with SI prefixes, fractions as
percentages, all at three significant digits (``harness.units``); cases as short ``conv2d k=3
g=64 on 1x64x28x28`` text. Used by every renderer; the stored table is never changed."""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd

from harness import record as R
from harness.analysis.findings import describe_row, device_label, pass_text, process_medians
from harness.analysis.metrics import DERIVED
from harness.analysis.verdicts import held, labels, measured
from harness.predict.columns import PREDICTED
from harness.units import percent3, seconds, si


@dataclass(frozen=True, slots=True)
class Shown:
    """A column of the report's row tables: its header, its meaning, and whether it holds numbers."""

    header: str
    doc: str
    numeric: bool = True


#: The columns the report's row tables show, in order (every column is in ``rows.csv`` beside the report).
SHOWN = {
    "case": Shown("case", "family: layer, its non-default parameters and input shape(s)", False),
    "pass": Shown("pass", "the pass timed and, for a backward, the gradients it computed (`backward [input,weight]`); "
                  "shown when the rows hold a pass other than the forward", False),
    "dtype": Shown("dtype", "element type", False),
    "where": Shown("where", "device (GPU name) or machine (CPU); shown when the rows span several", False),
    "time": Shown("time", "median time per call (time_median_s)"),
    "rate": Shown("achieved", "achieved FLOP/s: flops / time (achieved_flops_s)"),
    "vs_ceiling": Shown("vs ceiling", "achieved FLOP/s as a share of the measured GEMM ceiling (util_ceiling)"),
    "vs_peak": Shown("vs peak", "achieved FLOP/s as a share of the theoretical peak (util_peak); the header names "
                     "its source: datasheet or formula"),
    "vs_forward": Shown("vs forward", "a backward row's time over its layer's forward time, beside the same ratio "
                        "of their FLOPs (bwd_fwd_time_ratio, bwd_fwd_flops_ratio); shown with such rows", False),
    "vs_roof": Shown("vs roof", "the hierarchical roofline time (the largest of compute, the memory level its "
                     "working set fits in, and launch) as a share of the measured time (roof_level_fraction): how "
                     "close the row runs to the roof that binds it, memory-bound rows included"),
    "bound": Shown("bound", "the roofline label (label) and, where stored, the memory level bounding the row "
                   "(roof_level); for rows not measured, their status", False),
    "stability": Shown("stability", "`stable`; `no verdict` (none recorded: the row is still used); or why "
                       "the row is set aside: noisy, bimodal, contended, host-slowed (stability)", False),
    "per_process": Shown("per process", "each worker process's median time, in process order (process_medians_s); "
                         "shown under a finding across processes (every process of the slow row took at least "
                         "the stated multiple of every process of the fast one)", False),
}


def cell(column: str, v: object) -> str:
    """One stored or derived value as a person reads it ("" when null)."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if column.endswith("_flops_s"):
        return si(float(v), "FLOP/s")
    if column.endswith("_bytes_s"):
        return si(float(v), "B/s")
    if column.endswith("_s"):
        return seconds(float(v))
    fractions = ("roofline_fraction", "roof_level_fraction", R.REL_IQR, R.REL_CI)
    if column.startswith(("util_", "bw_util_")) or column in fractions:
        return percent3(float(v))
    if column == R.INTENSITY:
        return f"{float(v):.3g}"
    if column in (R.FLOPS, R.MACS, R.BYTES_READ, R.BYTES_WRITTEN, R.PARAMS):
        return si(float(v))
    return str(v)


def peak_header(table: pd.DataFrame) -> str:
    """``vs formula peak`` / ``vs datasheet peak`` when every row's peak has that source, else ``vs peak``."""
    sources = set(table[R.PEAK_SOURCE].dropna().astype(str)) & {"datasheet", "formula"} if len(table) else set()
    return f"vs {sources.pop()} peak" if len(sources) == 1 else "vs peak"


def _bound(r: pd.Series) -> str:
    if r.get(R.STATUS) != "ok":
        return str(r.get(R.STATUS))
    label = r.get("label")
    level = r.get("roof_level")
    text = str(label) if isinstance(label, str) else ""
    said = isinstance(level, str) and level and level.lower() in text.lower()     # "compute-bound (compute)"
    return f"{text} ({level})" if isinstance(level, str) and level and text and not said else text


def _peak_cell(r: pd.Series, unique: bool) -> str:
    text = cell("util_peak", r.get("util_peak"))
    source = r.get(R.PEAK_SOURCE)
    return text if unique or not text or source not in ("datasheet", "formula") else f"{text} ({source})"


def rows_view(table: pd.DataFrame, where: bool | None = None, per_process: bool = False) -> pd.DataFrame:
    """The chosen columns of ``table`` (``SHOWN``) formatted for reading, under their headers.
    ``where`` is shown when the rows span several devices (or when asked); ``per_process``: each
    process's median (``1.02 ms / 1.9 ms / 1.05 ms``), for a finding across processes."""
    rows = list(table.iterrows())
    show_where = where if where is not None else len({device_label(r) for _, r in rows}) > 1
    passes = R.PASS in table and bool(table[R.PASS].dropna().ne(R.PASSES[0]).any())
    ratios = "bwd_fwd_time_ratio" in table and bool(table["bwd_fwd_time_ratio"].notna().any())
    head = peak_header(table)
    data = {
        "case": [f"{r[R.FAMILY]}: {describe_row(r, with_pass=not passes)}" for _, r in rows],
        "pass": [pass_text(r) or R.PASSES[0] for _, r in rows] if passes else None,
        "dtype": [str(r[R.DTYPE]) for _, r in rows],
        "where": [device_label(r) for _, r in rows] if show_where else None,
        "time": [cell(R.TIME_MEDIAN, r.get(R.TIME_MEDIAN)) for _, r in rows],
        "achieved": [cell("achieved_flops_s", r.get("achieved_flops_s")) for _, r in rows],
        "vs ceiling": [cell("util_ceiling", r.get("util_ceiling")) for _, r in rows],
        head: [_peak_cell(r, head != "vs peak") for _, r in rows],
        "vs forward": [vs_forward(r) for _, r in rows] if ratios else None,
        "vs roof": [cell("roof_level_fraction", r.get("roof_level_fraction")) for _, r in rows],
        "bound": [_bound(r) for _, r in rows],
        "stability": _stability_cells(table),
        "per process": [_per_process(r) for _, r in rows] if per_process else None,
    }
    return pd.DataFrame({k: v for k, v in data.items() if v is not None})


def vs_forward(r: pd.Series) -> str:
    """``6.1x time / 2.0x FLOPs``: a backward row against its layer's forward (``""`` without one)."""
    t, f = r.get("bwd_fwd_time_ratio"), r.get("bwd_fwd_flops_ratio")
    if t is None or pd.isna(t):
        return ""
    return f"{float(t):.2f}x time / {float(f):.2f}x FLOPs" if f is not None and pd.notna(f) else f"{float(t):.2f}x time"


def _per_process(r: pd.Series) -> str:
    """``1.02 ms / 1.9 ms / 1.05 ms``: the row's process medians (``""`` when not a valid list)."""
    a = process_medians(r.get(R.PROCESS_MEDIANS))
    return " / ".join(seconds(float(x)) for x in a) if a is not None else ""


def _stability_cells(rows: pd.DataFrame) -> list[str]:
    """The stability label of each measured row (``verdicts.labels``); ``""`` for rows not measured."""
    return labels(rows).where(measured(rows), "").tolist() if len(rows) else []


def header_doc(header: str) -> str:
    """The meaning of a row-table header (``""`` for a header not in ``SHOWN``)."""
    for s in SHOWN.values():
        if s.header == header or (s.header == "vs peak" and header.startswith("vs ") and header.endswith(" peak")):
            return s.doc
    return ""


def glossary() -> list[tuple[str, str, str]]:
    """(column, unit, meaning): the shown columns, then every stored (``harness.record``) and derived
    (``harness.analysis.metrics.DERIVED``) column of ``rows.csv``."""
    shown = [(f"{s.header} (shown)", "", s.doc) for s in SHOWN.values()]
    return shown + [(c.name, c.unit, c.doc) for c in R.COLUMNS] + [(d.name, d.unit, d.doc) for d in DERIVED] \
        + [(d.name, d.unit, d.doc) for d in PREDICTED]


#: The memory roofs, innermost first: (column, label); main memory's label is the row's ``main_memory``.
LEVELS = ((R.CEILING_L1_BYTES, "L1"), (R.CEILING_L2_BYTES, "L2"), (R.CEILING_L3_BYTES, "L3"), (R.CEILING_BYTES, None))
#: Main memory's label where a row does not name it (a pytest-benchmark file).
MAIN_MEMORY = "main memory"


def level_label(label: str | None, row: pd.Series | None) -> str:
    """A roof's label: the cache level's name, or for main memory the row's ``main_memory``."""
    if label is not None:
        return label
    name = row.get(R.MAIN_MEMORY) if row is not None else None
    return str(name) if isinstance(name, str) and name else MAIN_MEMORY


def memory_roofs(row: pd.Series) -> str:
    """The measured memory roofs stored with a row, innermost first: ``L1 1.2 TB/s, L2 410 GB/s, DRAM 8.95 GB/s``."""
    parts = [f"{level_label(label, row)} {si(float(row[c]), 'B/s')}" for c, label in LEVELS
             if c in row and pd.notna(row[c])]
    return ", ".join(parts)


def peaks_view(peaks: pd.DataFrame, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The stored peaks table for reading: each value in its unit, the source named, and the measured
    memory roofs per level when ``table`` (the rows) is given."""
    shown = [R.MACHINE_NAME, R.DEVICE, R.PEAK_DTYPE, R.THREADS, R.PEAK_FLOPS, R.PEAK_BYTES, R.PEAK_SOURCE,
             R.CEILING_FLOPS, R.CEILING_SOURCE, "ceiling_measured_at"]
    out = peaks[[c for c in shown if c in peaks]].copy()
    for c in out.columns:
        out[c] = [cell(c, v) for v in out[c]]
    if table is not None and len(peaks):
        keys = [R.MACHINE_ID, R.DEVICE]
        roofs = table.drop_duplicates(keys).set_index(keys).apply(memory_roofs, axis=1)
        out.insert(out.columns.get_loc(R.CEILING_SOURCE), "measured memory roofs",
                   [roofs.get((m, d), "") for m, d in zip(peaks[R.MACHINE_ID], peaks[R.DEVICE])])
    return out.rename(columns={R.MACHINE_NAME: "machine", R.PEAK_DTYPE: "dtype", R.PEAK_FLOPS: "peak FLOP/s",
                               R.PEAK_BYTES: "peak B/s", R.PEAK_SOURCE: "peak source",
                               R.CEILING_FLOPS: "measured FLOP/s", R.CEILING_SOURCE: "ceiling",
                               "ceiling_measured_at": "measured at"})


def _reason(row: pd.Series) -> object:
    """A row's stability reason as stored, its two speeds' held mode said truly (``verdicts.held``)."""
    why = row.get(R.STABILITY_REASON)
    return held(why, row) if isinstance(why, str) else why


def unstable_view(table: pd.DataFrame) -> pd.DataFrame:
    """Rows set aside as not ``stable``: the case, its time and the verdict with its figures."""
    rows = list(table.iterrows())
    return pd.DataFrame({"case": [f"{r[R.FAMILY]}: {describe_row(r)}" for _, r in rows],
                         "dtype": [str(r[R.DTYPE]) for _, r in rows],
                         "time": [cell(R.TIME_MEDIAN, r.get(R.TIME_MEDIAN)) for _, r in rows],
                         "verdict": [str(r[R.STABILITY]) for _, r in rows],
                         "why": [cell(R.STABILITY_REASON, _reason(r)) for _, r in rows]})


# --- tables as text: one Markdown technique, one HTML style ------------------------------------------

#: The one stylesheet of every HTML page layerbench writes (the report, the history site).
HTML_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1360px;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em;max-width:100%}"
          "td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}"
          "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
          "td.t{max-width:560px;overflow-wrap:break-word}td.t:first-child{overflow-wrap:anywhere}th{background:#f4f4f4;position:sticky;top:0}"
          "th[title]{cursor:help;text-decoration:underline dotted}img{max-width:100%;margin:6px 0}"
          "figure{margin:0 0 12px}.plots{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}"
          "li{margin:6px 0}.note{color:#8a5300}details{margin:1em 0}code{font-size:12px}"
          "a.download{font-weight:600}")


def md_escape(text: object) -> str:
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_") \
        .replace("`", "\\`").replace("[", "\\[").replace("]", "\\]").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)"
    head = "| " + " | ".join(md_escape(c) for c in frame.columns) + " |"
    sep = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(md_escape(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _numeric(values: pd.Series) -> bool:
    """Whether a formatted column holds numbers (each non-empty cell starts with a digit or a sign and a digit)."""
    text = [str(v) for v in values if str(v)]
    return bool(text) and all(t[:1].isdigit() or t[:1] == "-" and t[1:2].isdigit() for t in text)


def html_table(frame: pd.DataFrame, docs: bool = False, ident: str = "") -> str:
    """An HTML table: numbers right-aligned (class ``n``), text wrapping (class ``t``); with ``docs``,
    each header carries its meaning as a tooltip."""
    if frame.empty:
        return "<p>(none)</p>"
    kind = {c: "n" if _numeric(frame[c]) else "t" for c in frame.columns}

    def th(c: object) -> str:
        tip = header_doc(str(c)) if docs else ""
        title = f" title='{html.escape(tip)}'" if tip else ""
        return f"<th class='{kind[c]}'{title}>{html.escape(str(c))}</th>"
    head = "".join(th(c) for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td class='{kind[c]}'>{html.escape(str(v))}</td>"
                                    for c, v in zip(frame.columns, row)) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table{f' id={ident!r}' if ident else ''}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


