"""A layerbench suite as a pytest-benchmark session, for teams that keep pytest-benchmark histories.

    LAYERBENCH_SUITE=quick LAYERBENCH_DEVICE=cpu pytest benchmarks/test_suite_benchmark.py \\
        --benchmark-only --benchmark-json=results/quick-pytest-benchmark.json
    layerbench export results/quick-pytest-benchmark.json     # the same columns as `layerbench run`

Each case is one test; its row identity and analytic counts go to ``extra_info``. Timing is
pytest-benchmark's own (calibrated rounds, host clock; on CUDA each call is synchronised).
"""

from __future__ import annotations

import os

import pytest
import torch

from harness.devices.ceilings import last_level_cache
from harness.runner import analytic_counts, prepare_case, row_identity, work_items
from harness.suite import load_suite

SUITE = load_suite(os.environ.get("LAYERBENCH_SUITE", "quick"))
DEVICE = os.environ.get("LAYERBENCH_DEVICE", "cpu")
ITEMS = list(work_items(SUITE, None, (1, 1)))


@pytest.mark.parametrize("case, dtype", ITEMS, ids=[f"{c.family}-{c.layer}-{c.case_id[:8]}-{d}" for c, d in ITEMS])
def test_layer(benchmark, case, dtype):
    if case.skip:
        pytest.skip(case.skip)
    if torch.device(DEVICE).type == "cuda" and not torch.cuda.is_available():
        pytest.skip("LAYERBENCH_DEVICE=cuda but torch sees no CUDA device")
    module, inputs, seed = prepare_case(case, dtype, DEVICE, last_level_cache(DEVICE))
    benchmark.extra_info.update(row_identity(case, dtype, torch.device(DEVICE).type))
    benchmark.extra_info.update(analytic_counts(case, dtype), suite=SUITE.name, device=torch.device(DEVICE).type,
                                seed=seed, threads=torch.get_num_threads(), torch_version=torch.__version__)
    args = inputs[0]
    sync = torch.cuda.synchronize if torch.device(DEVICE).type == "cuda" else (lambda: None)

    def call():
        module(*args)
        sync()

    with torch.inference_mode():
        benchmark(call)
