"""Reports over stored rows: the model (``model``: data), plots (``plots``: rendered bytes),
cell formatting (``format``) and renderers (``render``: Markdown, HTML, JSON, CSV, Parquet)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.store import load_runs


@dataclass(frozen=True, slots=True)
class Report:
    """What ``build_report`` wrote."""

    html: Path | None
    markdown: Path | None
    files: tuple[Path, ...]
    findings: tuple[str, ...]
    refused: tuple[str, ...]


def build_report(paths: list[str | Path] | str | Path, out_dir: str | Path, formats: tuple[str, ...] = (
        "html", "markdown"), top: int = 10) -> Report:
    """Load stored runs and write the report in each of ``formats`` under ``out_dir``."""
    from harness.report.model import build_model
    from harness.report.render import render
    loaded = load_runs(paths)
    model = build_model(loaded, top=top)
    out = Path(out_dir)
    files: list[Path] = []
    for fmt in formats:
        files += render(model, fmt, out)
    return Report(html=out / "report.html" if "html" in formats else None,
                  markdown=out / "report.md" if "markdown" in formats else None, files=tuple(dict.fromkeys(files)),
                  findings=tuple(f.text for f in model.findings), refused=tuple(loaded.refused))
