"""GPU clock and throttle monitoring around a measurement (NVML SM clock + clock-event reasons).

The measuring loop calls ``sample()`` after enqueuing each chunk of timed work and before
synchronising, so the clock is read while the device is busy.
"""

from __future__ import annotations

from typing import Any

from harness.devices.nvml import CLOCK_SM, THROTTLE_MASK, Nvml, nvml_session, reason_names, uuid_key
from harness.timing.measurement import ClockSummary

#: A sample whose SM clock is below this fraction of the maximum SM clock counts as throttled
#: (NVBench's ``--throttle-threshold`` default, 75 %).
THROTTLE_CLOCK_FRACTION = 0.75


class NvmlClockMonitor:
    """Collects (SM clock, reasons mask) samples for one GPU."""

    def __init__(self, nvml: Nvml, handle: Any) -> None:
        self.nvml, self.handle = nvml, handle
        self.limit_mhz: int | None = nvml.query("nvmlDeviceGetMaxClockInfo", handle, CLOCK_SM)
        self.clocks: list[int] = []
        self.mask = 0
        self.count = 0

    def sample(self) -> None:
        self.count += 1
        clock = self.nvml.query("nvmlDeviceGetClockInfo", self.handle, CLOCK_SM)
        if clock is not None:
            self.clocks.append(int(clock))
        mask = self.nvml.clock_reasons(self.handle)
        if mask is not None:
            self.mask |= mask

    def summary(self) -> ClockSummary | None:
        if self.count == 0:
            return None
        lo = min(self.clocks) if self.clocks else None
        slow = lo is not None and self.limit_mhz is not None and lo < THROTTLE_CLOCK_FRACTION * self.limit_mhz
        return ClockSummary(samples=self.count, sm_clock_min_mhz=lo, sm_clock_max_mhz=max(self.clocks, default=None),
                            sm_clock_limit_mhz=self.limit_mhz, reasons_mask=self.mask,
                            reasons=reason_names(self.mask), throttled=bool(self.mask & THROTTLE_MASK) or slow)


def nvml_handle(nvml: Nvml, index: int, uuid: object | None = None) -> Any:
    """The NVML handle of torch's CUDA device ``index``: matched by UUID when known (NVML's order
    ignores ``CUDA_VISIBLE_DEVICES``), by index otherwise."""
    handles = nvml.handles()
    if uuid is not None:
        for h in handles:
            if uuid_key(nvml.query("nvmlDeviceGetUUID", h)) == uuid_key(uuid):
                return h
    return handles[index] if index < len(handles) else None


def clock_monitor(device: str, nvml: Nvml | None = None) -> NvmlClockMonitor | None:
    """A monitor for ``cuda:N``, or ``None`` when NVML is not available (the row then has no clocks)."""
    nvml = nvml or nvml_session()
    if not nvml.ok:
        return None
    index = int(device.split(":")[1]) if ":" in device else 0
    uuid = None
    try:
        import torch
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    except Exception:
        uuid = None
    handle = nvml_handle(nvml, index, uuid)
    return NvmlClockMonitor(nvml, handle) if handle is not None else None
