"""Which Ray tasks a suite becomes, and the resources each asks for.

- GPU (``cuda``): one task per GPU (``num_gpus=1``), so each shard owns its device.
- CPU: one task per node: each asks for as many CPUs as the smallest node has, so nothing else
  Ray schedules runs beside a CPU measurement (nodes larger than the smallest could host two:
  give CPU nodes one custom resource each and name it in ``devices``).
- ``devices=["H100", "A100"]``: the whole suite once per device type, its shards placed through
  the Ray custom resource of that name (nodes started with ``ray start --resources '{"H100": 8}'``),
  one task per unit of the resource: the cross-device comparison in one command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.backends import get_backend
from harness.errors import LayerbenchError, SpecError

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class FleetError(LayerbenchError, RuntimeError):
    """The cluster cannot run what was asked (no such resource, Ray missing); one line says what to do."""


@dataclass(frozen=True, slots=True)
class Node:
    """What one alive Ray node offers: CPUs, GPUs and custom resources (counts)."""

    cpus: float
    gpus: float = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Placement:
    """One task: its shard (K, N), the device type label it runs for (``""`` without ``--devices``)
    and the Ray options it is submitted with."""

    shard: tuple[int, int]
    label: str
    options: Mapping[str, Any]


def parse_devices(text: str | None) -> list[str]:
    """``"H100,A100"`` -> ``["H100", "A100"]``; names as Ray custom resources accept them."""
    if not text:
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    for n in names:
        if not _NAME.match(n):
            raise SpecError("--devices", n, "device type names of 1-64 letters, digits, '.', '_' or '-', "
                            "comma-separated (the Ray custom resources of the nodes)")
    if len(set(names)) != len(names):
        raise SpecError("--devices", text, "distinct names")
    return names


def plan(nodes: Sequence[Node], device_type: str, devices: Sequence[str] = (), shards: int | None = None) -> list[
        Placement]:
    """The tasks of one suite on this cluster (see the module docstring); ``FleetError`` when the
    cluster has no place for them. ``shards`` overrides the number of tasks per device type."""
    if not nodes:
        raise FleetError("the Ray cluster has no alive node")
    gpu = get_backend(device_type).accelerator        # one task per device the scheduler places
    groups: list[tuple[str, int, dict[str, Any]]] = []
    for name in devices:
        holders = [n for n in nodes if n.resources.get(name, 0) >= 1]
        units = int(sum(n.resources.get(name, 0) for n in holders))
        if not units:
            raise FleetError(f"--devices {name}: no node of the Ray cluster offers the resource {name!r}; start its "
                             f"nodes with: ray start --resources '{{\"{name}\": <devices per node>}}'")
        opts: dict[str, Any] = {"resources": {name: 1}}
        opts.update({"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": min(n.cpus for n in holders)})
        groups.append((name, units, opts))
    if not devices:
        if gpu:
            units = int(sum(n.gpus for n in nodes))
            if not units:
                raise FleetError(f"--device {device_type}: the Ray cluster has no GPU (num_gpus 0 on every node)")
            groups.append(("", units, {"num_gpus": 1, "num_cpus": 1}))
        else:
            cpu_nodes = [n for n in nodes if n.cpus >= 1]
            if not cpu_nodes:
                raise FleetError("the Ray cluster has no node with a CPU")
            groups.append(("", len(cpu_nodes), {"num_cpus": min(n.cpus for n in cpu_nodes)}))
    out = []
    for label, units, opts in groups:
        n = shards or units
        out += [Placement((k, n), label, opts) for k in range(1, n + 1)]
    return out
