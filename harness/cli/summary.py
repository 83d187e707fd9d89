"""The end of a run: write its report and print a compact summary of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def report_and_summary(summary: Any, out: str | Path) -> None:
    from harness.report import build_report
    rep = build_report([summary.run_dir], out)
    for i, text in enumerate(rep.findings[:3], 1):
        print(f"{i}. {text}")
    print(f"report: {rep.html}")
