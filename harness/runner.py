"""Run a suite on a device: case x dtype rows, each isolated, each stored the moment it is measured.

A case that cannot run (invalid configuration, a dtype the device cannot run, CUDA out of memory,
any exception) becomes a row with its ``status`` and error text, and the sweep goes on. Resume
skips the rows already stored; ``shard=(K, N)`` takes every N-th row of the deterministic order.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import harness
from harness.count import count, totals
from harness.dtypes import itemsize, parse_dtype
from harness.errors import SpecError
from harness.store import RunWriter, shard_label
from harness.suite import Case, Suite
from harness.timing import Measurement, measure, random_inputs, rotation_sets
from harness.timing.measure import MODES
from harness.timing.profile import what_ran

log = logging.getLogger(__name__)

OK, ERROR, SKIPPED, OOM = "ok", "error", "skipped", "oom"


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run did: where it wrote, how many rows of each status, whether it was interrupted."""

    run_id: str
    run_dir: Path
    parquet: Path
    statuses: dict[str, int]
    already_done: int
    interrupted: bool
    seconds: float


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 1 <= K <= N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SpecError("--shard", text, "K/N with integers, e.g. 2/4") from None
    if not 1 <= k <= n:
        raise SpecError("--shard", text, "1 <= K <= N")
    return k, n


def work_items(suite: Suite, dtypes: list[str] | None, shard: tuple[int, int]) -> Iterator[tuple[Case, str]]:
    """(case, dtype) pairs of this shard, in the suite's deterministic order (every N-th, from K)."""
    k, n = shard
    i = 0
    for case in suite.cases():
        for dtype in dtypes or case.dtypes:
            if i % n == k - 1:
                yield case, dtype
            i += 1


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        sha = out.stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device).index or 0)
    from harness.devices.cpu import cpuinfo
    return str(cpuinfo().get("brand_raw", platform.processor()))


def _versions() -> dict[str, Any]:
    cudnn = None
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:
        cudnn = None
    return {"harness_version": harness.__version__, "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda, "cudnn_version": cudnn, "python_version": platform.python_version()}


def _find_run(out: Path, suite: str, device: str, shard: tuple[int, int]) -> Path | None:
    """The latest run directory of this suite and device with this shard's metadata."""
    device_type = torch.device(device).type
    for d in sorted(out.glob(f"{suite}-{device_type}-*"), reverse=True):
        if (d / f"run-{shard_label(shard)}.json").exists():
            return d
    return None


def analytic_counts(case: Case, dtype: str) -> dict[str, Any]:
    """The analytic columns of a row: canonical counts on the meta device and torch's own count."""
    torch_dtype = parse_dtype(dtype)
    assert case.spec is not None and case.inputs is not None
    t = totals(count(case.spec.build(torch_dtype, "meta"), *case.inputs, dtype=torch_dtype))
    return {
        "flops": int(t["flops"]), "macs": int(t["macs"]), "parameters": int(t["params"]),
        "bytes_read": int(t["bytes_read"]), "bytes_written": int(t["bytes_written"]),
        "intensity": float(t["intensity"]), "flop_counter_flops": int(t["flop_counter_flops"]),
        "flop_counter_agrees": bool(t["flop_counter_disagreements"] == 0) if t["flop_counter_ops"] else None,
        "aten_ops": int(t["ops"]),
    }


def prepare_case(case: Case, dtype: str, device: str, llc_bytes: int) -> tuple[torch.nn.Module, list[tuple], int]:
    """The layer on ``device`` in eval mode and its random input sets (enough to span twice the
    last-level cache, at most ``MAX_ROTATION``), drawn with a seed taken from the case id."""
    torch_dtype = parse_dtype(dtype)
    assert case.spec is not None and case.inputs is not None
    dev = torch.device(device)
    if dev.type == "cuda" and torch_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise SpecError("dtype", dtype, "a dtype this GPU runs (no bf16 before compute capability 8.0)")
    fmt = None
    module = case.spec.build(torch_dtype, device).eval()
    if case.memory_format == "channels_last":
        fmt = torch.channels_last if len(case.inputs[0]) == 4 else torch.channels_last_3d
        module = module.to(memory_format=fmt)
    seed = int(case.case_id[:8], 16)
    per_set = sum(torch.Size(s).numel() for s in case.inputs) * itemsize(torch_dtype)
    sets = rotation_sets(per_set, llc_bytes)
    return module, random_inputs(case.inputs, torch_dtype, device, seed=seed, sets=sets, memory_format=fmt), seed


def measure_case(case: Case, dtype: str, device: str, suite: Suite, *, threads: int | None,
                 measure_fn: Callable[..., Measurement], llc_bytes: int, profile: bool = True,
                 mode: str = "hot") -> dict[str, Any]:
    """Counts and timing of one case on one device and dtype: the measured part of a row.
    ``mode`` (hot, cold, graph) applies on CUDA; CPU timing is always hot (inputs rotate instead).

    Raises whatever building or running the layer raises (the caller turns it into a row).
    """
    out = analytic_counts(case, dtype)
    module, inputs, seed = prepare_case(case, dtype, device, llc_bytes)
    with torch.inference_mode():
        m = measure_fn(module, device=device, inputs=inputs, threads=threads, budget_s=suite.budget_s,
                       target_rel_ci=suite.target_rel_ci, warmup_s=suite.warmup_s, min_reps=suite.min_reps,
                       mode=mode if torch.device(device).type == "cuda" else "hot")
    out.update(m.summary())
    if profile:
        with torch.inference_mode():
            out.update(what_ran(module, inputs[0], device))
    out["samples_s"] = list(m.samples_s)
    out["seed"] = seed
    out["input_distribution"] = "normal(0,1)"
    return out


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, getattr(torch.cuda, "OutOfMemoryError", ())) or "out of memory" in str(e).lower()


