"""Plots of a result table (matplotlib, Agg backend), saved as PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def time_vs_flops(frame: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Median time per call against FLOPs (log-log), one colour per family: layers on one vertical
    line have equal FLOPs, and their height difference is the speed difference to explain.
    Bars span the interquartile range. Writes ``<stem>.png`` and ``<stem>.svg``."""
    ok = frame[(frame["status"] == "ok") & (frame["flops"] > 0)]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for family, g in ok.groupby("family", sort=True):
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
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    stem = Path(stem)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths
