"""What ran: one profiled call (torch.profiler) naming the kernels or ATen implementations that
executed and how many launches a call makes. Kept out of the timed loop (the profiler costs time)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

#: How many implementation names a row keeps (by self time, longest first).
TOP_KERNELS = 3
#: Bookkeeping ops that are never "the implementation".
_NOISE = ("aten::empty", "aten::empty_strided", "aten::as_strided", "aten::as_strided_", "aten::resize_",
          "aten::view", "aten::reshape", "aten::t", "aten::transpose", "aten::expand", "aten::contiguous",
          "aten::detach", "aten::empty_like", "aten::resolve_conj", "aten::resolve_neg", "aten::zeros",
          "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::permute", "aten::_unsafe_view",
          "aten::alias", "aten::lift_fresh", "cudaLaunchKernel", "cudaDeviceSynchronize", "cudaStreamSynchronize")


def what_ran(fn: Callable[..., Any], args: tuple, device: str) -> dict[str, Any]:
    """Profile one call of ``fn(*args)``.

    Returns:
        ``kernels``: up to ``TOP_KERNELS`` names, longest self time first: CUDA kernel names on a
        GPU (e.g. ``sm90_xmma_gemm_...``, ``cudnn::...``), the ATen implementation ops on CPU (e.g.
        ``aten::mkldnn_convolution``, ``aten::_slow_conv2d_forward``), ';'-joined;
        ``kernel_launches``: GPU kernels launched by one call (on CPU: ATen ops dispatched).
    """
    cuda = torch.device(device).type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        fn(*args)
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    if cuda:
        kern = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        times: dict[str, float] = {}
        for e in kern:
            times[e.name] = times.get(e.name, 0.0) + e.device_time_total
        launches = len(kern)
    else:
        ops = [e for e in events if e.name.startswith("aten::")]
        real = [e for e in ops if e.name not in _NOISE]
        busiest = max(real, key=lambda e: e.self_cpu_time_total, default=None)
        times = {}
        for e in real:      # implementations: ops calling no other real ATen op, and the busiest op
            inner = [c for c in e.cpu_children if c.name.startswith("aten::") and c.name not in _NOISE]
            if not inner or e is busiest:
                times[e.name] = times.get(e.name, 0.0) + e.self_cpu_time_total
        launches = len(ops)
    top = sorted(times, key=lambda k: -times[k])[:TOP_KERNELS]
    return {"kernels": ";".join(top), "kernel_launches": launches}
