"""Progress of a run on the console: a tqdm bar on a terminal, one log line per row otherwise.
Each line names the case by what distinguishes it (its sweep coordinates, layout and dtype)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from harness.record import Row, Status
from harness.units import seconds, si

log = logging.getLogger("harness.runner")


def describe(row: Row) -> str:
    """``groups-equal-flops conv2d c=128 g=4 nchw fp32``: the family, layer and sweep coordinates."""
    try:
        axes = json.loads(row.case.axes)
    except ValueError:
        axes = {}
    coords = " ".join(f"{k}={v}" for k, v in axes.items())
    return f"{row.key.family} {row.case.layer} {coords} {row.case.memory_format} {row.case.dtype}".replace("  ", " ")


def brief(row: Row) -> str:
    """One line per row: what it is and what came out."""
    what = describe(row)
    if row.status != Status.OK or row.timing is None or row.counts is None:
        return f"{what}: {row.status} ({(row.health.error or '')[:100]})"
    t = row.timing.time_median_s
    rate = row.counts.flops / t if t else 0.0
    return f"{what}: {seconds(t)}, {si(rate, 'FLOP/s')}{' (noisy)' if row.timing.noisy else ''}"


class Progress:
    """``update(row)`` after each row; ``close()`` at the end."""

    def __init__(self, total: int, label: str, bar: bool | None = None) -> None:
        self.total, self.done = total, 0
        self.bar: Any = None
        if sys.stderr.isatty() if bar is None else bar:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=label, unit="case", dynamic_ncols=True, leave=True)

    def update(self, row: Row) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(brief(row)[:60], refresh=False)
            self.bar.write(f"  {brief(row)}")
        else:
            log.info("[%d/%d] %s", self.done, self.total, brief(row))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
