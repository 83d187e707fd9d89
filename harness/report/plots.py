"""Plots of a derived result table (matplotlib, Agg backend) as data: each figure rendered to PNG
and SVG bytes with a safe file name, deterministically (no dates, fixed SVG ids), so a report
of the same rows is byte-identical wherever it is built. Plotting never fails a report: a plot
that cannot be drawn is left out with a note (``safe``).

Every scatter plot encodes the family by colour and the dtype by marker (``Style``, shared by all
plots of a report), draws set-aside rows (``harness.analysis.verdicts``) hollow, labels the slowest
and the fastest row relative to its roofline, and keeps its legends outside the axes."""

from __future__ import annotations

import functools
import hashlib
import io
import multiprocessing
import os
import pickle
import re
import sys
import textwrap
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from harness import record as R  # noqa: E402
from harness.analysis.findings import describe_row  # noqa: E402
from harness.report.format import LEVELS, level_label  # noqa: E402,F401
from harness.report.points import drawable, outliers, unstable  # noqa: E402,F401
from harness.units import seconds, si  # noqa: E402

matplotlib.rcParams["svg.hashsalt"] = "layerbench"       # stable SVG element ids
#: Above this many points, plots draw plain rasterized markers (no error bars, no group lines, no labels).
MANY_POINTS = 2000
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_FIGSIZE = (10.5, 5.6)
#: Heatmaps print each cell's value up to this many cells (more would be unreadable, and slow to lay out).
MAX_CELL_LABELS = 200
_DPI = 110


@dataclass(frozen=True)
class Plot:
    """One rendered figure: ``name`` is a safe file stem (letters, digits, ``_``, ``-``); ``png`` its
    PNG bytes (every report embeds them); ``svg`` its SVG bytes, rendered on first use (the HTML
    report needs none: the end of a run does not pay for them)."""

    name: str
    title: str
    png: bytes
    vector: Callable[[], bytes] = field(repr=False, compare=False)

    @property
    def svg(self) -> bytes:
        return self.vector()


@dataclass(frozen=True, slots=True)
class Style:
    """Colour per family and marker per dtype, fixed over a whole report so plots read alike."""

    colours: dict[str, Any]
    markers: dict[str, str]

    @classmethod
    def of(cls, table: pd.DataFrame) -> Style:
        families = sorted(table[R.FAMILY].astype(str).unique())
        dtypes = sorted(table[R.DTYPE].astype(str).unique())
        cmap = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
        return cls({f: cmap(i % cmap.N) for i, f in enumerate(families)},
                   {d: _MARKERS[i % len(_MARKERS)] for i, d in enumerate(dtypes)})

    def legend(self, ax: Any, families: list[str], dtypes: list[str], hollow: bool, extra: list[Any]) -> None:
        """Families (colour), dtypes (marker; only when there are several: one is in the title), hollow =
        not stable, and ``extra`` handles, outside the axes."""
        h = [Line2D([], [], ls="", marker="o", color=self.colours[f], label=plain(f)) for f in families]
        h += [Line2D([], [], ls="", marker=self.markers[d], color="0.35", label=f"dtype {plain(d)}")
              for d in (dtypes if len(dtypes) > 1 else [])]
        if hollow:
            h.append(Line2D([], [], ls="", marker="o", mfc="none", color="0.35", label="not stable (hollow)"))
        ax.legend(handles=extra + h, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  frameon=False)


def safe_name(text: str) -> str:
    """A file stem from any text: a slug of letters, digits and ``_`` (at most 48 characters) and 8 hex
    digits of its hash, so distinct texts never share a file (``roofline_cpu_fp32_1a2b3c4d``)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:48] or "plot"
    return f"{slug}_{hashlib.sha1(text.encode('utf-8', 'replace')).hexdigest()[:8]}"


def _join_groups(ax: Any, groups: pd.DataFrame) -> list[Any]:
    """One grey line through each equal-FLOPs group's points (by intensity); the legend handle, if any."""
    handles: list[Any] = []
    for _, g in groups.groupby("group"):
        g = g.sort_values(R.INTENSITY)
        handles = ax.plot(g[R.INTENSITY], g["achieved_flops_s"], color="0.7", lw=0.8, zorder=1,
                          label="equal FLOPs, joined")
    return handles[:1]


