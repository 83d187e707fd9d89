"""Reports over stored rows: the model (``model``: data), plots (``plots``: rendered bytes),
cell formatting (``format``) and renderers (``render``: Markdown, HTML, JSON, CSV, Parquet)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.store import Loaded


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
        "html", "markdown"), top: int = 10) -> Report:
    """Write the report of stored runs (rows already loaded, or paths, globs and dataset URLs as
    ``harness.store.dataset.load_any`` takes them) in each of ``formats`` under ``out_dir``."""
    from harness.report.model import build_model
    from harness.report.render import render
    if isinstance(runs, Loaded):
        loaded = runs
    else:
        from harness.store.dataset import load_any
        loaded = load_any(runs)
    model = build_model(loaded, top=top)
    out = Path(out_dir)
    files: list[Path] = []
    for fmt in formats:
        files += render(model, fmt, out)
    return Report(html=out / "report.html" if "html" in formats else None,
                  markdown=out / "report.md" if "markdown" in formats else None, files=tuple(dict.fromkeys(files)),
                  findings=tuple(f.text for f in model.findings), refused=tuple(loaded.refused), table=model.table)
