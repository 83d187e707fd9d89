"""The report as data: the derived table, the runs and machines, the stored peaks, the findings
and groups, the cross-device view, the plots (rendered bytes) and notes. Built from stored rows
only (``harness.store.Loaded``); renderers (``harness.report.render``) turn it into files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness import record as R
from harness.analysis import cross_device, derive, equal_flops_groups, findings, peak_table
from harness.analysis.confirmed import interleaved_findings
from harness.analysis.findings import Finding, device_label, thread_findings
from harness.analysis.verdicts import counts
from harness.predict.columns import apply_models
from harness.record import RunMeta
from harness.report.points import outliers, unstable
from harness.report.predictions import PredictionsView, predictions_view
from harness.store import Loaded

if TYPE_CHECKING:
    from harness.report.plots import Job, Plot

MAX_HEATMAPS = 6


@dataclass(frozen=True)
class ReportModel:
    """Everything a report shows. ``table`` is the derived result table (every row)."""

    table: pd.DataFrame
    runs: tuple[RunLine, ...]
    machines: pd.DataFrame
    peaks: pd.DataFrame
    findings: tuple[Finding, ...]
    groups: pd.DataFrame
    cross_device: pd.DataFrame | None
    plots: tuple[Plot, ...] = ()
    #: Layers slower with more threads than with fewer (a ``threads`` axis; ``analysis.findings.thread_findings``).
    threads: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()
    statuses: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    #: Measured rows per stability label (``harness.analysis.verdicts.counts``: null as ``no verdict``).
    stability: dict[str, int] = field(default_factory=dict)
    #: (``slowest vs roofline`` / ``fastest vs roofline``, index into ``table``) per machine, device and dtype.
    outliers: tuple[tuple[str, Any], ...] = ()
    #: Candidate findings the interleaved re-measurement did not confirm (``harness.analysis.confirmed``).
    unconfirmed: tuple[Finding, ...] = ()
    #: ``rows.csv`` files already written from this model (html and markdown share one).
    csv_written: set[str] = field(default_factory=set, repr=False, compare=False)
    #: Predicted against measured per family, and the largest residuals (``harness.report.predictions``).
    predictions: PredictionsView | None = None

    @property
    def unstable(self) -> pd.DataFrame:
        """Measured rows set aside (``harness.analysis.verdicts``: drawn hollow, listed with the verdict)."""
        return self.table[unstable(self.table)]

    @property
    def headline(self) -> str:
        t = self.table
        return (f"{len(t)} rows from {t[R.RUN_ID].nunique()} run(s) on {t[R.MACHINE_ID].nunique()} machine(s); "
                + ", ".join(f"{v} {k}" for k, v in sorted(self.statuses.items())) + ". Labels: "
                + (", ".join(f"{v} {k}" for k, v in sorted(self.labels.items())) or "none") + ". Stability: "
                + (", ".join(f"{v} {k}" for k, v in self.stability.items()) or "no measured row") + ".")


def machines(table: pd.DataFrame) -> pd.DataFrame:
    """One line per machine and device: its id, name, host, the runs and rows it holds."""
    cols = [R.MACHINE_ID, R.MACHINE_NAME, R.HOST, R.DEVICE, R.DEVICE_NAME]
    g = table.groupby(cols, dropna=False, sort=True)
    return g.agg(runs=(R.RUN_ID, "nunique"), rows=(R.ROW_ID, "size")).reset_index()


@dataclass(frozen=True, slots=True)
class RunLine:
    """One run as the report lists it: from its rows, and from its stored metadata where it has one
    (a pytest-benchmark file has none: those fields are null)."""

    run_id: str
    suite: str
    machine_id: str
    machine_name: str
    device: str
    rows: int
    started: str | None
    finished: str | None
    git_commit: str | None
    torch: str
    threads: int | None
    schema_version: int
    interrupted: bool | None
    #: What ``--threads auto`` saw at the start (other processes on the CPUs) and chose, or null.
    threads_choice: str | None = None


def _run_rows(loaded: Loaded, table: pd.DataFrame) -> tuple[RunLine, ...]:
    out = []
    for run_id in sorted(table[R.RUN_ID].unique()):
        meta = loaded.runs.get(run_id) or RunMeta(run_id=run_id)
        rows = table[table[R.RUN_ID] == run_id]
        legacy = str(rows[R.PEAK_SOURCE].iloc[0]) == "not stored"
        stored = meta.schema_version if meta.schema_version is not None else 1 if legacy else R.SCHEMA_VERSION
        out.append(RunLine(
            run_id=run_id, suite=rows[R.SUITE].iloc[0], machine_id=rows[R.MACHINE_ID].iloc[0],
            machine_name=rows[R.MACHINE_NAME].iloc[0], device=rows[R.DEVICE].iloc[0], rows=len(rows),
            started=meta.started, finished=meta.finished,
            git_commit=rows[R.GIT_COMMIT].dropna().iloc[0] if rows[R.GIT_COMMIT].notna().any() else None,
            torch=rows[R.TORCH_VERSION].iloc[0], threads=meta.threads, schema_version=stored,
            interrupted=meta.interrupted, threads_choice=meta.threads_choice))
    return tuple(out)


def axes_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The ``axes`` JSON of each row as columns (for heatmaps)."""
    def parse(text: object) -> dict[str, Any]:
        try:
            v = json.loads(text) if isinstance(text, str) else {}
        except ValueError:
            v = {}
        return v if isinstance(v, dict) else {}
    return pd.DataFrame([parse(t) for t in table[R.AXES]], index=table.index)


