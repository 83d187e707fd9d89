"""Human-readable numbers for tables and sentences: SI prefixes (FLOP/s, B/s, s) and binary sizes."""

from __future__ import annotations


def si(v: float | None, unit: str = "") -> str:
    """``1.78e11, "FLOP/s"`` -> ``"178 GFLOP/s"``; three significant digits; ``None`` -> ``"-"``."""
    if v is None:
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {prefix}{unit}"
    return f"{v:.3g} {unit}"


def binary_bytes(v: int | None) -> str:
    """``268435456`` -> ``"256 MiB"``; ``None`` -> ``"-"``."""
    if v is None:
        return "-"
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if v >= scale:
            return f"{v / scale:g} {suffix}"
    return f"{v} B"
