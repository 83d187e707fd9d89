"""Plots of a derived result table (matplotlib, Agg backend) as data: each figure rendered to PNG
and SVG bytes with a safe file name, deterministically (no dates, fixed SVG ids), so a report
of the same rows is byte-identical wherever it is built. Plotting never fails a report: a plot
that cannot be drawn is left out with a note (``safe``)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness import record as R  # noqa: E402

matplotlib.rcParams["svg.hashsalt"] = "layerbench"       # stable SVG element ids
#: Above this many points, plots draw plain rasterized markers (no error bars, no group lines).
MANY_POINTS = 2000
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


@dataclass(frozen=True, slots=True)
class Plot:
    """One rendered figure: ``name`` is a safe file stem (letters, digits, ``_``, ``-``, ``.``)."""

    name: str
    title: str
    png: bytes
    svg: bytes


def safe_name(text: str) -> str:
    """A file stem from any text: runs of other characters become ``_`` (``roofline_AMD_EPYC_fp32``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:100] or "plot"


def plain(text: object) -> str:
    """Text for matplotlib labels without mathtext (a ``$`` in a family name is shown, not parsed)."""
    return str(text).replace("$", r"\$")


def _render(fig: plt.Figure, name: str, title: str) -> Plot:
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", metadata={"Software": None})
    fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return Plot(name=safe_name(name), title=title, png=png.getvalue(), svg=svg.getvalue())


def safe(draw: Callable[..., Plot], *args: Any, notes: list[str], **kwargs: Any) -> Plot | None:
    """``draw(*args)``, or ``None`` with a note when it fails (a plot never fails a report)."""
    try:
        return draw(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any plotting failure is a note, not a crash
        plt.close("all")
        notes.append(f"plot {kwargs.get('name', draw.__name__)} left out ({type(e).__name__}: {str(e)[:120]})")
        return None


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame[R.STATUS] == "ok") & (pd.to_numeric(frame[R.FLOPS], errors="coerce") > 0)
                 & (pd.to_numeric(frame[R.TIME_MEDIAN], errors="coerce") > 0)]


def time_vs_flops(frame: pd.DataFrame, name: str, title: str) -> Plot:
    """Median time per call against FLOPs (log-log), colour per family, marker per dtype: layers on
    one vertical line have equal FLOPs, and their height difference is the speed difference to
    explain. Bars span the interquartile range; the slowest row of each equal-FLOPs pair is labelled."""
    ok = _ok(frame)
    fig, ax = plt.subplots(figsize=(9, 5.8), dpi=110)
    many = len(ok) > MANY_POINTS
    dtypes = sorted(ok[R.DTYPE].astype(str).unique())
    for (family, dtype), g in ok.groupby([R.FAMILY, R.DTYPE], sort=True):
        marker = _MARKERS[dtypes.index(str(dtype)) % len(_MARKERS)]
        label = plain(f"{family} ({dtype})" if len(dtypes) > 1 else family)
        y = g[R.TIME_MEDIAN] * 1e6
        if many:
            ax.scatter(g[R.FLOPS], y, s=4, marker=marker, label=label, alpha=0.5, rasterized=True)
        else:
            err = [(g[R.TIME_MEDIAN] - g[R.TIME_Q1]).clip(lower=0) * 1e6,
                   (g[R.TIME_Q3] - g[R.TIME_MEDIAN]).clip(lower=0) * 1e6]
            ax.errorbar(g[R.FLOPS], y, yerr=err, fmt=marker, ms=5, capsize=2, label=label, alpha=0.85)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOPs per call (canonical convention)")
    ax.set_ylabel("median time per call (us)")
    ax.set_title(plain(title), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return _render(fig, name, title)


def roofline(frame: pd.DataFrame, name: str, title: str, groups: pd.DataFrame | None = None) -> Plot:
    """Roofline of one machine, device and dtype (a derived table filtered to it): achieved FLOP/s
    against intensity (log-log), the measured roof (solid) and the theoretical roof (dashed, named
    for its source: datasheet or formula), colour per family; members of an equal-FLOPs group
    (``groups``) joined by a thin grey line."""
    ok = _ok(frame)
    ok = ok[ok["achieved_flops_s"].notna() & (ok[R.INTENSITY] > 0)]
    fig, ax = plt.subplots(figsize=(9, 5.8), dpi=110)
    xs = ok[R.INTENSITY]
    lo, hi = (xs.min() / 4, xs.max() * 4) if len(xs) else (0.01, 1000)
    grid = np.logspace(np.log10(lo), np.log10(hi), 200)
    _roofs(ax, ok, grid)
    many = len(ok) > MANY_POINTS
    if groups is not None and len(groups) and not many:
        for _, g in groups[groups[R.ROW_ID].isin(ok[R.ROW_ID])].groupby("group"):
            g = g.sort_values(R.INTENSITY)
            ax.plot(g[R.INTENSITY], g["achieved_flops_s"], color="0.6", lw=0.8, zorder=1)
    for family, g in ok.groupby(R.FAMILY, sort=True):
        ax.scatter(g[R.INTENSITY], g["achieved_flops_s"], s=4 if many else 22, label=plain(family), zorder=2,
                   alpha=0.5 if many else 1.0, rasterized=many)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte, minimum traffic)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(plain(title), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return _render(fig, name, title)


def _roofs(ax: Any, ok: pd.DataFrame, grid: np.ndarray) -> None:
    theory = str(ok[R.PEAK_SOURCE].dropna().iloc[0]) if ok[R.PEAK_SOURCE].notna().any() else "theoretical"
    for f_col, b_col, style, label in ((R.CEILING_FLOPS, R.CEILING_BYTES, "-", "measured"),
                                       (R.PEAK_FLOPS, R.PEAK_BYTES, "--", theory)):
        f, b = ok[f_col].dropna(), ok[b_col].dropna()
        if len(f) and len(b):
            pf, pb = float(f.iloc[0]), float(b.iloc[0])
            ax.plot(grid, np.minimum(pf, grid * pb), style, color="black", lw=1.2,
                    label=f"{label}: {pf / 1e9:.3g} GFLOP/s, {pb / 1e9:.3g} GB/s")
        elif len(f):
            ax.axhline(float(f.iloc[0]), ls=style, color="black", lw=1.2,
                       label=f"{label}: {float(f.iloc[0]) / 1e9:.3g} GFLOP/s (no bandwidth)")


def _tick(v: object) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def heatmap(frame: pd.DataFrame, x: str, y: str, name: str, title: str, value: str = "util_ceiling") -> Plot:
    """``value`` (median over other axes) over two swept axes ``x`` and ``y`` (columns of ``frame``)."""
    ok = frame[frame[R.STATUS] == "ok"]
    grid = ok.pivot_table(index=y, columns=x, values=value, aggfunc="median").sort_index().sort_index(axis=1)
    fig, ax = plt.subplots(figsize=(1.8 + 0.9 * grid.shape[1], 1.4 + 0.6 * grid.shape[0]), dpi=110)
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(grid.shape[1]), [_tick(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [_tick(i) for i in grid.index])
    ax.set_xlabel(plain(x))
    ax.set_ylabel(plain(y))
    for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
        if v == v:
            ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black")
    fig.colorbar(im, ax=ax, label=value)
    ax.set_title(plain(title), fontsize=9)
    fig.tight_layout()
    return _render(fig, name, title)
