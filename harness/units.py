"""Human-readable numbers for tables and sentences: SI prefixes (FLOP/s, B/s), times in automatic
units, binary sizes."""

from __future__ import annotations

import math


def si(v: float | None, unit: str = "") -> str:
    """``1.78e11, "FLOP/s"`` -> ``"178 GFLOP/s"``; three significant digits; ``None``/NaN -> ``"-"``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}".rstrip()


def seconds(v: float | None) -> str:
    """``0.0001017`` -> ``"102 us"``; ``2.5`` -> ``"2.5 s"``; three significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v / 1e-9:.3g} ns"


def percent(v: float | None, digits: int = 1) -> str:
    """``0.123`` -> ``"12.3 %"``; ``None``/NaN -> ``"-"``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.{digits}f} %"


def binary_bytes(v: int | None) -> str:
    """``268435456`` -> ``"256 MiB"``; ``None`` -> ``"-"``."""
    if v is None:
        return "-"
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if v >= scale:
            return f"{v / scale:g} {suffix}"
    return f"{v} B"
