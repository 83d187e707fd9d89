"""The history site (asv publish is the model): ``index.html`` lists every series (case x machine x
settings) with its latest night, baseline and last change point, regressed cases first; one page
per case with an inline SVG of the nightly medians, their noise band and the change points. Only
judged rows are drawn and judged (``harness.analysis.verdicts``, as ``regress``); the index says how
many were set aside. No script, no CDN: it opens offline from the folder."""

from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness import record as R
from harness.analysis.changepoints import change_points
from harness.analysis.compare import REGRESSION_THRESHOLD
from harness.analysis.findings import describe_row
from harness.analysis.series import SERIES_KEY, nightly
from harness.analysis.verdicts import judged, set_aside, set_aside_text
from harness.record.run import DAY
from harness.report.format import HTML_STYLE
from harness.report.registry import render, renderer
from harness.units import seconds

#: The report's stylesheet, and the colours of a slower and a faster series.
_STYLE = HTML_STYLE + ".slower{background:#fdd}.faster{background:#dfd}"


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """One series on the summary page."""

    page: str
    title: str
    machine: str
    nights: int
    latest_s: float
    baseline_s: float
    change: str            # "slower 1.18x at 2026-11-20 (abc1234)" or ""
    regressed: bool


def _label(row: pd.Series, clock: bool = False) -> str:
    """A night as the x axis and the tables name it: its day (and time, ``clock``, when one day holds
    several runs of the series) and commit."""
    when = row["when"].strftime(f"{DAY} %H:%M" if clock else DAY) if pd.notna(row["when"]) else row[R.RUN_ID]
    commit = str(row.get(R.GIT_COMMIT) or "")[:9]
    return f"{when} {commit}".strip()


def _labels(g: pd.DataFrame) -> list[str]:
    """Each night's label, distinct: runs sharing a day are told apart by their time (and run id)."""
    days = [_label(r) for _, r in g.iterrows()]
    clock = len(set(days)) < len(days)
    out = [_label(r, clock) for _, r in g.iterrows()]
    seen: dict[str, int] = {}
    for i, label in enumerate(out):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            out[i] = f"{label} ({g.iloc[i][R.RUN_ID]})"
    return out


def _svg(g: pd.DataFrame, cps: list[int], title: str) -> str:
    import matplotlib  # deferred: a report without history never imports matplotlib here
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as above
    fig, ax = plt.subplots(figsize=(8, 3))
    x = range(len(g))
    ax.fill_between(x, g["low_s"] * 1e3, g["high_s"] * 1e3, alpha=0.25, label="noise band (IQR or CI)")
    ax.plot(x, g[R.TIME_MEDIAN] * 1e3, "o-", ms=3, label="median")
    for c in cps:
        ax.axvline(c - 0.5, color="red", ls="--", lw=1)
    ax.set_ylabel("ms per call")
    step = max(1, len(g) // 10)
    ax.set_xticks(list(x)[::step])
    ax.set_xticklabels(_labels(g)[::step], rotation=30, fontsize=7, ha="right")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = re.sub(r"^.*?<svg", "<svg", buf.getvalue(), flags=re.S)
    return re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)          # a date and RDF namespaces


def _series_page(g: pd.DataFrame, cps: list[int], title: str, machine: str) -> str:
    rows = "".join(f"<tr><td>{html.escape(label)}</td><td>{html.escape(str(r[R.RUN_ID]))}</td>"
                   f"<td>{seconds(r[R.TIME_MEDIAN])}</td><td>{seconds(r['low_s'])} - {seconds(r['high_s'])}</td>"
                   f"<td>{'change point' if i in cps else ''}</td></tr>"
                   for i, ((_, r), label) in enumerate(zip(g.iterrows(), _labels(g))))
    return (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>{_STYLE}</style>"
            f"<p><a href=index.html>all cases</a></p><h1>{html.escape(title)}</h1>"
            f"<p>Machine: {html.escape(machine)}</p>{_svg(g, cps, title)}"
            f"<table><tr><th>night</th><th>run</th><th>median</th><th>band</th><th></th></tr>{rows}</table>")


@dataclass(frozen=True)
class Series:
    """One series of the site: its summary line, its nights (``harness.analysis.series.nightly``)
    and the indices of its change points."""

    summary: SeriesSummary
    nights: pd.DataFrame
    change_points: tuple[int, ...]


@dataclass(frozen=True)
class HistoryModel:
    """The history site as data: every series, regressed ones first, the set-aside sentence and how
    many cases have no judged night (every row of theirs set aside: no series)."""

    series: tuple[Series, ...]
    aside: str | None
    unjudged: int = 0


