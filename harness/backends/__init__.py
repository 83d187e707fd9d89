"""Device backends: one implementation of ``Backend`` per device type, and the ``Device`` value a
device spec resolves to, once per run (``resolve_device``).

``cpu`` and ``cuda`` ship; their modules load on first use, so knowing which types exist
(``backend_types``) imports nothing heavy. A new backend (``xpu``, ``mps``) is a module that builds
its backend object and calls ``register`` (docs/backends.md).
"""

from __future__ import annotations

import importlib

from harness.backends.base import (
    Backend,
    CalibrationSizes,
    ClockSummary,
    Device,
    MemoryLevel,
    Monitor,
    SampleTimer,
    TimingContext,
    with_variants,
)
from harness.errors import SpecError

#: The backends that ship: device type -> (module, class), imported on first use.
BUILTIN = {"cpu": ("harness.backends.cpu", "CpuBackend"), "cuda": ("harness.backends.cuda", "CudaBackend")}
_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Make ``backend`` the one for its ``type``; a second one for the same type is an error."""
    if backend.type in _BACKENDS:
        raise RuntimeError(f"a backend for {backend.type!r} is already registered")
    _BACKENDS[backend.type] = backend
    return backend


def backend_types() -> tuple[str, ...]:
    """Device types with a backend (``cpu``, ``cuda``, and any registered), without importing them."""
    return tuple(dict.fromkeys([*BUILTIN, *_BACKENDS]))


def device_type(spec: str | Device) -> str:
    """The type part of a device spec (``cuda:1`` -> ``cuda``), as written: nothing is resolved."""
    return spec.type if isinstance(spec, Device) else str(spec).split(":", 1)[0]


def get_backend(spec: str | Device) -> Backend:
    """The backend of a device spec or type (``cpu``, ``cuda``, ``cuda:1``): ``SpecError`` naming the
    types there are for any other."""
    if isinstance(spec, Device):
        return spec.backend
    kind = device_type(spec)
    if kind not in _BACKENDS and kind in BUILTIN:
        module, name = BUILTIN[kind]
        register(getattr(importlib.import_module(module), name)())
    if kind not in _BACKENDS:
        raise SpecError("device", str(spec), " or ".join(backend_types()) + " (a device type with a backend)")
    return _BACKENDS[kind]


def resolve_device(spec: str | Device) -> Device:
    """The ``Device`` a spec names on this machine (``SpecError`` when there is none); a ``Device``
    is returned as it is. A run calls this once and carries the value."""
    if isinstance(spec, Device):
        return spec
    return get_backend(spec).resolve(str(spec))


__all__ = ["Backend", "Device", "TimingContext", "CalibrationSizes", "MemoryLevel", "ClockSummary", "Monitor",
           "SampleTimer", "register", "get_backend", "resolve_device", "backend_types", "device_type",
           "with_variants", "BUILTIN"]
