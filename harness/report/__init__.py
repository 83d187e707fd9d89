"""Every human output, in one place: models of what to show (``model``: the report of stored rows;
``compare``: comparisons and regression checks; ``site``: the history site; ``machine``: the devices
and their ceilings) rendered by the functions registered for them (``registry``: HTML, Markdown,
JSON, CSV, Parquet files; the end-of-run ``summary``, tables and JSON on the console), with one
formatting of cells and tables (``format``), plots as rendered bytes (``plots``) and
pytest-benchmark JSON (``pytest_json``). Importing this package registers every renderer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report import compare, machine, render, site, summary  # noqa: F401  (each registers its renderers)
from harness.report.model import ReportModel, build_model
from harness.report.registry import formats, render_text
from harness.report.registry import render as render_to
from harness.store import Loaded
from harness.store.dataset import load_any


@dataclass(frozen=True, slots=True)
class Report:
    """What ``build_report`` wrote."""

    html: Path | None
    markdown: Path | None
    files: tuple[Path, ...]
    findings: tuple[str, ...]
    refused: tuple[str, ...]
    table: Any = None            # the derived rows the report shows (``harness.analysis.derive``)


def build_report(runs: Loaded | Iterable[str | Path] | str | Path, out_dir: str | Path, formats: tuple[str, ...] = (
        "html", "markdown"), top: int = 10, models: Sequence[Any] = ()) -> Report:
    """Write the report of stored runs (rows already loaded, or paths, globs and dataset URLs as
    ``harness.store.dataset.load_any`` takes them) in each of ``formats`` under ``out_dir``;
    ``models``: efficiency models whose predictions the report sets against the measured times."""
    loaded = runs if isinstance(runs, Loaded) else load_any(runs)
    model = build_model(loaded, top=top, models=models)
    out = Path(out_dir)
    files: list[Path] = []
    for fmt in formats:
        files += render_to(model, fmt, out)
    return Report(html=out / "report.html" if "html" in formats else None,
                  markdown=out / "report.md" if "markdown" in formats else None, files=tuple(dict.fromkeys(files)),
                  findings=tuple(f.text for f in model.findings), refused=tuple(loaded.refused), table=model.table)


__all__ = ["Report", "ReportModel", "build_report", "build_model", "render_to", "render_text", "formats"]
