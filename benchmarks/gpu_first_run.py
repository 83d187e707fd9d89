"""The first GPU window: one script (at most 6 minutes) that checks the CUDA path against the GPU.

    PYTHONPATH=. python3 benchmarks/gpu_first_run.py OUT_DIR [--budget 330]

Sections (each writes its part of ``OUT_DIR/first_run.json`` and ``OUT_DIR/first_run.txt`` as soon
as it ends, so a window that closes early still leaves what was done; a section that fails records
its error and the next one runs):

1. ``identity``: machine_id and the GPUs (UUIDs, visible or not) here and in a child process under
   ``CUDA_VISIBLE_DEVICES`` set to the first GPU's UUID: the two machine_ids must be equal.
2. ``event_tick``: 2,000 empty event pairs: the distinct elapsed times, the event clock's tick.
3. ``graph_replays``: relu 64x64 and layernorm 8x197x768 in graph mode at three replay lengths
   (``GRAPH_REPLAY_S``) against ``triton.testing.do_bench_cudagraph``.
4. ``modes``: hot, graph and auto, and the kernels one call launches, for relu, a small layernorm,
   mha (embed 768, seq 197, batch 8) and a small sdpa.
5. ``clocks``: a bf16 8192^2 matmul for 3 s under the clock monitor (trial clocks, NVML every 25 ms),
   then one NVML sample after 50 ms idle.
6. ``vs_do_bench``: ``harness.measure`` (cold and hot) against ``triton.testing.do_bench`` on three
   layers of 50 us or more.
7. ``calibrate``: bf16 and fp32 ceilings (in a worker process) and an L2 read sweep over 8-64 MiB
   buffers; ``parent_context``: whether a process that calibrates holds a CUDA context afterwards.
8. ``run_quick``: ``layerbench run quick --device cuda --processes 1``.

docs/gpu-timing.md says how to read the output. Without a GPU the script stops with one line on
stderr and exit code 2; it imports nothing heavy before that (``--help`` works anywhere).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Seconds the whole script may take (the window is 6 minutes; the rest is the machine's start).
BUDGET_S = 330.0
#: Graph replay lengths compared with do_bench_cudagraph (seconds).
REPLAY_LENGTHS_S = (0.25e-3, 2e-3, 8e-3)
#: L2 read sweep buffer sizes (MiB).
L2_SWEEP_MIB = (8, 16, 24, 32, 40, 48, 56, 64)
#: What a section needs at least, so that it is not started past the budget (seconds).
SECTION_MIN_S = {"identity": 20, "event_tick": 5, "graph_replays": 25, "modes": 25, "clocks": 8,
                 "vs_do_bench": 15, "calibrate": 60, "parent_context": 30, "run_quick": 60}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder for first_run.json, first_run.txt and the quick run")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole script")
    return ap.parse_args(argv)


class Report:
    """Results by section, written to JSON and text after each one."""

    def __init__(self, out: Path) -> None:
        self.out, self.data, self.lines = out, {}, []
        out.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, result: Any, seconds: float) -> None:
        self.data[name] = {"seconds": round(seconds, 2), "result": result}
        self.lines += [f"## {name} ({seconds:.1f} s)", json.dumps(result, indent=1, default=str), ""]
        (self.out / "first_run.json").write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        (self.out / "first_run.txt").write_text("\n".join(self.lines) + "\n")


def run_sections(sections: list[tuple[str, Callable[[], Any]]], report: Report, deadline: float) -> None:
    for name, fn in sections:
        left = deadline - time.monotonic()
        if left < SECTION_MIN_S.get(name, 10):
            report.add(name, {"skipped": f"{left:.0f} s left of the budget"}, 0.0)
            continue
        t0 = time.monotonic()
        try:
            result = fn()
        except Exception as e:                     # one failing section must not lose the others
            result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        report.add(name, result, time.monotonic() - t0)
        print(f"gpu_first_run: {name} done in {time.monotonic() - t0:.1f} s", file=sys.stderr)


# --- helpers -------------------------------------------------------------------------------------------

def summary(m: Any) -> dict[str, Any]:
    """The parts of a Measurement the first run looks at (seconds, MHz)."""
    c = m.clocks
    return {"mode": m.mode, "timer": m.timer, "number": m.number, "reps": m.stats.n, "median_s": m.median,
            "mean_s": m.stats.mean, "min_s": m.stats.min, "max_s": m.stats.max, "rel_iqr": m.stats.rel_iqr,
            "stop_reason": m.stop_reason, "notes": list(m.notes), "estimate_s": m.estimate_s,
            "throttled": m.throttled, "sm_clock_min_mhz": c.sm_clock_min_mhz if c else None,
            "sm_clock_max_mhz": c.sm_clock_max_mhz if c else None, "clock_source": c.source if c else None,
            "clock_reasons": list(c.reasons) if c else None}


def child(code: str, env: dict[str, str | None] | None = None, timeout: float = 120) -> dict[str, Any]:
    """Run ``python -c code`` from the repository root (``env``: variables to set, ``None`` to
    remove); its last stdout line parsed as JSON."""
    full = dict(os.environ, PYTHONPATH=str(ROOT))
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True,
                       timeout=timeout)
    lines = p.stdout.strip().splitlines()
    try:
        return {"rc": p.returncode, **json.loads(lines[-1])}
    except (IndexError, ValueError):
        return {"rc": p.returncode, "stdout": p.stdout[-2000:], "stderr": p.stderr[-3000:]}


def nvml_now(handle: Any) -> dict[str, Any]:
    """One NVML sample: SM clock (MHz), clock-event reasons, power (W), temperature (C)."""
    from harness.devices.nvml import CLOCK_SM, TEMPERATURE_GPU, nvml_session, reason_names  # deferred: needs NVML
    nvml = nvml_session()
    mask = nvml.clock_reasons(handle)
    power = nvml.query("nvmlDeviceGetPowerUsage", handle)
    return {"sm_mhz": nvml.query("nvmlDeviceGetClockInfo", handle, CLOCK_SM),
            "reasons": list(reason_names(mask or 0)), "power_w": power / 1e3 if power else None,
            "temp_c": nvml.query("nvmlDeviceGetTemperature", handle, TEMPERATURE_GPU)}


# --- the sections --------------------------------------------------------------------------------------

IDENTITY_CODE = """
import json
from harness.devices.identity import describe_machine_identity
m = describe_machine_identity()
print(json.dumps({"machine_id": m.machine_id, "gpus": [[g.name, g.uuid, g.visible, g.sm_count] for g in m.gpus]}))
"""


def identity(torch: Any) -> dict[str, Any]:
    from harness.backends.cuda import nvml_handle  # deferred: the script imports torch first
    from harness.devices.identity import describe_machine_identity
    from harness.devices.nvml import nvml_session
    m = describe_machine_identity()
    here = {"machine_id": m.machine_id, "gpus": [[g.name, g.uuid, g.visible, g.sm_count] for g in m.gpus]}
    torch_uuids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
    nvml = nvml_session()
    handle = nvml_handle(nvml, torch_uuids[0]) if nvml.ok else None
    first = next((g.uuid for g in m.gpus if g.uuid), None)
    masked = child(IDENTITY_CODE, {"CUDA_VISIBLE_DEVICES": first}) if first else {"skipped": "no NVML UUID"}
    plain = child(IDENTITY_CODE, {"CUDA_VISIBLE_DEVICES": None}) if "CUDA_VISIBLE_DEVICES" in os.environ else None
    return {"here": here, "torch_uuids": torch_uuids, "nvml_matches_torch_device_0": handle is not None,
            "nvml_error": nvml.error, "masked_to_first_uuid": masked, "environment_unmasked": plain,
            "same_machine_id_when_masked": masked.get("machine_id") == here["machine_id"]}


def event_tick(torch: Any, pairs: int = 2000) -> dict[str, Any]:
    evs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(pairs)]
    torch.cuda.synchronize()
    for s, e in evs:
        s.record()
        e.record()
    torch.cuda.synchronize()
    us = [round(s.elapsed_time(e) * 1e3, 4) for s, e in evs]
    counts: dict[float, int] = {}
    for v in us:
        counts[v] = counts.get(v, 0) + 1
    positive = sorted(v for v in counts if v > 0)
    return {"pairs": pairs, "distinct_us": dict(sorted(counts.items())[:20]), "smallest_positive_us": positive[:5],
            "median_us": statistics.median(us), "max_us": max(us)}


def module(torch: Any, kind: str, params: dict[str, Any], shapes: list[tuple[int, ...]],
           dtype: str = "fp32") -> tuple[Any, tuple[Any, ...]]:
    """A layer as a run builds it (``harness.layers``) on the GPU, with random inputs."""
    from harness.layers.dtypes import parse_dtype  # deferred: the script imports torch first
    from harness.layers.modules import build_module
    from harness.layers.spec import parse_layer
    dt = parse_dtype(dtype)
    mod = build_module(parse_layer(kind, params), dt, "cuda").eval()
    return mod, tuple(torch.randn(s, device="cuda", dtype=dt) for s in shapes)


def do_bench_cudagraph(torch: Any, fn: Callable[[], Any], rep_ms: float) -> dict[str, Any]:
    try:
        import triton.testing as tt  # deferred: triton ships with CUDA builds of torch, not everywhere
    except ImportError as e:
        return {"error": f"triton not installed: {e}"}
    with torch.cuda.stream(torch.cuda.Stream()):         # older triton refuses the default stream
        try:
            ms = tt.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median")
        except TypeError:
            ms = tt.do_bench_cudagraph(fn, rep=rep_ms)
    return {"median_s": ms * 1e-3, "rep_ms": rep_ms}


def graph_replays(torch: Any) -> dict[str, Any]:
    import harness.backends.cuda as cuda_backend  # deferred: the script imports torch first
    from harness.timing import measure
    out: dict[str, Any] = {}
    for name, kind, params, shapes in [("relu 64x64", "relu", {}, [(64, 64)]),
                                       ("layernorm 8x197x768", "layernorm", {"c": 768}, [(8, 197, 768)])]:
        mod, args = module(torch, kind, params, shapes)
        rows = []
        for length in REPLAY_LENGTHS_S:
            before = cuda_backend.GRAPH_REPLAY_S
            cuda_backend.GRAPH_REPLAY_S = length
            try:
                with torch.inference_mode():
                    m = measure(mod, device="cuda", inputs=[args], mode="graph", budget_s=1.0)
                    ref = do_bench_cudagraph(torch, lambda mod=mod, args=args: mod(*args), length * 1e3)
            finally:
                cuda_backend.GRAPH_REPLAY_S = before
            rows.append({"replay_s": length, "harness": summary(m), "do_bench_cudagraph": ref,
                         "ratio": m.median / ref["median_s"] if "median_s" in ref else None})
        out[name] = rows
    return out


SMALL = [("relu 64x64", "relu", {}, [(64, 64)]),
         ("layernorm 4x16x256", "layernorm", {"c": 256}, [(4, 16, 256)]),
         ("mha embed 768 seq 197 batch 8", "mha", {"embed": 768, "heads": 12, "seq": 197, "batch": 8},
          [(8, 197, 768)]),
         ("sdpa 1x8x128x64", "sdpa", {"batch": 1, "heads": 8, "seq": 128, "head_dim": 64},
          [(1, 8, 128, 64)] * 3)]


def modes(torch: Any) -> dict[str, Any]:
    from harness.timing import measure  # deferred: the script imports torch first
    from harness.timing.profile import what_ran
    out: dict[str, Any] = {}
    for name, kind, params, shapes in SMALL:
        mod, args = module(torch, kind, params, shapes)
        with torch.inference_mode():
            ran = what_ran(mod, args, "cuda")
            got = {mode: summary(measure(mod, device="cuda", inputs=[args], mode=mode, budget_s=0.5))
                   for mode in ("hot", "graph", "auto")}
        out[name] = {"kernel_launches": ran.get("kernel_launches"), "kernels": ran.get("kernels"), **got,
                     "auto_chose": got["auto"]["mode"],
                     "hot_over_graph": got["hot"]["median_s"] / got["graph"]["median_s"]}
    return out


def clocks(torch: Any) -> dict[str, Any]:
    from harness.backends.cuda import nvml_handle  # deferred: the script imports torch first
    from harness.devices.nvml import nvml_session
    from harness.timing import measure
    nvml = nvml_session()
    handle = nvml_handle(nvml, str(torch.cuda.get_device_properties(0).uuid)) if nvml.ok else None
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    samples: list[dict[str, Any]] = []
    stop = threading.Event()

    def sampler() -> None:
        t0 = time.monotonic()
        while not stop.is_set() and handle is not None:
            samples.append({"t_s": round(time.monotonic() - t0, 3), **nvml_now(handle)})
            stop.wait(0.025)
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        m = measure(torch.mm, device="cuda", inputs=[(a, b)], budget_s=3.0, min_time_s=3.0)
    finally:
        stop.set()
        thread.join()
    torch.cuda.synchronize()
    time.sleep(0.05)
    idle = nvml_now(handle) if handle is not None else None
    flops = 2 * 8192**3 / m.median
    return {"matmul": summary(m), "tflops": flops / 1e12, "nvml_during": samples[::4], "nvml_samples": len(samples),
            "nvml_after_50ms_idle": idle, "nvml_error": nvml.error}


def do_bench(tt: Any, fn: Callable[[], Any]) -> float:
    """``triton.testing.do_bench``'s median, seconds (older triton: its default return)."""
    try:
        return tt.do_bench(fn, return_mode="median") * 1e-3
    except TypeError:
        ms = tt.do_bench(fn)
        return (ms[0] if isinstance(ms, (tuple, list)) else ms) * 1e-3


