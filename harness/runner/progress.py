"""Progress of a run on the console: a tqdm bar on a terminal, one log line per row otherwise.
Each line names the case by what distinguishes it (its sweep coordinates, layout and dtype)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from harness.record import PASSES, Row, Stability, Status
from harness.suite import Suite
from harness.units import seconds, si

log = logging.getLogger("harness.runner")


def varying_names(suite: Suite) -> dict[str, frozenset[str]]:
    """Per family, the sweep names that tell its cases apart: axes with more than one value, zipped
    names, the solved axis, constants that differ between the family's sweeps, and ``LAYOUT`` when
    the family has more than one memory format."""
    out: dict[str, set[str]] = {}
    consts: dict[str, list[dict[str, Any]]] = {}
    formats: dict[str, set[str]] = {}
    for sw in suite.sweeps:
        formats.setdefault(sw.family, set()).update(sw.memory_formats)
        names = out.setdefault(sw.family, set())
        names.update(k for k, v in sw.axes if len(v) > 1)
        names.update(k for k, _ in sw.zipped)
        if sw.solve is not None and names:
            names.add(sw.solve.axis)
        consts.setdefault(sw.family, []).append(dict(sw.params))
    for family, params in consts.items():
        keys = {k for p in params for k in p}
        out[family].update(k for k in keys if len({repr(p.get(k)) for p in params}) > 1)
    for family, fmts in formats.items():
        if len(fmts) > 1:
            out[family].add(LAYOUT)
    return {f: frozenset(n) for f, n in out.items()}


#: The pass a line leaves unsaid.
FORWARD = PASSES[0]
#: The name ``varying_names`` gives a family's memory format when it varies.
LAYOUT = "memory_format"
#: The layout a line leaves unsaid unless the family varies it.
DEFAULT_LAYOUTS = ("nchw", "contiguous")       # "contiguous": rows with no image layout


def describe(row: Row, varying: Mapping[str, frozenset[str]] | None = None) -> str:
    """``groups-equal-flops conv2d c=128 g=4 fp32``: the family, the layer, the sweep coordinates
    that vary within the family (all of them when ``varying`` is not given), the layout when the
    family varies it or it is not ``nchw`` (always when ``varying`` is not given), and the dtype; a
    pass other than the forward and its gradients last (``backward input,weight``)."""
    try:
        axes = json.loads(row.case.axes)
    except (TypeError, ValueError):
        axes = {}
    keep = varying.get(row.key.family) if varying is not None else None
    coords = " ".join(f"{k}={v}" for k, v in axes.items() if keep is None or k in keep)
    fmt = row.case.memory_format
    show = keep is None or LAYOUT in keep or fmt not in DEFAULT_LAYOUTS
    timed = (row.case.pass_, row.case.grads) if row.case.pass_ != FORWARD else ()
    parts = (row.key.family, row.case.layer, coords, fmt if show else None, row.case.dtype, *timed)
    return " ".join(str(x) for x in parts if x)


def brief(row: Row, varying: Mapping[str, frozenset[str]] | None = None) -> str:
    """One line per row: what it is and what came out."""
    what = describe(row, varying)
    if row.status != Status.OK or row.timing is None or row.counts is None:
        return f"{what}: {row.status} ({(row.health.error or '')[:100]})"
    t = row.timing.time_median_s
    rate = row.counts.flops / t if t else 0.0
    return f"{what}: {seconds(t)}, {si(rate, 'FLOP/s')}{_verdict(row)}"


def _verdict(row: Row) -> str:
    """`` (bimodal)``: the verdict of this process's samples where it is not ``stable`` (the row's
    own, with one process; under ``--processes`` the case's comes once every process has run), or
    `` (noisy)`` for a row without one whose samples spread over the noise rule."""
    stability = row.health.stability
    if stability is not None:
        return "" if stability == Stability.STABLE.value else f" ({stability})"
    return " (noisy)" if row.timing is not None and row.timing.noisy else ""


class Progress:
    """``update(row)`` after each row (under ``--processes N``: after each process's row of a case,
    counted as a *measurement*, N per case); ``close()`` at the end."""

    def __init__(self, cases: int, label: str, bar: bool | None = None, suite: Suite | None = None,
                 processes: int = 1) -> None:
        self.total, self.done = cases * processes, 0
        self.varying = varying_names(suite) if suite is not None else None
        self.bar: Any = None
        if sys.stderr.isatty() if bar is None else bar:
            from tqdm import tqdm  # deferred: only a terminal shows a bar
            unit = "case" if processes == 1 else "measurement"
            desc = label if processes == 1 else f"{label} ({cases} cases x {processes} processes)"
            self.bar = tqdm(total=self.total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)

    def update(self, row: Row, where: str = "") -> None:
        """Count ``row`` and show its line; ``where`` names the process that measured it
        (``process 2/3`` under ``--processes``), shown before the line."""
        self.done += 1
        line = f"{where}: {brief(row, self.varying)}" if where else brief(row, self.varying)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(describe(row, self.varying)[:60], refresh=False)
            self.bar.write(f"  {line}")
        else:
            log.info("[%d/%d] %s", self.done, self.total, line)

    def extend(self, measurements: int) -> None:
        """``measurements`` more to come (the extra processes of cases measured beside a slow host)."""
        self.total += measurements
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
