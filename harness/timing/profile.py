"""What ran: one profiled call (torch.profiler) naming the kernels or ATen implementations that
executed and how many launches a call makes. Kept out of the timed loop (the profiler costs time).
The backend says which profiler activities see its kernels and how to read their times."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from typing import Any

from harness.backends import get_backend

#: How many implementation names a row keeps (by self time, longest first).
TOP_KERNELS = 3
#: Bookkeeping ops that are never "the implementation".
_NOISE = ("aten::empty", "aten::empty_strided", "aten::as_strided", "aten::as_strided_", "aten::resize_",
          "aten::view", "aten::reshape", "aten::t", "aten::transpose", "aten::expand", "aten::contiguous",
          "aten::detach", "aten::empty_like", "aten::resolve_conj", "aten::resolve_neg", "aten::zeros",
          "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::permute", "aten::_unsafe_view",
          "aten::alias", "aten::lift_fresh", "cudaLaunchKernel", "cudaDeviceSynchronize", "cudaStreamSynchronize")


@contextlib.contextmanager
def _quiet_fd(fd: int = 2) -> Iterator[None]:
    """Send what native code writes to ``fd`` (the profiler's ``USDT ... profiler_start`` lines go
    to stderr) to /dev/null for the duration; Python-level output is flushed first."""
    import sys
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = os.dup(fd)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def what_ran(fn: Callable[..., Any], args: tuple, device: str) -> dict[str, Any]:
    """Profile one call of ``fn(*args)``.

    Returns:
        ``kernels``: up to ``TOP_KERNELS`` names, longest self time first: GPU kernel names (e.g.
        ``sm90_xmma_gemm_...``, ``cudnn::...``), or on CPU the ATen implementation ops (e.g.
        ``aten::mkldnn_convolution``, ``aten::_slow_conv2d_forward``), ';'-joined;
        ``kernel_launches``: GPU kernels launched by one call (on CPU: ATen ops dispatched).
    """
    from torch.profiler import profile
    backend = get_backend(device)
    with _quiet_fd(2), contextlib.redirect_stderr(io.StringIO()), profile(
            activities=backend.profiler_activities()) as prof:
        fn(*args)
        backend.synchronize(device)
    events = prof.events()
    kernels = backend.device_kernels(events)
    times, launches = kernels if kernels is not None else _aten_implementations(events)
    top = sorted(times, key=lambda k: -times[k])[:TOP_KERNELS]
    return {"kernels": ";".join(top), "kernel_launches": launches}


def _aten_implementations(events: Any) -> tuple[dict[str, float], int]:
    """CPU: the implementation ops (calling no other real ATen op) and the busiest op, by self time;
    the count of ATen ops dispatched."""
    ops = [e for e in events if e.name.startswith("aten::")]
    real = [e for e in ops if e.name not in _NOISE]
    busiest = max(real, key=lambda e: e.self_cpu_time_total, default=None)
    times: dict[str, float] = {}
    for e in real:
        inner = [c for c in e.cpu_children if c.name.startswith("aten::") and c.name not in _NOISE]
        if not inner or e is busiest:
            times[e.name] = times.get(e.name, 0.0) + e.self_cpu_time_total
    return times, len(ops)
