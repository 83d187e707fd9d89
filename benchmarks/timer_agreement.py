"""harness.measure against torch.utils.benchmark.Timer.blocked_autorange on five CPU layers.

Both time the same module on the same random inputs in the same process, with the same thread
count, three times over. Printed per layer: each tool's median per repeat, the ratio of medians
(target: within 5 % of 1), and each tool's spread over the three repeats ((max - min) / median).

    python benchmarks/timer_agreement.py [--repeats 3] [--min-run-time 1.0]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.utils.benchmark as tb

from harness.layers.modules import build_case
from harness.layers.spec import parse_layer
from harness.timing import measure, random_inputs

CONFIGS = [  # (label, layer kind, params, input shape)
    ("conv2d 3x3 64->64 1x64x56x56", "conv2d", "in=64 out=64 k=3 p=1", "1x64x56x56"),
    ("depthwise 3x3 g=64 8x64x56x56", "conv2d", "in=64 out=64 k=3 p=1 g=64", "8x64x56x56"),
    ("linear 1024->1024 64x1024", "linear", "in=1024 out=1024", "64x1024"),
    ("layernorm 768 32x197x768", "layernorm", "c=768", "32x197x768"),
    ("relu 64x64 (tiny)", "relu", "", "64x64"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-run-time", type=float, default=1.0, help="blocked_autorange min_run_time (s)")
    ap.add_argument("--budget", type=float, default=2.0, help="harness.measure budget_s")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; harness.measure(target_rel_ci=1%, min_time_s="
          f"{args.min_run_time} s, budget {args.budget} s) vs "
          f"Timer.blocked_autorange(min_run_time={args.min_run_time} s)\n")
    header = f"{'layer':32} {'harness median':>16} {'Timer median':>14} {'ratio':>7}"
    print(header)
    summary = []
    with torch.inference_mode():
        for label, kind, params, shape in CONFIGS:
            module, shapes, dtype = build_case(parse_layer(kind, params.split()), [shape], "fp32", device="cpu")
            (x,) = random_inputs(shapes, dtype, "cpu", seed=0)[0]
            ours, theirs = [], []
            for rep in range(args.repeats):
                # same sampling window for both; the order alternates so neither always runs second
                def ours_once(module=module, x=x):
                    return measure(module, inputs=[(x,)], threads=threads, min_time_s=args.min_run_time,
                                   budget_s=max(args.budget, args.min_run_time))

                def theirs_once(module=module, x=x):
                    t = tb.Timer("module(x)", globals={"module": module, "x": x}, num_threads=threads)
                    return t.blocked_autorange(min_run_time=args.min_run_time)

                if rep % 2 == 0:
                    m, r = ours_once(), theirs_once()
                else:
                    r, m = theirs_once(), ours_once()
                ours.append(m.median)
                theirs.append(r.median)
                print(f"{label:32} {m.median * 1e6:13.2f} us {r.median * 1e6:11.2f} us {m.median / r.median:7.3f}"
                      f"   (ours: {m.stats.n} samples x {m.number}, rel CI {m.stats.rel_ci:.2%}, {m.stop_reason})")
            ratio = statistics.median(ours) / statistics.median(theirs)
            spread_ours = (max(ours) - min(ours)) / statistics.median(ours)
            spread_theirs = (max(theirs) - min(theirs)) / statistics.median(theirs)
            summary.append((label, ratio, spread_ours, spread_theirs))
    print(f"\n{'layer':32} {'ratio of medians':>17} {'spread ours':>12} {'spread Timer':>13} {'within 5%':>10}")
    for label, ratio, so, st in summary:
        print(f"{label:32} {ratio:17.3f} {so:12.1%} {st:13.1%} {'yes' if abs(ratio - 1) <= 0.05 else 'NO':>10}")


if __name__ == "__main__":
    main()
