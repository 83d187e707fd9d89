"""Counting on the meta device imports neither torch._dynamo (about 1.2 s a process) nor sympy
through torch.fx.experimental.symbolic_shapes (about 0.5 s), and leaves torch as it found it: a
later torch.compile gets the real dynamo, and the real symbolic_shapes module loads when asked."""

import subprocess
import sys

HEAVY = ("torch._dynamo", "torch.fx.experimental.symbolic_shapes", "sympy")

CODE = r"""
import sys
import torch
from harness.analytic.count import count_totals
from harness.layers.modules import build_module
from harness.layers.spec import parse_layer
got = {}
for kind, params, shape in [("linear", {"in": 512, "out": 256}, (64, 512)),
                            ("layernorm", {"c": 768}, (8, 196, 768)),
                            ("conv2d", {"in": 8, "out": 16, "k": 3}, (1, 8, 10, 10))]:
    spec = parse_layer(kind, params)
    got[kind] = int(count_totals(build_module(spec, torch.float32, "meta"), shape)["macs"])
print(got["linear"], got["conv2d"], "torch._dynamo" in sys.modules)
f = torch.compile(torch.nn.Linear(4, 3), backend="eager")
print(tuple(f(torch.ones(2, 4)).shape), "torch._dynamo" in sys.modules)
"""

EVERY_SUITE = r"""
import glob, sys
from harness.runner.loop import work_items
from harness.runner.rows import analytic_counts
from harness.suite import load_suite
n = 0
for path in sorted(glob.glob("suites/*.toml")):
    for device in ("cpu", "cuda"):
        for case in work_items(load_suite(path), None, (1, 1), device):
            if case.spec is not None and case.skip is None:
                analytic_counts(case)
                n += 1
print(n, *(m in sys.modules for m in HEAVY))
""".replace("HEAVY", repr(HEAVY))

STAND_IN = r"""
import sys, torch
from harness.analytic.meta import meta_mode
with meta_mode():
    ss = sys.modules["torch.fx.experimental.symbolic_shapes"]
    print(type(ss).__name__, ss.expect_true(True), ss.sym_eq([2, 3], (2, 3)))
    hint = ss.free_unbacked_symbols       # not answered by the stand-in: loads the real module
print(type(sys.modules["torch.fx.experimental.symbolic_shapes"]).__name__, hint.__module__)
from torch.fx.experimental.symbolic_shapes import ShapeEnv
print(ShapeEnv.__name__, "torch._dynamo" in sys.modules)
"""


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()


def test_meta_counting_does_not_import_dynamo_and_compile_still_works():
    first, second = _run(CODE)[-2:]
    # linear 64x512 -> 256: 64*512*256 MACs; conv 3x3 8->16 on 10x10 -> 8x8 outputs: 16*8*8*8*9
    assert first == f"{64 * 512 * 256} {16 * 8 * 8 * 8 * 9} False"
    assert second == "(2, 3) True"


def test_counting_every_case_of_every_suite_imports_no_heavy_module():
    n, *imported = _run(EVERY_SUITE)[-1].split()
    assert int(n) > 500
    assert imported == ["False"] * len(HEAVY), dict(zip(HEAVY, imported))


def test_a_question_the_stand_in_cannot_answer_loads_the_real_module():
    inside, after, real = _run(STAND_IN)[-3:]
    assert inside == "_SymbolicShapes True True"
    assert after == "module torch.fx.experimental.symbolic_shapes"
    assert real == "ShapeEnv False"


EDGES = r"""
import importlib.util, resource, sys, threading, torch
import torch.nn.functional as F
from harness.analytic.meta import meta_mode
from harness.analytic.count import count_totals
from harness.layers.modules import build_module
from harness.layers.spec import parse_layer
from torch import nn

class Disabled(nn.Module):                   # torch.compiler.disable used as a decorator factory
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.empty(4, device="meta"))
    def forward(self, x):
        return torch.compiler.disable(recursive=False)(lambda y: y * self.w)(x)

print("disable", int(count_totals(Disabled(), (2, 4))["flops"]), "torch._dynamo" in sys.modules)
with meta_mode():
    print("spec", importlib.util.find_spec("sympy") is not None)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
spec = parse_layer("sdpa", {"heads": 64, "seq": 131072, "head_dim": 128, "causal": True})
count_totals(build_module(spec, torch.float32, "meta"), *spec.default_inputs())
print("rss_mib", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
small = parse_layer("sdpa", {"heads": 2, "seq": 16, "head_dim": 8, "causal": True})
errors = []
def work():
    try:
        for _ in range(20):
            count_totals(build_module(small, torch.float32, "meta"), *small.default_inputs())
    except Exception as e:
        errors.append(e)
threads = [threading.Thread(target=work) for _ in range(3)]
[t.start() for t in threads]; [t.join() for t in threads]
print("threads", len(errors), F.scaled_dot_product_attention is torch._C._nn.scaled_dot_product_attention,
      "sympy" in sys.modules)
"""


def test_stand_in_edges_decorator_factory_spec_memory_and_threads():
    disable, spec, rss, threads = _run(EDGES)[-4:]
    assert disable == "disable 8 False"                       # y * w on 2x4: 8 FLOPs, no real dynamo
    assert spec == "spec True"                                # find_spec answers inside the block
    assert int(rss.split()[1]) < 100                          # a 64 x 131072 x 128 attention: no real memory
    assert threads == "threads 0 True False"                  # three threads counting: F restored, no sympy
