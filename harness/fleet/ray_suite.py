"""``run_on_ray``: a suite's shards as Ray tasks, each staging its run on its node and publishing the
committed shard to the dataset; the driver follows the cases measured across the cluster.

A task that fails or whose worker dies (a preempted node, a killed process) is retried by Ray
(``max_retries``, ``retry_exceptions``). A retry on the same node resumes the staged run (the
journal holds every row measured before the kill; ``run_suite(resume=True)`` measures only the
others); a retry on another node measures the shard again. Either way the shard's file in the
dataset has a name fixed by run and shard, so it is replaced, never duplicated, and readers
deduplicate on ``(run_id, row_id)``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from harness import record
from harness.backends import device_type, get_backend
from harness.fleet.plan import FleetError, Node, Placement, plan
from harness.record import RunFiles
from harness.runner import run_suite
from harness.runner.loop import DUPLICATE, resolve_repeats
from harness.store.dataset import publish, staging_dir
from harness.suite import Suite
from harness.timing import measure

log = logging.getLogger(__name__)

#: Ray retries of a task whose worker died or that raised (then it resumes from its journal).
MAX_RETRIES = 3


@dataclass(frozen=True, slots=True)
class ShardTask:
    """Everything one task needs: the suite, where to publish, the shard and the run settings."""

    suite: Suite
    dataset: str
    run_id: str
    shard: tuple[int, int]
    device: str = "cpu"
    dtypes: tuple[str, ...] | None = None
    threads: int | None = None
    mode: str | None = None
    calibrate: str = "missing"
    stage: str | None = None       # staging folder on the node (default: harness.store.dataset.staging_dir)
    profile: bool = True
    processes: int | None = None    # fresh worker processes per case (run_suite's ``processes``)
    omp_wait: str | None = None     # OMP_WAIT_POLICY in those workers
    worker_start: str = "fork-server"   # how those workers start (run_suite's ``worker_start``)


@dataclass(frozen=True, slots=True)
class ShardResult:
    """What a finished task reports: the published file, the statuses, the host and the rows that
    were already staged (by an attempt that was killed)."""

    run_id: str
    shard: tuple[int, int]
    published: str
    statuses: dict[str, int]
    already_done: int
    host: str
    machine_id: str


@dataclass(frozen=True, slots=True)
class FleetSummary:
    """The whole fan-out: one result per task, the wall time, and the cases the driver's progress
    counted across the cluster (once every task has finished: the rows the shards hold)."""

    results: tuple[ShardResult, ...]
    seconds: float
    run_ids: tuple[str, ...] = field(default=())
    counted: int = 0


class _CaseCounter(logging.Handler):
    """Reports how many cases this task has measured to the driver's tally, from the runner's
    per-record log lines (``[done/total] ...``). With ``--processes N`` the runner logs one line per
    process record, N per case, so N lines make one case: the tally counts cases, as the rows the
    shard will store, never N times each. Each report is the task's count so far (the tally keeps
    the highest per shard), so a retried task never counts its shard twice."""

    def __init__(self, tally: Any, key: str, per_case: int) -> None:
        super().__init__(logging.INFO)
        self.tally, self.key, self.per_case = tally, key, max(1, per_case)
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("[%d/%d]"):
            self.records += 1
            if self.records % self.per_case == 0:
                self.tally.report.remote(self.key, self.records // self.per_case)


def _records_per_case(task: ShardTask) -> int:
    """How many records (progress lines) the runner makes of one case: its worker processes, else 1."""
    return resolve_repeats(task.suite, task.processes, task.omp_wait).processes


def shard_key(run_id: str, shard: tuple[int, int]) -> str:
    """The tally's name for one shard of one run."""
    return f"{run_id}--{shard[0]}of{shard[1]}"


def _settle(ref: Any) -> None:
    """Wait for a report to the tally actor (so the driver reads it once the task's result is in)."""
    try:
        import ray  # deferred: the optional extra 'fleet'
    except ImportError:
        return
    if isinstance(ref, ray.ObjectRef):
        ray.get(ref)


