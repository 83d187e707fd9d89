"""Human-readable numbers for tables and sentences: SI prefixes (FLOP/s, B/s), times in automatic
units (ns, us, ms, s), percentages, binary sizes. Three significant digits throughout; a value is
rounded before its prefix is chosen, so 999.7e9 reads ``1 T...``, never ``1e+03 G...``."""

from __future__ import annotations

import math

_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
_TIME = ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns"))


def _missing(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def _scaled(v: float, scales: tuple[tuple[float, str], ...]) -> str:
    """``v`` at three significant digits in the largest scale it reaches after rounding."""
    r = float(f"{v:.3g}")
    for scale, prefix in scales:
        if abs(r) >= scale:
            return f"{r / scale:.3g} {prefix}"
    scale, prefix = scales[-1]
    return f"{r / scale:.3g} {prefix}"


def si(v: float | None, unit: str = "") -> str:
    """``1.78e11, "FLOP/s"`` -> ``"178 GFLOP/s"``; three significant digits; ``None``/NaN/inf -> ``"-"``."""
    if _missing(v):
        return "-"
    return (_scaled(float(v), _SI) + unit).rstrip()


def seconds(v: float | None) -> str:
    """``0.0001017`` -> ``"102 us"``; ``2.5`` -> ``"2.5 s"``; ``3e-8`` -> ``"30 ns"``; three significant
    digits; ``None``/NaN/inf -> ``"-"``."""
    if _missing(v):
        return "-"
    return _scaled(float(v), _TIME).rstrip() if v else "0 s"


def percent(v: float | None, digits: int = 1) -> str:
    """``0.123`` -> ``"12.3 %"``; ``None``/NaN -> ``"-"``."""
    if _missing(v):
        return "-"
    return f"{100 * v:.{digits}f} %"


def percent3(v: float | None) -> str:
    """A fraction as a percentage at three significant digits: ``0.1234`` -> ``"12.3 %"``, ``0.004567``
    -> ``"0.457 %"``, ``1.234`` -> ``"123 %"``; ``None``/NaN -> ``"-"``."""
    if _missing(v):
        return "-"
    return f"{float(f'{100 * v:.3g}'):g} %"


def binary_bytes(v: int | None) -> str:
    """``268435456`` -> ``"256 MiB"``; ``None`` -> ``"-"``."""
    if v is None:
        return "-"
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if v >= scale:
            return f"{v / scale:.4g} {suffix}"
    return f"{v} B"


def micros(v: float) -> str:
    """Seconds as a plain number of microseconds, four significant digits and never an exponent
    (``1450``, ``16030``, ``2.5``): the slash-joined medians of a verdict's reason, in ``us``."""
    us = v * 1e6
    return f"{us:.0f}" if abs(us) >= 1000 else f"{us:.4g}"
