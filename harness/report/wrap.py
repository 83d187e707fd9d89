"""Wrapping the terminal's lines: a number stays on the line of its unit ("22.3 %", "1.01 ms",
"549 kB"), and no line of a summary runs past a terminal of ``MAX_WIDTH`` columns."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable

#: The width sentences are wrapped to (characters).
WIDTH = 100
#: No line a renderer returns is wider than this (a 120-column terminal).
MAX_WIDTH = 120

_NBSP = "\u00a0"
#: A number followed by a space and its unit: %, time (ns..s), bytes, hertz, FLOPs.
_UNIT = re.compile(r"(\d) (?=%|[munk]?s\b|[kMGT]?i?B\b|[kMG]?Hz\b|[kMGTP]?FLOP)")


def wrap(text: str, width: int = WIDTH, initial_indent: str = "", subsequent_indent: str = "") -> list[str]:
    """``textwrap.wrap`` that never breaks between a number and its unit."""
    glued = _UNIT.sub(lambda m: m.group(1) + _NBSP, text)
    return [line.replace(_NBSP, " ") for line in
            textwrap.wrap(glued, width, initial_indent=initial_indent, subsequent_indent=subsequent_indent)]


def fit(lines: Iterable[str], width: int = MAX_WIDTH) -> list[str]:
    """Every line of ``lines`` within ``width`` columns: a longer one is wrapped, its continuation
    indented two more than the line itself (a table row stays one line when it fits)."""
    out: list[str] = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out += wrap(line.strip(), width, initial_indent=indent, subsequent_indent=indent + "  ")
    return out