def run_suite(suite: Suite, *, device: str = "cpu", dtypes: list[str] | None = None, out: str | Path = "results",
              resume: bool = False, shard: tuple[int, int] = (1, 1), threads: int | None = None,
              measure_fn: Callable[..., Measurement] = measure, progress: bool | None = None,
              run_id: str | None = None, mode: str | None = None) -> RunSummary:
    """Run every (case, dtype) of ``suite`` in this shard on ``device``; store each row as it comes.

    Args:
        suite: a loaded suite (``harness.suite.load_suite``).
        device: ``cpu`` or ``cuda[:N]``.
        dtypes: override the suite's dtypes (``["fp32", "bf16"]``).
        out: the results folder; the run writes ``<out>/<suite>-<device>-<UTC time>/``.
        resume: continue the latest run of this suite, device and shard, measuring only missing rows.
        shard: (K, N): take every N-th row starting at the K-th.
        threads: CPU threads for timing (default: the suite's, else torch's).
        measure_fn: the timer (tests inject a fake).
        progress: a tqdm bar (default: when stderr is a terminal), else one log line per row.
        mode: CUDA timing mode, ``hot``, ``cold`` (L2 flushed), ``graph`` or ``auto`` (graph for calls
            under 20 us, else hot; default: the suite's, itself ``auto`` unless it says otherwise).

    Returns:
        A ``RunSummary``. Ctrl-C stops after storing what is done (``interrupted=True``).
    """
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise SpecError("--device", device, "cpu or cuda[:N]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpecError("--device", device, "a CUDA device, but torch sees none on this machine")
    for d in dtypes or ():
        parse_dtype(d, "--dtype")
    mode = mode or suite.mode
    if mode not in MODES:
        raise SpecError("--mode", mode, "one of " + ", ".join(MODES))
    out = Path(out)
    threads = threads or suite.threads
    start = time.time()
    run_dir = None
    if resume:
        run_dir = _find_run(out, suite.name, device, shard) if run_id is None else out / run_id
        if run_dir is None:
            log.warning("no earlier run of %s on %s to resume: starting a new one", suite.name, device)
    if run_dir is None:
        run_id = run_id or f"{suite.name}-{dev.type}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(start))}"
        run_dir = out / run_id
    run_id = run_dir.name
    from harness.devices.ceilings import last_level_cache
    from harness.devices.cpu import describe_cpu
    cpu = describe_cpu(check_load=True)
    for w in cpu.warnings:
        if "other processes" in w:
            log.warning(w)
    versions = _versions()
    meta = {"run_id": run_id, "suite": suite.name, "suite_file": suite.path, "device": device,
            "device_name": _device_name(device), "shard": list(shard), "dtypes": dtypes, "argv": sys.argv,
            "timing_mode": mode, "git_commit": _git_commit(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start)),
            "host": platform.node(), "cpu": cpu.brand, "cpu_threads": threads or torch.get_num_threads(),
            "load_avg": cpu.load_avg, "busy_percent": cpu.busy_percent, **versions}
    writer = RunWriter(run_dir, shard, meta)
    done = writer.done_ids()
    items = [(c, d) for c, d in work_items(suite, dtypes, shard) if _row_id(c, d, dev.type) not in done]
    llc = last_level_cache(device)
    statuses: Counter[str] = Counter()
    base = {"run_id": run_id, "suite": suite.name, "device": dev.type, "device_name": meta["device_name"],
            "git_commit": meta["git_commit"], **versions}
    show_bar = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show_bar:
        from tqdm import tqdm
        bar = tqdm(total=len(items), desc=f"{suite.name} on {device}", unit="case")
    interrupted = False
    try:
        for i, (case, dtype) in enumerate(items, 1):
            row = row_identity(case, dtype, dev.type) | base
            row["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            if case.skip is not None:
                row.update(status=SKIPPED, error=case.skip)
            else:
                try:
                    row.update(measure_case(case, dtype, device, suite, threads=threads, measure_fn=measure_fn,
                                            llc_bytes=llc, mode=mode))
                    row.update(status=OK, error=None)
                except KeyboardInterrupt:
                    raise
                except SpecError as e:
                    row.update(status=SKIPPED, error=str(e))
                except Exception as e:
                    oom = _is_oom(e)
                    row.update(status=OOM if oom else ERROR, error=f"{type(e).__name__}: {e}".strip()[:2000])
                    if not oom:
                        log.debug("case %s failed:\n%s", case.case_id, traceback.format_exc())
                    if oom and dev.type == "cuda":
                        torch.cuda.empty_cache()
            writer.append(row)
            statuses[row["status"]] += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(_brief(row))
            else:
                log.info("[%d/%d] %s", i, len(items), _brief(row))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
        parquet = writer.finish(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), interrupted=interrupted,
                                rows_this_session=sum(statuses.values()))
    return RunSummary(run_id=run_id, run_dir=run_dir, parquet=parquet, statuses=dict(statuses),
                      already_done=len(done), interrupted=interrupted, seconds=time.time() - start)


def _row_id(case: Case, dtype: str, device_type: str) -> str:
    return f"{case.case_id}-{device_type}-{dtype}"


def row_identity(case: Case, dtype: str, device_type: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "row_id": _row_id(case, dtype, device_type), "case_id": case.case_id, "family": case.family,
        "layer": case.layer, "params": json.dumps(dict(case.params), default=list, sort_keys=True),
        "input_shapes": ";".join("x".join(map(str, s)) for s in case.inputs) if case.inputs else None,
        "memory_format": case.memory_format, "dtype": dtype,
    }
    for name, value in case.axes:
        row[f"ax_{name}"] = value
    return row


def _brief(row: dict[str, Any]) -> str:
    what = f"{row['family']} {row['layer']} {row['input_shapes'] or ''} {row['dtype']}"
    if row["status"] != OK:
        return f"{what}: {row['status']} ({(row.get('error') or '')[:80]})"
    med = row["time_median_s"]
    rate = row["flops"] / med if med else 0
    return f"{what}: {med * 1e6:.1f} us, {rate / 1e9:.2f} GFLOP/s{' (noisy)' if row['noisy'] else ''}"
