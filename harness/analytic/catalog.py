"""Every counting convention by name: the canonical one (``conventions``) and the presets that
reproduce other tools' counts (``presets``, registered when it is imported, here)."""

from __future__ import annotations

from harness.analytic import presets  # noqa: F401  (registers the presets)
from harness.analytic.conventions import REGISTERED, Convention
from harness.errors import SpecError


def get_convention(name: str | Convention) -> Convention:
    """The convention called ``name`` (``canonical``, ``thop``, ``ptflops``, ``fvcore``,
    ``torchstat``, ``torchinfo``, ``flop_counter``)."""
    if isinstance(name, Convention):
        return name
    if name not in REGISTERED:
        raise SpecError("convention", name, "one of " + ", ".join(sorted(REGISTERED)))
    return REGISTERED[name]


def conventions() -> list[str]:
    """The names of every convention."""
    return sorted(REGISTERED)
