"""Counting on the meta device never imports torch._dynamo (about 1.2 s a process), and leaves
torch as it found it: a later torch.compile still gets the real dynamo."""

import subprocess
import sys

CODE = r"""
import sys
import torch
from harness.counting import count_totals
from harness.spec import parse_layer
got = {}
for kind, params, shape in [("linear", {"in": 512, "out": 256}, (64, 512)),
                            ("layernorm", {"c": 768}, (8, 196, 768)),
                            ("conv2d", {"in": 8, "out": 16, "k": 3}, (1, 8, 10, 10))]:
    spec = parse_layer(kind, params)
    got[kind] = int(count_totals(spec.build(torch.float32, "meta"), shape)["macs"])
print(got["linear"], got["conv2d"], "torch._dynamo" in sys.modules)
f = torch.compile(torch.nn.Linear(4, 3), backend="eager")
print(tuple(f(torch.ones(2, 4)).shape), "torch._dynamo" in sys.modules)
"""


def test_meta_counting_does_not_import_dynamo_and_compile_still_works():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    first, second = out.stdout.strip().splitlines()[-2:]
    # linear 64x512 -> 256: 64*512*256 MACs; conv 3x3 8->16 on 10x10 -> 8x8 outputs: 16*8*8*8*9
    assert first == f"{64 * 512 * 256} {16 * 8 * 8 * 8 * 9} False"
    assert second == "(2, 3) True"