def history_model(frame: pd.DataFrame, threshold: float = REGRESSION_THRESHOLD) -> HistoryModel:
    """The site's model of ``frame`` (rows of many runs): judged rows only (``verdicts.judged``, as
    ``regress``); a series is regressed when its last change point is a slowdown beyond ``threshold``."""
    out = []
    for i, (_, g) in enumerate(nightly(judged(frame)).groupby(list(SERIES_KEY), sort=True)):
        g = g.reset_index(drop=True)
        cps = change_points(g[R.TIME_MEDIAN].tolist())
        out.append(Series(_summary(g, cps, f"case-{i:05d}.html", threshold), g, tuple(cps)))
    out.sort(key=lambda s: (not s.summary.regressed, s.summary.change == "", s.summary.title))
    every = nightly(frame).groupby(list(SERIES_KEY)).ngroups
    return HistoryModel(tuple(out), set_aside_text(set_aside(frame)), every - len(out))


def _summary(g: pd.DataFrame, cps: list[int], page: str, threshold: float) -> SeriesSummary:
    first = g.iloc[0]
    title = f"{first[R.FAMILY]}: {describe_row(first)} {first[R.DTYPE]} on {first[R.DEVICE]}"
    seg_start = cps[-1] if cps else 0
    base = float(g[R.TIME_MEDIAN].iloc[seg_start:].median())
    change, regressed = "", False
    if cps:
        before = float(g[R.TIME_MEDIAN].iloc[(cps[-2] if len(cps) > 1 else 0):cps[-1]].median())
        ratio = base / before
        change = f"{'slower' if ratio > 1 else 'faster'} {ratio:.2f}x at {_label(g.iloc[cps[-1]])}"
        regressed = ratio > 1 + threshold
    threads = f", {int(first[R.THREADS])} thread(s)" if pd.notna(first.get(R.THREADS)) else ""
    return SeriesSummary(page, title, f"{first[R.MACHINE_NAME]} [{first[R.MACHINE_ID]}]{threads}", len(g),
                         float(g[R.TIME_MEDIAN].iloc[-1]), base, change, regressed)


@renderer(HistoryModel, "html")
def history_html(model: HistoryModel, out: Path) -> list[Path]:
    """``index.html`` and one page per series under ``out``; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for s in model.series:
        page = out / s.summary.page
        page.write_text(_series_page(s.nights, list(s.change_points), s.summary.title, s.summary.machine),
                        encoding="utf-8")
        files.append(page)
    index = out / "index.html"
    index.write_text(_index([s.summary for s in model.series], model.aside, model.unjudged), encoding="utf-8")
    return [index, *files]


def build_site(frame: pd.DataFrame, out: str | Path, threshold: float = REGRESSION_THRESHOLD) -> list[SeriesSummary]:
    """Write the site for ``frame`` (rows of many runs) into ``out``; returns the summary rows."""
    model = history_model(frame, threshold)
    render(model, "html", Path(out))
    return [s.summary for s in model.series]


def _index(summaries: list[SeriesSummary], aside: str | None = None, unjudged: int = 0) -> str:
    """The index page; ``aside``: the set-aside sentence, shown under the count; ``unjudged``: cases
    left out for want of a judged night."""
    n_bad = sum(s.regressed for s in summaries)
    rows = "".join(
        f"<tr class={'slower' if s.regressed else ('faster' if s.change.startswith('faster') else '')}>"
        f"<td><a href={s.page}>{html.escape(s.title)}</a></td><td>{html.escape(s.machine)}</td><td>{s.nights}</td>"
        f"<td>{seconds(s.latest_s)}</td><td>{seconds(s.baseline_s)}</td><td>{html.escape(s.change)}</td></tr>"
        for s in summaries)
    note = f"<p>{html.escape(aside)}.</p>" if aside else ""
    if unjudged:
        note += (f"<p>{unjudged} case(s) not listed: every night of theirs was set aside, so there is no "
                 "time to draw or judge (a run's report lists them, marked; <code>--processes 5</code> or a "
                 "quieter host lets more rows through).</p>")
    return (f"<!doctype html><meta charset=utf-8><title>layerbench history</title><style>{_STYLE}</style>"
            f"<h1>layerbench history</h1><p>{len(summaries)} series; {n_bad} regressed (last change point a "
            f"slowdown).</p>{note}<table><tr><th>case</th><th>machine</th><th>nights</th><th>latest</th>"
            f"<th>baseline (since last change)</th><th>last change point</th></tr>{rows}</table>")