def vs_do_bench(torch: Any) -> dict[str, Any]:
    from harness.timing import measure  # deferred: the script imports torch first
    try:
        import triton.testing as tt  # deferred: triton ships with CUDA builds of torch, not everywhere
    except ImportError as e:
        return {"error": f"triton not installed: {e}"}
    layers = [("linear bf16 8192x4096 -> 4096", "linear", {"in": 4096, "out": 4096}, [(8192, 4096)]),
              ("conv2d bf16 32x256x28x28 3x3", "conv2d", {"in": 256, "out": 256, "k": 3, "p": 1}, [(32, 256, 28, 28)]),
              ("layernorm bf16 64x1024x4096", "layernorm", {"c": 4096}, [(64, 1024, 4096)])]
    out: dict[str, Any] = {}
    for name, kind, params, shapes in layers:
        mod, args = module(torch, kind, params, shapes, "bf16")
        with torch.inference_mode():
            cold = measure(mod, device="cuda", inputs=[args], mode="cold", budget_s=1.0)
            hot = measure(mod, device="cuda", inputs=[args], mode="hot", budget_s=1.0)
            ref = do_bench(tt, lambda mod=mod, args=args: mod(*args))
        out[name] = {"cold": summary(cold), "hot": summary(hot), "do_bench_median_s": ref,
                     "cold_over_do_bench": cold.median / ref, "hot_over_do_bench": hot.median / ref}
    return out


