"""Where a run writes: a new run directory, or the one ``--resume`` continues (the latest run of the
same suite, device type and shard started by this machine), and the checks that keep a resumed run
on the machine and device that started it."""

from __future__ import annotations

import logging
from pathlib import Path

from harness.errors import SpecError
from harness.record import Peaks, RunFiles, RunMeta, default_run_id
from harness.record.run import META_GLOB, PART_GLOB
from harness.runner.context import RunContext
from harness.store import StoreError, new_run_dir, read_metadata, read_run_meta, run_path
from harness.suite import Suite

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 1 <= K <= N <= 10000."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SpecError("--shard", text, "K/N with integers, e.g. 2/4") from None
    if not 1 <= k <= n <= 10_000:
        raise SpecError("--shard", text, "1 <= K <= N <= 10000")
    return k, n


def find_run(out: Path, suite: str, device_type: str, shard: tuple[int, int], machine_id: str | None = None
             ) -> Path | None:
    """The latest run directory of this suite and device type with this shard's metadata, started
    by this machine (``machine_id``; another machine's run is passed over, never resumed)."""
    for d in sorted(out.glob(f"{suite}-{device_type}-*"), key=lambda p: p.name, reverse=True):
        stored = read_run_meta(RunFiles.of(d, shard).meta) if d.is_dir() else None
        if stored is None or stored.suite != suite:      # no metadata, or `a` would resume `a-cpu-x`
            continue
        if machine_id is not None and stored.machine_id not in (None, machine_id):
            continue
        return d
    return None


def check_resumable(run_dir: Path, ctx: RunContext) -> None:
    """A run is resumed only by the machine and device that started it: rows never mix machines."""
    metas = [read_metadata(p) for p in run_dir.glob(PART_GLOB)] + [read_run_meta(p) for p in run_dir.glob(META_GLOB)]
    for meta in (m for m in metas if m is not None):
        mid, dev = meta.machine_id, meta.device
        if mid is not None and mid != ctx.machine.machine_id:
            raise StoreError(f"{run_dir}: started on machine {mid} ({meta.machine_name}); this is "
                             f"{ctx.machine.machine_id} ({ctx.machine.name}): start a new run instead of --resume")
        if mid is None:
            raise StoreError(f"{run_dir}: an older run (schema v1, no machine identity): start a new run")
        if dev is not None and dev != ctx.device.spec:
            raise StoreError(f"{run_dir}: measured on {dev}, not {ctx.device}: start a new run")


def stored_peaks(run_dir: Path, shard: tuple[int, int]) -> dict[str, Peaks] | None:
    """The peaks a resumed run stored when it started (every row of the run keeps them)."""
    meta: RunMeta | None = read_run_meta(RunFiles.of(run_dir, shard).meta)
    return dict(meta.peaks) if meta is not None and meta.peaks else None


def stored_threads(run_dir: Path, shard: tuple[int, int]) -> int | None:
    """The threads a resumed run measured with (its rows keep that setting; ``--threads auto`` then
    takes it rather than what is free now)."""
    meta: RunMeta | None = read_run_meta(RunFiles.of(run_dir, shard).meta)
    return meta.threads if meta is not None else None


def open_run_dir(suite: Suite, device_type: str, out: Path, resume: bool, shard: tuple[int, int],
                 run_id: str | None, start: float, machine_id: str) -> tuple[Path, bool]:
    """(run directory, whether it continues an earlier run)."""
    given = run_path(out, run_id) if run_id is not None else None      # SpecError for an unsafe id
    if resume:
        found = (given if given is not None and given.is_dir() else
                 None if given is not None else find_run(out, suite.name, device_type, shard, machine_id))
        if found is not None:
            return found, True
        log.warning("no earlier run of %s on %s to resume: starting a new one", suite.name, device_type)
    if given is not None and given.is_dir() and shard != (1, 1):
        return given, False                   # shards of one run share its directory
    return new_run_dir(out, run_id if run_id is not None else default_run_id(suite.name, device_type, start)), False