def run_shard(task: ShardTask, measure_fn: Callable[..., Any] | None = None, tally: Any = None) -> ShardResult:
    """Run one shard (resuming what an earlier attempt staged) and publish it to the dataset."""
    k, n = task.shard
    stage = Path(task.stage or staging_dir(task.dataset)) / f"{task.run_id}--{k}of{n}"
    resume = RunFiles.of(stage / task.run_id, task.shard).meta.exists()
    runner_log = logging.getLogger("harness.runner")
    key = shard_key(task.run_id, task.shard)
    handler = _CaseCounter(tally, key, _records_per_case(task)) if tally is not None else None
    if handler is not None:
        runner_log.setLevel(logging.INFO)
        runner_log.addHandler(handler)
    try:
        summary = run_suite(task.suite, device=task.device, dtypes=list(task.dtypes) if task.dtypes else None,
                            out=stage, resume=resume, shard=task.shard, threads=task.threads,
                            measure_fn=measure_fn or measure, progress=False, run_id=task.run_id, mode=task.mode,
                            calibrate=task.calibrate, profile=task.profile, processes=task.processes,
                            omp_wait=task.omp_wait, worker_start=task.worker_start)
    finally:
        if handler is not None:
            runner_log.removeHandler(handler)
    if summary.interrupted:
        raise RuntimeError(f"shard {k}/{n} of {task.run_id} was interrupted; its rows are staged in {stage}")
    if tally is not None:                     # the rows the shard holds: stored before (a killed attempt) and now
        stored = sum(count for status, count in summary.statuses.items() if status != DUPLICATE)
        _settle(tally.report.remote(key, summary.already_done + stored))
    return ShardResult(run_id=task.run_id, shard=task.shard, published=publish(summary.parquet, task.dataset),
                       statuses=summary.statuses, already_done=summary.already_done, host=socket.gethostname(),
                       machine_id=summary.machine_id)


def _ray() -> Any:
    try:
        import ray  # deferred: the optional extra 'fleet'
    except ImportError:
        raise FleetError("--ray needs Ray: pip install 'layerbench[fleet]'") from None
    return ray


def local_temp_dir(environ: Any = os.environ) -> str | None:
    """Where a new local Ray cluster should keep its sockets and logs, when Ray's own choice would hang.

    Ray takes ``$RAY_TMPDIR``, else ``$TMPDIR``, else ``/tmp`` (``ray._common.utils``); its agents refuse
    one inside ``$VIRTUAL_ENV`` (``ray/_private/parameter.py``) and ``ray.init`` then never returns
    (seen under nox, whose ``session.create_tmp`` puts ``TMPDIR`` in the session's venv). ``None``: Ray's
    choice is fine; ``/tmp`` when ``TMPDIR`` lies in the venv; ``FleetError`` when ``RAY_TMPDIR`` does."""
    venv, chosen = environ.get("VIRTUAL_ENV"), environ.get("RAY_TMPDIR") or environ.get("TMPDIR")
    if not venv or not chosen or not Path(chosen).resolve().is_relative_to(Path(venv).resolve()):
        return None
    if environ.get("RAY_TMPDIR"):
        raise FleetError(f"RAY_TMPDIR={chosen} lies inside the virtualenv {venv}: Ray's agents refuse it and "
                         "ray.init never returns; expected a folder outside the virtualenv")
    log.warning("TMPDIR=%s lies inside the virtualenv %s, which Ray refuses: the local cluster keeps its files "
                "under /tmp/ray", chosen, venv)
    return os.path.join(os.sep, "tmp")


def start_local(ray: Any, **kwargs: Any) -> None:
    """``ray.init`` of a new local cluster (or the one ``RAY_ADDRESS`` names), kept out of the virtualenv."""
    temp = None if os.environ.get("RAY_ADDRESS") else local_temp_dir()
    if temp is not None:
        kwargs["_temp_dir"] = os.path.join(temp, "ray")
    ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False, **kwargs)


def cluster_nodes(ray: Any) -> list[Node]:
    """The alive nodes of the connected cluster."""
    nodes = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = dict(n.get("Resources") or {})
        nodes.append(Node(cpus=res.pop("CPU", 0.0), gpus=res.pop("GPU", 0.0), resources=res))
    return nodes


