"""GPU evidence for the measurement engine (needs an NVIDIA GPU; exits 2 without one).

1. Ceilings: ``calibrate`` (bf16, fp16, tf32, fp32 GEMM; device-to-device copy) beside the datasheet.
2. Three ops of 50 us or more timed with ``harness.measure`` (cold mode: L2 flushed before every
   call, as do_bench does) and with ``triton.testing.do_bench(return_mode="median")``; target:
   medians within 3 %. Hot mode shown too.
3. ReLU on 64x64: hot (one event pair around blocks of launches), graph mode (launches captured
   in a CUDA graph) and ``do_bench_cudagraph``: the launch overhead graph mode removes.

    PYTHONPATH=. python3 benchmarks/gpu_timing.py [--out results/gpu]

Writes ``<out>/<gpu>-timing.md`` (the printed tables) and ``<out>/<gpu>-timing.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/gpu")
    ap.add_argument("--budget", type=float, default=2.0)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_timing: no CUDA device visible to torch", file=sys.stderr)
        return 2
    import triton.testing as tt

    from harness.ceilings.calibrate import calibrate
    from harness.devices import describe_gpus
    from harness.timing import measure, random_inputs

    gpu = describe_gpus().gpus[0]
    lines: list[str] = [f"# Timing evidence on {gpu.name}", "",
                        f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
                        f"cuDNN {torch.backends.cudnn.version()}, "
                        f"SM clock max {gpu.sm_clock_max_mhz} MHz, power limit {gpu.power_limit_w} W, "
                        f"{time.strftime('%Y-%m-%d %H:%M %Z')}", ""]
    record: dict = {"gpu": dataclasses.asdict(gpu)}

    # 1. ceilings
    ceil = calibrate("cuda", ["bf16", "fp16", "tf32", "fp32"], budget_s=args.budget, persist=False)
    lines += ["## Ceilings (calibrate) vs datasheet", "",
              "| ceiling | size | measured | datasheet | measured / datasheet | rel IQR |", "|---|---|---|---|---|---|"]
    for e in ceil.entries:
        p = gpu.peak(e.dtype)
        theo = (p.flops if e.kind == "compute" else p.bandwidth) if p else None
        unit, scale = ("TFLOP/s", 1e12) if e.kind == "compute" else ("GB/s", 1e9)
        label = f"{e.dtype} GEMM" if e.kind == "compute" else "copy (r+w)"
        size = f"n={e.size}" if e.kind == "compute" else f"{e.size / 2**30:.1f} GiB"
        lines.append(f"| {label} | {size} | {e.value / scale:.1f} {unit} | "
                     f"{theo / scale if theo else float('nan'):.1f} {unit} | "
                     f"{e.value / theo if theo else float('nan'):.1%} | {e.rel_iqr:.2%} |")
    record["ceilings"] = ceil.to_json()

    # 2. three ops >= 50 us, harness vs do_bench
    bf16 = torch.bfloat16
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to("cuda", bf16).to(memory_format=torch.channels_last)
    norm = torch.nn.LayerNorm(1024).to("cuda", bf16)
    ops = [
        ("mm bf16 4096^3", torch.mm, random_inputs([(4096, 4096), (4096, 4096)], bf16, "cuda", seed=1)[0]),
        ("conv3x3 256->256 32x256x56x56 bf16 NHWC", conv,
         random_inputs([(32, 256, 56, 56)], bf16, "cuda", seed=2, memory_format=torch.channels_last)[0]),
        ("layernorm 1024 over 64x2048x1024 bf16", norm, random_inputs([(64, 2048, 1024)], bf16, "cuda", seed=3)[0]),
    ]
    lines += ["", "## harness.measure vs triton.testing.do_bench (median, us)", "",
              "| op | harness cold | do_bench | cold / do_bench | within 3% | harness hot | reps (cold) | rel CI | "
              "throttled |", "|---|---|---|---|---|---|---|---|---|"]
    record["ops"] = []
    with torch.inference_mode():
        for label, fn, inputs in ops:
            cold = measure(fn, device="cuda", mode="cold", inputs=[inputs], budget_s=args.budget)
            hot = measure(fn, device="cuda", mode="hot", inputs=[inputs], budget_s=args.budget)
            ref = tt.do_bench(lambda fn=fn, inputs=inputs: fn(*inputs), warmup=100, rep=1000, return_mode="median")
            ratio = cold.median / (ref * 1e-3)
            lines.append(f"| {label} | {cold.median * 1e6:.1f} | {ref * 1e3:.1f} | {ratio:.3f} | "
                         f"{'yes' if abs(ratio - 1) <= 0.03 else 'NO'} | {hot.median * 1e6:.1f} | {cold.stats.n} | "
                         f"{cold.stats.rel_ci:.2%} | {cold.throttled} |")
            record["ops"].append({"op": label, "cold": cold.summary(), "hot": hot.summary(), "do_bench_ms": ref})

        # 3. tiny op: graph mode removes launch overhead
        (x,) = random_inputs([(64, 64)], torch.float32, "cuda", seed=4)[0]
        hot = measure(torch.relu, device="cuda", mode="hot", inputs=[(x,)], budget_s=args.budget, block_s=0)
        blocked = measure(torch.relu, device="cuda", mode="hot", inputs=[(x,)], budget_s=args.budget)
        graph = measure(torch.relu, device="cuda", mode="graph", inputs=[(x,)], budget_s=args.budget)
        ref_graph = tt.do_bench_cudagraph(lambda: torch.relu(x), rep=100, return_mode="median")
    lines += ["", "## ReLU 64x64 fp32: launch overhead (us per call)", "",
              "| timing | median | calls per sample |", "|---|---|---|",
              f"| hot, one launch per event pair | {hot.median * 1e6:.2f} | {hot.number} |",
              f"| hot, blocks of launches | {blocked.median * 1e6:.2f} | {blocked.number} |",
              f"| graph mode | {graph.median * 1e6:.2f} | {graph.number} |",
              f"| triton do_bench_cudagraph | {ref_graph * 1e3:.2f} | - |",
              "", f"Launch overhead removed by graph mode: {(blocked.median - graph.median) * 1e6:.2f} us per call."]
    record["relu"] = {"hot_single": hot.summary(), "hot_blocked": blocked.summary(), "graph": graph.summary(),
                      "do_bench_cudagraph_ms": ref_graph}
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu.name).strip("-")
    (out / f"{slug}-timing.md").write_text(text)
    (out / f"{slug}-timing.json").write_text(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
