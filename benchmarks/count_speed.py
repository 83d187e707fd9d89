"""How fast, and in how much memory, the analytic counter counts (goals: under 1 s for
ResNet-50 at 1x3x224x224; a >100 GB meta model in seconds under 1 GB resident).

Each figure comes from a fresh subprocess so that import costs and peak RSS are its own.
Run: ``python benchmarks/count_speed.py`` or ``nox -s bench-count``.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
from torch import nn
import harness
from harness.layers.zoo import resnet50
t_import = time.perf_counter() - t0
which = sys.argv[1]
if which == "resnet50":
    model, inputs = resnet50(), [(1, 3, 224, 224)]
else:
    with torch.device("meta"):
        model = nn.Sequential(*[nn.Linear(32768, 32768) for _ in range(24)])
    inputs = [(8, 32768)]
times = []
for _ in range(5):
    t = time.perf_counter()
    table = harness.count(model, *inputs)
    times.append(time.perf_counter() - t)
tot = harness.totals(table)
print(json.dumps({"import_s": t_import, "first_s": times[0], "warm_s": sorted(times[1:])[len(times[1:]) // 2],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "params": int(tot["params"]), "flops": int(tot["flops"]), "ops": int(tot["ops"]),
                  "weights_gb_fp32": int(tot["params"]) * 4 / 1e9}))
"""


def run(which: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, which], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"{'model':<28}{'params':>16}{'fp32 weights':>14}{'import':>9}{'1st count':>11}{'warm count':>12}"
          f"{'peak RSS':>11}")
    for which, label in (("resnet50", "ResNet-50 1x3x224x224"), ("linear24", "24 x Linear(32768) on meta")):
        r = run(which)
        print(f"{label:<28}{r['params']:>16,}{r['weights_gb_fp32']:>12.1f}GB{r['import_s']:>8.2f}s"
              f"{r['first_s']:>10.2f}s{r['warm_s']:>11.3f}s{r['peak_rss_mb']:>9.0f}MB")
    print("1st count includes one-time set-up in the process (a model with real weights is counted under "
          "FakeTensorMode, which imports torch._dynamo; one on meta is not); warm = median of 4 more counts.")


if __name__ == "__main__":
    main()