def calibrate(torch: Any) -> dict[str, Any]:
    from harness.backends import resolve_device  # deferred: the script imports torch first
    from harness.ceilings.calibrate import calibrate as run_calibration
    from harness.timing import measure
    t0 = time.monotonic()
    c = run_calibration(resolve_device("cuda"), ["bf16", "fp32"], persist=False)
    ceilings = {"seconds": round(time.monotonic() - t0, 1), "entries": [
        {"kind": e.kind, "dtype": e.dtype, "value": e.value, "size": e.size, "note": e.note} for e in c.entries],
        "levels": [{"level": lv.level, "bytes_s": lv.value, "buffer_bytes": lv.buffer_bytes} for lv in c.levels]}
    sweep = []
    for mib in L2_SWEEP_MIB:
        x = torch.randn(mib * 2**20 // 4, device="cuda")
        m = measure(torch.sum, device="cuda", inputs=[(x,)], budget_s=0.4)
        sweep.append({"buffer_mib": mib, "read_bytes_s": mib * 2**20 / m.median, "median_s": m.median,
                      "rel_iqr": m.stats.rel_iqr})
        del x
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", None)
    return {"ceilings": ceilings, "l2_bytes": l2, "l2_sweep": sweep}


PARENT_CONTEXT_CODE = """
import json, os
from harness.backends import resolve_device
from harness.backends.cuda import nvml_handle
from harness.ceilings.calibrate import calibrate
from harness.devices.nvml import nvml_session
import torch
d = resolve_device("cuda")
c = calibrate(d, ["bf16"], persist=False, budget_s=0.1, dtype_budget_s=1.0)
nvml = nvml_session()
h = nvml_handle(nvml, str(torch.cuda.get_device_properties(d.index).uuid)) if nvml.ok else None
procs = nvml.query("nvmlDeviceGetComputeRunningProcesses", h) if h is not None else None
pids = [p.pid for p in procs] if procs is not None else None
held = None if pids is None else os.getpid() in pids
print(json.dumps({"pid": os.getpid(), "compute_pids": pids, "parent_holds_context": held,
                  "torch_cuda_initialized": torch.cuda.is_initialized(), "bf16_ceiling": c.compute("bf16")}))
"""


def parent_context() -> dict[str, Any]:
    """Whether a process that resolved the device and calibrated holds a CUDA context afterwards
    (NVML's compute processes): calibration runs in a worker, so it should not."""
    return child(PARENT_CONTEXT_CODE, timeout=90.0)


def run_quick(out: Path, deadline: float) -> dict[str, Any]:
    run_dir = out / "quick"
    cmd = [sys.executable, "-m", "harness.cli", "run", "quick", "--device", "cuda", "--processes", "1",
           "--out", str(run_dir), "--ceilings", str(out / "ceilings"), "--no-report"]
    timeout = max(30.0, deadline - time.monotonic() - 5)
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                           text=True, timeout=timeout)
        rc, stdout, stderr = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, stdout, stderr = "timeout", str(e.stdout or ""), str(e.stderr or "")
    (out / "run_quick.stdout.txt").write_text(stdout)
    (out / "run_quick.stderr.txt").write_text(stderr)
    result: dict[str, Any] = {"cmd": " ".join(cmd), "rc": rc, "seconds": round(time.monotonic() - t0, 1),
                              "stdout_tail": stdout[-1500:], "stderr_tail": stderr[-1500:]}
    try:
        from harness.store import load_results  # deferred: only once the run wrote something
        runs = sorted(p for p in run_dir.rglob("*") if p.is_dir() and any(p.glob("*.parquet")))
        df = load_results(runs[-1])
        cols = [c for c in ("layer", "input_shapes", "mode", "time_median_s", "status", "throttled",
                            "sm_clock_min_mhz", "clock_reasons", "stop_reason", "kernel_launches") if c in df]
        result["rows"] = df[cols].to_dict("records")
    except Exception as e:                         # the run's own output says what went wrong
        result["rows_error"] = f"{type(e).__name__}: {e}"
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.budget
    try:
        import torch  # deferred: --help and the no-GPU line need no torch
    except ImportError:
        print("gpu_first_run: torch is not installed; this script needs a CUDA build of torch and a GPU",
              file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(f"gpu_first_run: no CUDA device visible to torch {torch.__version__} (this script needs a GPU)",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    out = Path(args.out)
    report = Report(out)
    report.add("environment", {"torch": torch.__version__, "cuda": torch.version.cuda,
                               "device": torch.cuda.get_device_name(0), "argv": sys.argv,
                               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}, 0.0)
    run_sections([("identity", lambda: identity(torch)), ("event_tick", lambda: event_tick(torch)),
                  ("graph_replays", lambda: graph_replays(torch)), ("modes", lambda: modes(torch)),
                  ("clocks", lambda: clocks(torch)), ("vs_do_bench", lambda: vs_do_bench(torch)),
                  ("calibrate", lambda: calibrate(torch)), ("parent_context", parent_context),
                  ("run_quick", lambda: run_quick(out, deadline))], report, deadline)
    print(f"gpu_first_run: wrote {out / 'first_run.json'} and {out / 'first_run.txt'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
