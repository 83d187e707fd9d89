"""Device backends: one implementation of ``Backend`` per device type, found by ``get_backend``.

``cpu`` and ``cuda`` ship; a new one (``xpu``, ``mps``) is a module that builds its backend object
and calls ``register`` (README, "Backends").
"""

from __future__ import annotations

import torch

from harness.backends.base import (
    Backend,
    CalibrationSizes,
    ClockSummary,
    MemoryLevel,
    Monitor,
    SampleTimer,
    TimingContext,
)
from harness.backends.cpu import CpuBackend, CpuTimer
from harness.backends.cuda import CudaBackend
from harness.errors import SpecError

_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Make ``backend`` the one for its ``type``; a second one for the same type is an error."""
    if backend.type in _BACKENDS:
        raise RuntimeError(f"a backend for {backend.type!r} is already registered")
    _BACKENDS[backend.type] = backend
    return backend


def backend_types() -> tuple[str, ...]:
    """Device types with a backend (``cpu``, ``cuda``, ...)."""
    return tuple(_BACKENDS)


def get_backend(device: str | torch.device) -> Backend:
    """The backend of ``device`` (``cpu``, ``cuda``, ``cuda:1``)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = str(device)
    if kind not in _BACKENDS:
        raise SpecError("device", str(device), " or ".join(_BACKENDS) + " (a device type with a backend)")
    return _BACKENDS[kind]


register(CpuBackend())
register(CudaBackend())

__all__ = ["Backend", "TimingContext", "CalibrationSizes", "MemoryLevel", "ClockSummary", "Monitor", "SampleTimer",
           "CpuTimer", "register", "get_backend", "backend_types"]