def heatmap_axes(table: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(family, x, y) for families whose ok rows vary along exactly two independent sweep axes."""
    out = []
    ok = table[table[R.STATUS] == "ok"]
    for family, g in ok.groupby(R.FAMILY, sort=True):
        ax = axes_frame(g).map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
        varying = [c for c in ax.columns if ax[c].nunique(dropna=True) > 1]
        if len(varying) == 2 and len(ax[varying].drop_duplicates()) > max(ax[c].nunique() for c in varying):
            out.append((str(family), varying[1], varying[0]))
    return out[:MAX_HEATMAPS]


def _where(rows: pd.DataFrame) -> str:
    return device_label(rows.iloc[0])


def make_plots(table: pd.DataFrame, groups: pd.DataFrame, notes: list[str]) -> list[Plot]:
    """Time vs FLOPs per machine and device, a roofline per machine, device and dtype, heatmaps: each
    declared as a job, then drawn (``plots.draw_all``: side by side where the host allows)."""
    from harness.report.plots import (  # deferred: matplotlib, only for plots
        Job,
        Style,
        draw_all,
        predicted_vs_measured,
        roofline,
        time_vs_flops,
    )
    jobs: list[Job] = []
    ok = table[table[R.STATUS] == "ok"]
    style = Style.of(table)
    for (mid, dev), rows in ok.groupby([R.MACHINE_ID, R.DEVICE], sort=True):
        rows = rows[rows[R.FLOPS].notna()]
        if rows.empty:                      # pytest-benchmark tests without counts: nothing to place
            notes.append(f"no time-vs-FLOPs plot or roofline for {dev} on machine {mid}: its rows store no FLOP "
                         "count")
            continue
        suites = ", ".join(sorted(rows[R.SUITE].astype(str).unique()))
        jobs.append(Job(time_vs_flops, (rows,), dict(name=f"time_vs_flops {dev} {mid}", style=style,
                                                     title=f"{suites}: time vs FLOPs on {_where(rows)}")))
        for dt, g in rows.groupby(R.DTYPE, sort=True):
            jobs.append(Job(roofline, (g,), dict(name=f"roofline {dev} {dt} {mid}", groups=groups, style=style,
                                                 title=f"roofline: {_where(g)}, {dt}")))
        if "predicted_s" in rows and pd.to_numeric(rows["predicted_s"], errors="coerce").gt(0).any():
            title = f"{suites}: predicted vs measured on {_where(rows)}"
            jobs.append(Job(predicted_vs_measured, (rows,), dict(name=f"predicted {dev} {mid}", style=style,
                                                                 title=title)))
    return draw_all(jobs + _heatmap_jobs(table), notes)


def _heatmap_jobs(table: pd.DataFrame) -> list[Job]:
    """One heatmap job per family swept over two axes and dtype (at most ``MAX_HEATMAPS``)."""
    from harness.report.plots import HEAT_LABELS, Job, heatmap  # deferred: matplotlib, only for plots
    out: list[Job] = []
    for family, x, y in heatmap_axes(table):
        fam = table[table[R.FAMILY] == family]
        for dtype, sub in fam.groupby(fam[R.DTYPE].astype(str), sort=True):   # one per dtype: never mixed
            axes = axes_frame(sub).reindex(columns=[x, y])
            sub = pd.concat([sub, axes.add_prefix("axis_")], axis=1)[axes.notna().all(axis=1)]
            value = "util_ceiling" if sub["util_ceiling"].notna().any() else "util_peak"
            if sub.empty or not sub[value].notna().any() or len(out) >= MAX_HEATMAPS:
                continue                    # no row on both axes, or no stored peak: nothing to colour
            out.append(Job(heatmap, (sub, f"axis_{x}", f"axis_{y}"), dict(
                name=f"heatmap {family} {dtype}", value=value,
                title=f"{family} ({dtype}): {HEAT_LABELS[value]} over {x} x {y}")))
    return out


def build_model(loaded: Loaded, *, with_plots: bool = True, top: int = 10,
                models: Sequence[Any] = ()) -> ReportModel:
    """The report model of stored rows (``harness.store.load_runs``); ``models``: efficiency models
    (``harness.predict``) whose predictions replace the roofline's in ``predicted_s`` where they apply."""
    if loaded.frame.empty:
        raise ValueError("no result rows" + (f" ({len(loaded.refused)} file(s) refused)" if loaded.refused else ""))
    table = derive(loaded.frame)
    if models:
        table = apply_models(table, models)
    groups = equal_flops_groups(table)
    found, unconfirmed = _findings(table, loaded.confirmations, groups, top)
    notes = [f"refused: {r}" for r in loaded.refused]
    legacy = sorted(table.loc[table[R.PEAK_SOURCE] == "not stored", R.RUN_ID].unique())
    if legacy:
        notes.append(f"{len(legacy)} run(s) of an older schema or from pytest-benchmark store no peaks: their "
                     f"utilization is unknown ({', '.join(legacy[:5])}{' ...' if len(legacy) > 5 else ''})")
    many = table[R.MACHINE_ID].nunique() > 1
    if many:
        notes.append("rows from several machines: findings and rooflines are per machine; the cross-device table "
                     "compares them explicitly")
    plots = make_plots(table, groups, notes) if with_plots else []
    return ReportModel(table=table, runs=_run_rows(loaded, table), machines=machines(table),
                       peaks=peak_table(table), findings=found, threads=tuple(thread_findings(table)),
                       groups=groups,
                       cross_device=cross_device(table) if many or table[R.DEVICE].nunique() > 1 else None,
                       plots=tuple(plots), notes=tuple(notes),
                       statuses={str(k): int(v) for k, v in table[R.STATUS].value_counts().items()},
                       labels={str(k): int(v) for k, v in table["label"].value_counts().items()},
                       stability=counts(table),
                       outliers=_outliers(table), unconfirmed=unconfirmed,
                       predictions=predictions_view(table, models=tuple(m.describe() for m in models)))


def _findings(table: pd.DataFrame, confirmations: pd.DataFrame, groups: pd.DataFrame,
              top: int) -> tuple[tuple[Finding, ...], tuple[Finding, ...]]:
    """(findings, unconfirmed): runs with interleaved confirmations take their findings from them
    (``harness.analysis.confirmed``); the others by medians and across processes (``findings``)."""
    confirmed_runs = set(confirmations["run_id"]) if not confirmations.empty else set()
    mine = table[R.RUN_ID].isin(confirmed_runs)
    if not mine.any():
        return tuple(findings(table, top=top, grouped=groups)), ()
    found, unconfirmed = interleaved_findings(table[mine], confirmations, top=top)
    rest = table[~mine]
    if not rest.empty:
        found += findings(rest, top=top - len(found))
    return tuple(sorted(found, key=lambda f: -f.spread)[:top]), tuple(unconfirmed)


def _outliers(table: pd.DataFrame) -> tuple[tuple[str, Any], ...]:
    """The slowest and fastest row relative to its roofline, per machine, device and dtype."""
    out: list[tuple[str, Any]] = []
    for _, g in table.groupby([R.MACHINE_ID, R.DEVICE, R.DTYPE], sort=True):
        out += outliers(g)
    return tuple(out)
