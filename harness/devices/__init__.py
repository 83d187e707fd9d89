"""Facts about the machine: CPU and GPU description (``cpu``, ``gpu``, ``nvml``), theoretical peaks
(``peaks``) and the identity a run records (``identity``). Nothing here times anything: the
backends (``harness.backends``) time, calibration (``harness.ceilings.calibrate``) measures ceilings."""

from __future__ import annotations

from dataclasses import dataclass

from harness.devices.cpu import CpuDescription, describe_cpu
from harness.devices.gpu import GpuDescription, GpuReport, describe_gpus
from harness.devices.identity import MachineInfo, describe_machine_identity
from harness.devices.peaks import DATASHEETS, Peak, datasheet_peak


@dataclass(frozen=True, slots=True)
class MachineDescription:
    """CPU and GPUs of this machine, as ``layerbench devices`` shows them."""

    cpu: CpuDescription
    gpu: GpuReport


def describe_machine(check_load: bool = True) -> MachineDescription:
    """Describe the CPU (with its load, unless ``check_load`` is false) and every NVIDIA GPU."""
    return MachineDescription(cpu=describe_cpu(check_load=check_load), gpu=describe_gpus())


__all__ = ["MachineDescription", "describe_machine", "CpuDescription", "describe_cpu", "GpuDescription",
           "GpuReport", "describe_gpus", "Peak", "DATASHEETS", "datasheet_peak", "MachineInfo",
           "describe_machine_identity"]