def plain(text: object) -> str:
    """Text for matplotlib labels without mathtext (a ``$`` in a family name is shown, not parsed)."""
    return str(text).replace("$", r"\$")


def _render(fig: Figure, name: str, title: str) -> Plot:
    """PNG bytes cropped to what was drawn (legends outside the axes included), and the SVG of the
    same crop when first asked for (the figure is kept until then; it is not pyplot's, so nothing
    holds it once the plot is gone)."""
    png = io.BytesIO()
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)
    fig.savefig(png, format="png", metadata={"Software": None}, bbox_inches=box)
    return Plot(name=safe_name(name), title=title, png=png.getvalue(), vector=_svg_once(fig, box))


def _svg_once(fig: Figure, box: Any) -> Callable[[], bytes]:
    """A function that renders ``fig`` to SVG (cropped to ``box``) the first time it is called."""
    def svg() -> bytes:
        out = io.BytesIO()
        fig.savefig(out, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches=box)
        return out.getvalue()
    return functools.cache(svg)


def _figure(figsize: tuple[float, float]) -> tuple[Figure, Any]:
    """A figure and its axes, outside pyplot's registry (freed with the plot that holds it)."""
    fig = Figure(figsize=figsize, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


@dataclass(frozen=True)
class Job:
    """One plot to draw: ``draw(*args, **kwargs)`` (a plot function of this module)."""

    draw: Callable[..., Plot]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


#: At most this many processes draw a report's plots side by side.
MAX_PLOT_WORKERS = 4


def draw_all(jobs: list[Job], notes: list[str]) -> list[Plot]:
    """Every job's plot (``safe``: a failure is a note), in job order. With several jobs and CPUs on
    Linux, drawn side by side in processes forked from this one (matplotlib already loaded; each
    returns its PNG bytes; the SVG is drawn here if asked for): a run's report is drawn after its
    measuring, when the CPUs are free. Elsewhere (or in a daemonic process, which may not start
    children), or if a drawing process dies, one after another here."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    workers = min(len(jobs), cpus, MAX_PLOT_WORKERS)
    if workers > 1 and sys.platform.startswith("linux") and not multiprocessing.current_process().daemon:
        _FORKED_JOBS[:] = jobs                      # what the forked processes read: nothing is pickled
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                baked = list(pool.map(_baked, range(len(jobs))))
        except (BrokenProcessPool, OSError, pickle.PicklingError):
            baked = None
        finally:
            _FORKED_JOBS.clear()
        if baked is not None:
            plots = []
            for job, (got, job_notes) in zip(jobs, baked):
                notes.extend(job_notes)
                if got is not None:
                    name, title, png = got
                    plots.append(Plot(name, title, png, vector=_svg_again(job)))
            return plots
    drawn = [safe(j.draw, *j.args, notes=notes, **j.kwargs) for j in jobs]
    return [p for p in drawn if p is not None]


#: The jobs of the ``draw_all`` under way, as its forked processes inherit them.
_FORKED_JOBS: list[Job] = []


def _baked(index: int) -> tuple[tuple[str, str, bytes] | None, list[str]]:
    """In a drawing process: (name, title, PNG) of job ``index``'s plot, or None; and its notes. The
    SVG is not drawn there: only a Markdown report asks for it (``_svg_again``)."""
    job = _FORKED_JOBS[index]
    notes: list[str] = []
    plot = safe(job.draw, *job.args, notes=notes, **job.kwargs)
    return ((plot.name, plot.title, plot.png) if plot is not None else None), notes


def _svg_again(job: Job) -> Callable[[], bytes]:
    """A function giving the SVG of a plot drawn in another process: the job drawn again here (same
    data, same bytes) the first time it is called, kept after."""
    return functools.cache(lambda: job.draw(*job.args, **job.kwargs).svg)


def safe(draw: Callable[..., Plot], *args: Any, notes: list[str], **kwargs: Any) -> Plot | None:
    """``draw(*args)``, or ``None`` with a note when it fails (a plot never fails a report)."""
    try:
        return draw(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any plotting failure is a note, not a crash
        notes.append(f"plot {kwargs.get('title', draw.__name__)} left out ({type(e).__name__}: {str(e)[:120]})")
        return None


def short_case(row: pd.Series, width: int = 64) -> str:
    """The row as the summary names it, cut at a word (never inside a parenthesis) past ``width``."""
    text = describe_row(row)
    if len(text) <= width:
        return text
    cut = text[:width - 1].rsplit(" ", 1)[0] if text[width - 2] != " " else text[:width - 2]
    return (cut.split(" (", 1)[0] if cut.count("(") > cut.count(")") else cut) + " …"


def _points(ax: Any, ok: pd.DataFrame, x: str, y: str, style: Style, *, scale: float = 1.0,
            errors: bool = False) -> None:
    many = len(ok) > MANY_POINTS
    hollow = unstable(ok)
    for (family, dtype, h), g in ok.groupby([ok[R.FAMILY].astype(str), ok[R.DTYPE].astype(str), hollow], sort=True):
        colour, marker = style.colours[family], style.markers[dtype]
        ys = g[y] * scale
        if errors and not many:
            err = [(g[R.TIME_MEDIAN] - g[R.TIME_Q1]).clip(lower=0) * scale,
                   (g[R.TIME_Q3] - g[R.TIME_MEDIAN]).clip(lower=0) * scale]
            ax.errorbar(g[x], ys, yerr=err, fmt="none", ecolor=colour, elinewidth=0.8, capsize=2, alpha=0.6,
                        zorder=2)
        ax.scatter(g[x], ys, s=4 if many else 30, marker=marker, zorder=3, rasterized=many, linewidths=1.2,
                   facecolors="none" if h else [colour], edgecolors=[colour])


#: Where an outlier label may sit (axes fraction, alignment): the four corners, two rows each. A
#: plot takes the slots its points crowd least (``_free_slots``), so a label never hides a point
#: that sits in a corner (a max-pool far below the roof, a tiny layer top-left of time vs FLOPs).
_SLOTS = tuple(((x, y), ha, va) for y, va in ((0.97, "top"), (0.89, "top"), (0.03, "bottom"), (0.11, "bottom"))
               for x, ha in ((0.02, "left"), (0.98, "right")))
#: The share of the axes a label box covers (width, height).
_BOX = (0.5, 0.08)


def _crowd(slot: tuple[tuple[float, float], str, str], pts: np.ndarray) -> int:
    """Points (axes fraction) under the box a label at ``slot`` would cover, with a margin."""
    (px, py), ha, va = slot
    x0 = px if ha == "left" else px - _BOX[0]
    y0 = py - _BOX[1] if va == "top" else py
    inside = (pts[:, 0] >= x0 - 0.03) & (pts[:, 0] <= x0 + _BOX[0] + 0.03) & \
             (pts[:, 1] >= y0 - 0.03) & (pts[:, 1] <= y0 + _BOX[1] + 0.03)
    return int(inside.sum())


def _free_slots(ax: Any, ok: pd.DataFrame, x: str, y: str, scale: float, n: int) -> list[Any]:
    """The ``n`` label slots the points cover least (on log axes, limits as drawn)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.autoscale_view()
    xy = np.column_stack([ok[x].to_numpy(dtype=float), ok[y].to_numpy(dtype=float) * scale])
    pts = ax.transAxes.inverted().transform(ax.transData.transform(xy)) if len(xy) else np.empty((0, 2))
    return sorted(_SLOTS, key=lambda slot: _crowd(slot, pts))[:n]


def _label_outliers(ax: Any, ok: pd.DataFrame, x: str, y: str, scale: float = 1.0) -> None:
    if len(ok) > MANY_POINTS:
        return
    found = list(outliers(ok))
    for ((pos, ha, va), (kind, idx)) in zip(_free_slots(ax, ok, x, y, scale, len(found)), found):
        row = ok.loc[idx]
        ax.annotate(plain(f"{kind}: {short_case(row)}"), (row[x], row[y] * scale), xytext=pos,
                    textcoords="axes fraction", ha=ha, va=va, fontsize=7,
                    arrowprops={"arrowstyle": "->", "color": "0.35", "lw": 0.7, "shrinkB": 4},
                    bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.6", "alpha": 0.95}, zorder=5)


class _SiLog(LogFormatter):
    """Log-axis tick labels as plain text: SI (``10 k``, ``1 G``, ``0.01``), or with ``us=True`` a time
    given in microseconds (``100 us``, ``1 ms``). Matplotlib's default writes mathtext (``$10^{4}$``),
    whose parsing took a third of a plot's drawing time."""

    def __init__(self, *args: Any, us: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.us = us

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return seconds(x * 1e-6) if self.us else si(x)


def _finish(ax: Any, xlabel: str, ylabel: str, title: str, us: tuple[bool, bool] = (False, False)) -> None:
    """Log axes labelled, titled and gridded; ``us``: which of (x, y) holds microseconds."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis, in_us in zip((ax.xaxis, ax.yaxis), us):     # after set_*scale, which installs mathtext formatters
        axis.set_major_formatter(_SiLog(us=in_us))
        axis.set_minor_formatter(_SiLog(labelOnlyBase=False, us=in_us))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(plain(title), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)


def time_vs_flops(frame: pd.DataFrame, name: str, title: str, style: Style | None = None) -> Plot:
    """Median time per call against FLOPs (log-log): layers on one vertical line have equal FLOPs,
    and their height difference is the speed difference to explain. Bars span the interquartile range."""
    ok = drawable(frame)
    style = style or Style.of(frame)
    fig, ax = _figure(_FIGSIZE)
    _points(ax, ok, R.FLOPS, R.TIME_MEDIAN, style, scale=1e6, errors=True)
    _label_outliers(ax, ok, R.FLOPS, R.TIME_MEDIAN, scale=1e6)
    _finish(ax, "FLOPs per call (canonical convention)", "median time per call", title, us=(False, True))
    style.legend(ax, sorted(ok[R.FAMILY].astype(str).unique()), sorted(ok[R.DTYPE].astype(str).unique()),
                 bool(unstable(ok).any()), [])
    return _render(fig, name, title)


def roofline(frame: pd.DataFrame, name: str, title: str, groups: pd.DataFrame | None = None,
             style: Style | None = None) -> Plot:
    """Roofline of one machine, device and dtype (a derived table filtered to it): achieved FLOP/s
    against intensity (log-log); the measured roofs solid, one diagonal per memory level stored
    (L1, L2, L3, DRAM/HBM), each labelled; the theoretical roof dashed and named for its source
    (``datasheet`` or ``formula``); members of an equal-FLOPs group (``groups``) joined by a grey line."""
    ok = drawable(frame)
    ok = ok[ok["achieved_flops_s"].notna() & (ok[R.INTENSITY] > 0)]
    style = style or Style.of(frame)
    fig, ax = _figure(_FIGSIZE)
    xs = ok[R.INTENSITY]
    lo, hi = (xs.min() / 4, xs.max() * 4) if len(xs) else (0.01, 1000)
    grid = np.logspace(np.log10(lo), np.log10(hi), 200)
    roofs = _roofs(ax, ok, grid)
    if groups is not None and len(groups) and len(ok) <= MANY_POINTS:
        roofs = roofs + _join_groups(ax, groups[groups[R.ROW_ID].isin(ok[R.ROW_ID])])
    _points(ax, ok, R.INTENSITY, "achieved_flops_s", style)
    _label_outliers(ax, ok, R.INTENSITY, "achieved_flops_s")
    _finish(ax, "arithmetic intensity (FLOP / byte, minimum traffic)", "achieved FLOP/s", title)
    style.legend(ax, sorted(ok[R.FAMILY].astype(str).unique()), sorted(ok[R.DTYPE].astype(str).unique()),
                 bool(unstable(ok).any()), roofs)
    return _render(fig, name, title)


def _first(ok: pd.DataFrame, col: str) -> float | None:
    v = pd.to_numeric(ok[col], errors="coerce").dropna() if col in ok else pd.Series(dtype=float)
    return float(v.iloc[0]) if len(v) and v.iloc[0] > 0 else None


def _roofs(ax: Any, ok: pd.DataFrame, grid: np.ndarray) -> list[Any]:
    """Draw the roofs stored with the rows; the legend handles. Measured: the GEMM ceiling and one
    diagonal per memory level; theoretical: the peak, named for ``peak_source``."""
    handles: list[Any] = []
    first = ok.iloc[0] if len(ok) else None
    top = _first(ok, R.CEILING_FLOPS)
    cap = top or _first(ok, R.PEAK_FLOPS)          # no diagonal runs past the compute roof drawn
    levels = [(level_label(label, first), bw) for col, label in LEVELS if (bw := _first(ok, col)) is not None]
    shades = np.linspace(0.6, 0.0, len(levels)) if len(levels) > 1 else [0.0] * len(levels)   # DRAM darkest
    for i, ((label, bw), shade) in enumerate(zip(levels, shades)):
        line = np.minimum(cap, grid * bw) if cap else grid * bw
        colour = str(round(float(shade), 2))
        handles += ax.plot(grid, line, "-", color=colour, lw=1.2, zorder=1, label=f"measured {label}: {si(bw, 'B/s')}")
        at = int(len(grid) * (0.02 + 0.07 * i))          # staggered along the diagonals: close roofs stay legible
        ax.annotate(label, (grid[at], line[at]), xytext=(4, -10), textcoords="offset points", fontsize=7,
                    color=colour, fontweight="bold", zorder=4,
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85})
    if top is not None:
        handles.append(ax.axhline(top, color="black", lw=1.2, zorder=1, label=f"measured GEMM: {si(top, 'FLOP/s')}")
                       if not levels else Line2D([], [], color="black", lw=1.2,
                                                 label=f"measured GEMM: {si(top, 'FLOP/s')}"))
    source = ok[R.PEAK_SOURCE].dropna().astype(str) if R.PEAK_SOURCE in ok else pd.Series(dtype=str)
    name = source.iloc[0] if len(source) and source.iloc[0] in ("datasheet", "formula") else None
    peak_f, peak_b = _first(ok, R.PEAK_FLOPS), _first(ok, R.PEAK_BYTES)
    if name and peak_f:
        line = np.minimum(peak_f, grid * peak_b) if peak_b else np.full_like(grid, peak_f)
        bw = f", {si(peak_b, 'B/s')}" if peak_b else " (no bandwidth)"
        handles += ax.plot(grid, line, "--", color="black", lw=1.0, zorder=1,
                           label=f"{name} peak: {si(peak_f, 'FLOP/s')}{bw}")
    return handles


def _tick(v: object) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _thin(n: int, most: int = 24) -> list[int]:
    """Tick positions: every one of ``n`` up to ``most``, else evenly spaced ``most``."""
    return list(range(n)) if n <= most else sorted({round(k * (n - 1) / (most - 1)) for k in range(most)})


#: What a heatmap shows, for its title, and its colour bar's label (the cells print the same value in %).
HEAT_LABELS = {"util_ceiling": "utilization of the measured ceiling", "util_peak": "utilization of the peak"}
HEAT_BARS = {"util_ceiling": "% of the measured ceiling", "util_peak": "% of the peak"}


def heatmap(frame: pd.DataFrame, x: str, y: str, name: str, title: str, value: str = "util_ceiling") -> Plot:
    """``value`` (median over other axes) over two swept axes ``x`` and ``y`` (columns of ``frame``)."""
    ok = frame[frame[R.STATUS] == "ok"]
    grid = 100 * ok.pivot_table(index=y, columns=x, values=value, aggfunc="median").sort_index().sort_index(axis=1)
    fig, ax = _figure((min(2.4 + 0.9 * grid.shape[1], 12), min(1.6 + 0.6 * grid.shape[0], 9)))
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto", origin="lower")
    xs, ys = _thin(grid.shape[1]), _thin(grid.shape[0])
    ax.set_xticks(xs, [plain(_tick(grid.columns[k])) for k in xs])
    ax.set_yticks(ys, [plain(_tick(grid.index[k])) for k in ys])
    ax.set_xlabel(plain(x.removeprefix("axis_")))
    ax.set_ylabel(plain(y.removeprefix("axis_")))
    for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float) if grid.size <= MAX_CELL_LABELS else np.empty((0, 0))):
        if v == v:                      # dark cells (low end of the colour scale) get white text
            ax.text(j, i, f"{v:.2g} %" if v < 1 else f"{v:.0f} %", ha="center", va="center", fontsize=7,
                    color="white" if im.norm(v) < 0.6 else "black")
    fig.colorbar(im, ax=ax, label=HEAT_BARS.get(value, f"{value} (%)"), format="%.0f")
    width, height = fig.get_size_inches()   # the title over axes and colour bar, wrapped to the figure
    lines = textwrap.wrap(plain(title), max(24, int(width * 12)))
    fig.suptitle("\n".join(lines), fontsize=9, y=1 - 0.05 / height, va="top")
    fig.subplots_adjust(top=1 - (0.12 + 0.16 * len(lines)) / height)     # room for its lines above the axes
    return _render(fig, name, title)


def predicted_vs_measured(frame: pd.DataFrame, name: str, title: str, style: Style | None = None) -> Plot:
    """Measured time against ``predicted_s`` (log-log) of one machine and device: the line y = x
    (the prediction exact) with a +-10 % band; colour per family, marker per dtype, rows set aside
    hollow; the row the prediction missed most is labelled. The axis names the basis (the efficiency
    model's, or the roofline's)."""
    ok = drawable(frame)
    ok = ok[pd.to_numeric(ok["predicted_s"], errors="coerce") > 0]
    style = style or Style.of(frame)
    fig, ax = _figure(_FIGSIZE)
    pred, meas = ok["predicted_s"].astype(float) * 1e6, ok[R.TIME_MEDIAN].astype(float) * 1e6
    lo = float(min(pred.min(), meas.min())) / 1.5 if len(ok) else 1.0
    hi = float(max(pred.max(), meas.max())) * 1.5 if len(ok) else 10.0
    grid = np.logspace(np.log10(lo), np.log10(hi), 50)
    band = ax.fill_between(grid, grid * 0.9, grid * 1.1, color="0.85", zorder=0, label="+-10 %")
    line = ax.plot(grid, grid, "-", color="black", lw=1.0, zorder=1, label="measured = predicted")[0]
    _points(ax, ok.assign(predicted_us=pred), "predicted_us", R.TIME_MEDIAN, style, scale=1e6)
    if len(ok) and len(ok) <= MANY_POINTS:
        worst = (np.log(meas) - np.log(pred)).abs().idxmax()
        row = ok.loc[worst]
        ax.annotate(plain(f"largest residual {float(row['residual']):.2f}x: {short_case(row)}"),
                    (float(row["predicted_s"]) * 1e6, float(row[R.TIME_MEDIAN]) * 1e6), xytext=(0.02, 0.97),
                    textcoords="axes fraction", ha="left", va="top", fontsize=7,
                    arrowprops={"arrowstyle": "->", "color": "0.35", "lw": 0.7, "shrinkB": 4},
                    bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.6", "alpha": 0.95}, zorder=5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    basis = sorted(ok["predicted_basis"].dropna().astype(str).unique()) if "predicted_basis" in ok else []
    _finish(ax, f"predicted time per call ({' / '.join(basis) or 'roofline'})", "measured median time per call",
            title, us=(True, True))
    style.legend(ax, sorted(ok[R.FAMILY].astype(str).unique()), sorted(ok[R.DTYPE].astype(str).unique()),
                 bool(unstable(ok).any()), [line, band])
    return _render(fig, name, title)
