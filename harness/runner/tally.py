"""What a run has stored so far: rows per status, and the seconds its processes spent measuring
(every process's warm-up and sampling of every row: stored in the run's metadata as
``measuring_s``, beside its wall time ``wall_s``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.record import Row
from harness.runner.repeats import measuring_s


@dataclass(slots=True)
class Tally:
    """Rows stored per status, and seconds spent measuring them."""

    statuses: Counter[str] = field(default_factory=Counter)
    measuring_s: float = 0.0

    def stored(self, row: Row, measured: Sequence[Row] = ()) -> None:
        """Count ``row`` (stored) and the measuring time of ``measured`` (the rows every process
        took of it; default: ``row`` itself)."""
        self.statuses[str(row.status)] += 1
        self.measuring_s += sum(measuring_s(r) for r in (measured or [row]))
