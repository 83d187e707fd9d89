"""Plots of a result table (matplotlib, Agg backend), saved as PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

#: Above this many points, plots draw plain rasterized markers (no error bars, no group lines).
MANY_POINTS = 2000


def time_vs_flops(frame: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Median time per call against FLOPs (log-log), one colour per family: layers on one vertical
    line have equal FLOPs, and their height difference is the speed difference to explain.
    Bars span the interquartile range. Writes ``<stem>.png`` and ``<stem>.svg``."""
    ok = frame[(frame["status"] == "ok") & (frame["flops"] > 0)]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    many = len(ok) > MANY_POINTS
    for family, g in ok.groupby("family", sort=True):
        if many:        # error bars and vector points do not scale to 10^5 rows: plain, rasterized points
            ax.scatter(g["flops"], g["time_median_s"] * 1e6, s=4, label=family, alpha=0.5, rasterized=True)
        else:
            ax.errorbar(g["flops"], g["time_median_s"] * 1e6,
                        yerr=[(g["time_median_s"] - g["time_q1_s"]) * 1e6, (g["time_q3_s"] - g["time_median_s"]) * 1e6],
                        fmt="o", ms=5, capsize=2, label=family, alpha=0.85)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOPs per call (canonical convention)")
    ax.set_ylabel("median time per call (µs)")
    devices = ", ".join(sorted({f"{d} {t}" for d, t in zip(ok["device_name"], ok["dtype"])}))
    suites = ", ".join(sorted(ok["suite"].unique()))
    ax.set_title(f"{suites}: time vs FLOPs ({devices})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _save(fig, Path(stem))


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths


def roofline(frame: pd.DataFrame, stem: str | Path, groups: pd.DataFrame | None = None) -> list[Path]:
    """Roofline of one device and dtype (a derived table filtered to it): achieved FLOP/s against
    intensity (log-log), the measured roof (solid) and the datasheet/formula roof (dashed), one
    colour per family; members of an equal-FLOPs group (``groups``, from ``equal_flops_groups``)
    joined by a thin grey line. Writes PNG and SVG."""
    ok = frame[(frame["status"] == "ok") & frame["achieved_flops_s"].notna() & (frame["intensity"] > 0)]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    xs = ok["intensity"]
    lo, hi = (xs.min() / 4, xs.max() * 4) if len(xs) else (0.01, 1000)
    grid = np.logspace(np.log10(lo), np.log10(hi), 200)
    for kind, style in (("ceiling", "-"), ("datasheet", "--")):
        f, b = ok[f"{kind}_flops_s"].dropna(), ok[f"{kind}_bytes_s"].dropna()
        name = "measured" if kind == "ceiling" else "datasheet"
        if len(f) and len(b):
            pf, pb = float(f.iloc[0]), float(b.iloc[0])
            ax.plot(grid, np.minimum(pf, grid * pb), style, color="black", lw=1.2,
                    label=f"{name}: {pf / 1e9:.3g} GFLOP/s, {pb / 1e9:.3g} GB/s")
        elif len(f):
            ax.axhline(float(f.iloc[0]), ls=style, color="black", lw=1.2,
                       label=f"{name}: {float(f.iloc[0]) / 1e9:.3g} GFLOP/s")
    many = len(ok) > MANY_POINTS
    if groups is not None and len(groups) and not many:
        for _, g in groups[groups["row_id"].isin(ok["row_id"])].groupby("group"):
            g = g.sort_values("intensity")
            ax.plot(g["intensity"], g["achieved_flops_s"], color="0.6", lw=0.8, zorder=1)
    for family, g in ok.groupby("family", sort=True):
        ax.scatter(g["intensity"], g["achieved_flops_s"], s=4 if many else 22, label=family, zorder=2,
                   alpha=0.5 if many else 1.0, rasterized=many)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte, minimum traffic)")
    ax.set_ylabel("achieved FLOP/s")
    name = ", ".join(sorted({f"{d} {t}" for d, t in zip(ok["device_name"], ok["dtype"])}))
    ax.set_title(f"roofline: {name}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, Path(stem))


def _tick(v: object) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def heatmap(frame: pd.DataFrame, x: str, y: str, stem: str | Path, value: str = "util_ceiling",
            title: str = "") -> list[Path]:
    """``value`` (median over other axes) over two swept axes ``x`` and ``y`` (``ax_*`` columns)."""
    ok = frame[frame["status"] == "ok"]
    grid = ok.pivot_table(index=y, columns=x, values=value, aggfunc="median").sort_index().sort_index(axis=1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * grid.shape[1], 1.2 + 0.6 * grid.shape[0]), dpi=120)
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(grid.shape[1]), [_tick(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [_tick(i) for i in grid.index])
    ax.set_xlabel(x.removeprefix("ax_"))
    ax.set_ylabel(y.removeprefix("ax_"))
    for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
        if v == v:
            ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7, color="white" if v < 0.5 else "black")
    fig.colorbar(im, ax=ax, label=value)
    ax.set_title(title or value, fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(stem))