def run_on_ray(suite: Suite, dataset: str, *, device: str = "cpu", devices: Sequence[str] = (),
               address: str | None = None, shards: int | None = None, dtypes: Sequence[str] | None = None,
               threads: int | None = None, mode: str | None = None, calibrate: str = "missing",
               measure_fn: Callable[..., Any] | None = None, max_retries: int = MAX_RETRIES,
               stage: str | None = None, progress: bool | None = None, profile: bool = True,
               run_stamp: str | None = None, processes: int | None = None,
               omp_wait: str | None = None, worker_start: str = "fork-server") -> FleetSummary:
    """Run ``suite`` as Ray tasks on the cluster at ``address`` (``None``: the one this process is
    connected to, else a new local one) and publish every shard to ``dataset``.

    Returns when every task has finished; a task that still fails after ``max_retries`` raises
    ``FleetError`` naming it (the other shards stay published)."""
    ray = _ray()
    if not ray.is_initialized():
        if address is None:
            start_local(ray)
        else:
            ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    placements = plan(cluster_nodes(ray), device_type(device), devices, shards)
    stamp = run_stamp or record.run_stamp()
    tally = _tally_actor(ray).remote()
    remote = ray.remote(run_shard)
    refs = {}
    for p in placements:
        task = dataclasses.replace(_task(suite, dataset, p, device, dtypes, threads, mode, calibrate, stage, profile,
                                         stamp), processes=processes, omp_wait=omp_wait,
                                    worker_start=worker_start)
        ref = remote.options(max_retries=max_retries, retry_exceptions=True, **p.options).remote(task, measure_fn,
                                                                                                  tally)
        refs[ref] = task
    total = suite.count(list(dtypes) if dtypes else None) * len({p.label for p in placements})
    start = time.time()
    results = _follow(ray, refs, tally, total, progress)
    return FleetSummary(tuple(results), time.time() - start, tuple(dict.fromkeys(t.run_id for t in refs.values())),
                        counted=ray.get(tally.total.remote()))


def _task(suite: Suite, dataset: str, p: Placement, device: str, dtypes: Sequence[str] | None, threads: int | None,
          mode: str | None, calibrate: str, stage: str | None, profile: bool, stamp: str) -> ShardTask:
    kind = device_type(device)
    run_id = f"{suite.name}-{kind}-{stamp}" + (f"-{p.label}" if p.label else "")
    return ShardTask(suite=suite, dataset=dataset, run_id=run_id, shard=p.shard,
                     device=kind if get_backend(kind).accelerator else device,
                     dtypes=tuple(dtypes) if dtypes else None,
                     threads=threads, mode=mode, calibrate=calibrate, stage=stage, profile=profile)


def _tally_actor(ray: Any) -> Any:
    @ray.remote(num_cpus=0)
    class Tally:
        """Cases measured across the cluster (the driver's progress): the highest count each shard
        reported, summed."""

        def __init__(self) -> None:
            self.by_shard: dict[str, int] = {}

        def report(self, key: str, n: int) -> None:
            self.by_shard[key] = max(n, self.by_shard.get(key, 0))

        def total(self) -> int:
            return sum(self.by_shard.values())
    return Tally


def _follow(ray: Any, refs: dict[Any, ShardTask], tally: Any, total: int, progress: bool | None) -> list[ShardResult]:
    bar = tqdm(total=total, desc="cases across the cluster", unit="case",
               disable=not (sys.stderr.isatty() if progress is None else progress))
    pending, results, failed = list(refs), [], []
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            for ref in ready:
                task = refs[ref]
                try:
                    r = ray.get(ref)
                    results.append(r)
                    log.info("shard %d/%d of %s done on %s -> %s", *r.shard, r.run_id, r.host, r.published)
                except Exception as e:  # noqa: BLE001 - a task's failure is reported, the others go on
                    failed.append(f"shard {task.shard[0]}/{task.shard[1]} of {task.run_id}: "
                                  f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
            bar.n = min(total, ray.get(tally.total.remote()))
            bar.refresh()
    finally:
        bar.close()
    if failed:
        raise FleetError(f"{len(failed)} task(s) failed after retries (the other shards are published): "
                         + "; ".join(failed))
    return sorted(results, key=lambda r: (r.run_id, r.shard))
