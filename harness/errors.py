"""Domain exceptions: every message names the field, the value and what was expected."""

from __future__ import annotations

from typing import Any


class LayerbenchError(Exception):
    """Base class of every error layerbench raises on purpose."""


class SpecError(LayerbenchError, ValueError):
    """An invalid layer parameter, input shape or dtype, caught before any tensor is allocated.

    Args:
        field: the parameter's name as the user wrote it (``groups``, ``input``, ``dtype``).
        value: the offending value.
        expected: what a valid value looks like, in words.
        where: the layer or file the field belongs to (``conv2d``, ``suites/conv.toml``).
    """

    def __init__(self, field: str, value: Any, expected: str, where: str | None = None) -> None:
        self.field, self.value, self.expected, self.where = field, value, expected, where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{field}={shown(value)} is invalid: expected {expected}")


#: Longest value an error message shows (a 10 MB string is shown by its start, on one line).
MAX_SHOWN = 120


def shown(value: Any, limit: int = MAX_SHOWN) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (``...`` marks a cut)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


#: Longest value a refused file's line shows (the file, row and field come first).
SHORT_SHOWN = 60


def short(value: Any) -> str:
    """``shown`` cut to ``SHORT_SHOWN`` characters: the value in a refused file's one line."""
    return shown(value, SHORT_SHOWN)


class CountError(LayerbenchError, RuntimeError):
    """The model's forward pass could not be traced on fake tensors."""


class DeviceLost(LayerbenchError, RuntimeError):
    """The run's device stopped answering after an error (a sticky CUDA error: an illegal memory
    access, a device-side assert): every later case of this process would fail with it."""
