"""NVML through ``nvidia-ml-py`` (``import pynvml``), loaded so that its absence is a reason, not a crash.

Every query goes through ``Nvml.query``: an unsupported metric on one SKU is ``None``, not an
exception (nvidia-ml-py raises an ``NVMLError_*`` subclass per call; see
shared/research/hardware.md §1 for the calls and their units).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

#: NVML constants (nvidia-ml-py ``NVML_CLOCK_SM`` etc.), spelled out so fakes need not define them.
CLOCK_SM, CLOCK_MEM, TEMPERATURE_GPU = 1, 2, 0

#: Clock-event (throttle) reason bits, nvmlClocksEventReason* / nvmlClocksThrottleReason*.
REASONS: dict[int, str] = {
    0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x10: "sync_boost",
    0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clock",
}
#: The reasons that mean the clock was held down by power or heat. Recorded with a row, not its
#: verdict: a Hopper board sits at its software power cap (0x4) under sustained tensor work, and a row
#: is ``throttled`` only when the clock measured over a trial is low (``harness.backends.cuda``).
THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
#: The GPU was idle when NVML was asked: the clock it reports then is not the clock work ran at.
GPU_IDLE = 0x1


def reason_names(mask: int) -> tuple[str, ...]:
    """Names of the bits set in a clock-event reasons mask (unknown bits as hex)."""
    names = [name for bit, name in REASONS.items() if mask & bit]
    rest = mask & ~sum(REASONS)
    if rest:
        names.append(hex(rest))
    return tuple(names)


class Nvml:
    """An initialised NVML session, or ``error`` saying why there is none.

    Args:
        module: the ``pynvml`` module (tests pass a fake); default: import it.
    """

    def __init__(self, module: ModuleType | Any | None = None) -> None:
        self.mod: Any = None
        self.error: str | None = None
        try:
            mod = module if module is not None else importlib.import_module("pynvml")
        except ImportError:
            self.error = "nvidia-ml-py is not installed (pip install nvidia-ml-py): no NVML data"
            return
        try:
            mod.nvmlInit()
        except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded / anything ctypes raises
            self.error = f"NVML unavailable ({type(e).__name__}: {e}): no NVIDIA driver data"
            return
        self.mod = mod

    @property
    def ok(self) -> bool:
        return self.mod is not None

    def query(self, name: str, *args: Any) -> Any:
        """``pynvml.<name>(*args)``, or ``None`` if NVML is off, the call is missing or it raises."""
        if self.mod is None:
            return None
        fn = getattr(self.mod, name, None)
        if fn is None:
            return None
        try:
            value = fn(*args)
        except Exception:
            return None
        return value.decode() if isinstance(value, bytes) else value

    def handles(self) -> list[Any]:
        count = self.query("nvmlDeviceGetCount") or 0
        return [h for h in (self.query("nvmlDeviceGetHandleByIndex", i) for i in range(count)) if h is not None]

    def handle_for_uuid(self, uuid: object, handles: list[Any] | None = None) -> Any | None:
        """The GPU (one of ``handles``, default all) whose UUID is ``uuid``, or the GPU a MIG
        instance with that UUID lives on (clocks are the physical GPU's); ``None`` when none matches."""
        key = uuid_key(uuid)
        handles = self.handles() if handles is None else handles
        for h in handles:
            if uuid_key(self.query("nvmlDeviceGetUUID", h)) == key:
                return h
        for h in handles:
            for i in range(self.query("nvmlDeviceGetMaxMigDeviceCount", h) or 0):
                mig = self.query("nvmlDeviceGetMigDeviceHandleByIndex", h, i)
                if mig is not None and uuid_key(self.query("nvmlDeviceGetUUID", mig)) == key:
                    return h
        return None

    def clock_reasons(self, handle: Any) -> int | None:
        """Current clock-event reasons mask (new name first, the deprecated throttle name as fallback)."""
        mask = self.query("nvmlDeviceGetCurrentClocksEventReasons", handle)
        if mask is None:
            mask = self.query("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        return None if mask is None else int(mask)


@functools.cache
def nvml_session() -> Nvml:
    """The process's NVML session (NVML init is reference-counted; one per process is enough)."""
    return Nvml()


def uuid_key(uuid: object) -> str:
    """UUIDs from NVML (``GPU-xxxxxxxx-...``, MIG instances ``MIG-xxxxxxxx-...``) and torch
    (``xxxxxxxx-...``) in one comparable form."""
    return str(uuid).lower().removeprefix("gpu-").removeprefix("mig-")
