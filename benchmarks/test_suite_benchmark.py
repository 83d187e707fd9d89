"""A layerbench suite as a pytest-benchmark session, for teams that keep pytest-benchmark histories.

    LAYERBENCH_SUITE=quick LAYERBENCH_DEVICE=cpu pytest benchmarks/test_suite_benchmark.py \\
        --benchmark-only --benchmark-json=results/quick-pytest-benchmark.json
    layerbench export results/quick-pytest-benchmark.json     # the same columns as `layerbench run`

Each case is one test; its row identity and analytic counts go to ``extra_info``. Timing is
pytest-benchmark's own (calibrated rounds, host clock; on CUDA each call is synchronised).
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from harness.backends import get_backend
from harness.runner import analytic_counts, make_context, prepare_case, work_items
from harness.suite import load_suite

SUITE = load_suite(os.environ.get("LAYERBENCH_SUITE", "quick"))
DEVICE = os.environ.get("LAYERBENCH_DEVICE", "cpu")
CASES = list(work_items(SUITE, None, (1, 1), torch.device(DEVICE).type))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.family}-{c.layer}-{c.case_id[:8]}-{c.dtype}" for c in CASES])
def test_layer(benchmark, case):
    if case.skip:
        pytest.skip(case.skip)
    backend = get_backend(DEVICE)
    if not backend.available():
        pytest.skip(f"LAYERBENCH_DEVICE={DEVICE} but torch sees no such device")
    ctx = make_context(SUITE, DEVICE, [case.dtype], None, "hot", (1, 1), "pytest-benchmark")
    module, inputs, seed = prepare_case(case, ctx.device, backend.last_level_cache(ctx.device))
    for part in (ctx.key(case), ctx.case_fields(case), analytic_counts(case), ctx.peaks_for(case, {})):
        benchmark.extra_info.update(dataclasses.asdict(part))
    benchmark.extra_info.update(seed=seed)
    args = inputs[0]

    def call():
        module(*args)
        backend.synchronize(ctx.device)

    with torch.inference_mode():
        benchmark(call)
