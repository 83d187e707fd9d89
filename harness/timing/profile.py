"""What ran: one profiled call (torch.profiler) naming the kernels or ATen implementations that
executed and how many launches a call makes, and on CPU the oneDNN primitives below ATen (its
verbose mode, parsed). Kept out of the timed loop (the profiler costs time).
The backend says which profiler activities see its kernels and how to read their times."""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.autograd.profiler as autograd_profiler
from torch.profiler import ProfilerActivity, profile

from harness.backends import Device, resolve_device

log = logging.getLogger(__name__)

#: How many implementation names a row keeps (by self time, longest first).
TOP_KERNELS = 3
#: Bookkeeping ops that are never "the implementation".
_NOISE = ("aten::empty", "aten::empty_strided", "aten::as_strided", "aten::as_strided_", "aten::resize_",
          "aten::view", "aten::reshape", "aten::t", "aten::transpose", "aten::expand", "aten::contiguous",
          "aten::detach", "aten::empty_like", "aten::resolve_conj", "aten::resolve_neg", "aten::zeros",
          "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::permute", "aten::_unsafe_view",
          "aten::alias", "aten::lift_fresh", "cudaLaunchKernel", "cudaDeviceSynchronize", "cudaStreamSynchronize")


@dataclass
class Captured:
    """What native code wrote to the captured file descriptors (filled when the block exits)."""

    text: str = ""


def _flush_native() -> None:
    """Flush C stdio buffers (oneDNN's ``printf`` is fully buffered when stdout is not a terminal)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def capture_fds(fds: tuple[int, ...] = (1, 2)) -> Iterator[Captured]:
    """Send what is written to ``fds`` (from Python or native code: the profiler's ``USDT ...
    profiler_start`` lines, oneDNN's verbose lines) to a temporary file for the duration of the
    block; ``Captured.text`` holds it afterwards. Python streams and C stdio are flushed at both
    ends, so nothing written before or inside the block leaks past it."""
    got = Captured()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _flush_native()
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile() as tmp:
        try:
            for fd in fds:
                with contextlib.suppress(OSError):
                    saved.append((fd, os.dup(fd)))
                    os.dup2(tmp.fileno(), fd)
            yield got
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            _flush_native()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            tmp.seek(0)
            got.text = tmp.read().decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class OneDnn:
    """The oneDNN primitives one call executed (``kind:implementation xN``, ';'-joined, first-seen
    order; None when none ran) and how many of them were reorders (layout conversions)."""

    primitives: str | None
    reorders: int


def parse_onednn(text: str) -> OneDnn:
    """Parse oneDNN verbose output: ``exec`` lines only, in the formats of oneDNN 3.x
    (``onednn_verbose,[v1|<timestamp>,]primitive,exec,cpu,<kind>,<impl>,...``) and of 2.x
    (``dnnl_verbose,exec,cpu,<kind>,<impl>,...``; ``mkldnn_verbose`` before it). Graph-API and
    creation (``create:cache_miss``) lines are not executions and are skipped."""
    seen: dict[str, int] = {}
    reorders = 0
    for line in text.splitlines():
        fields = line.strip().split(",")
        if not fields[0].endswith("_verbose") or "exec" not in fields[1:4] or "graph" in fields[1:4]:
            continue
        i = fields.index("exec", 1)
        if len(fields) < i + 4:
            continue
        kind, impl = fields[i + 2], fields[i + 3]
        key = f"{kind}:{impl}"
        seen[key] = seen.get(key, 0) + 1
        reorders += kind == "reorder"
    text_out = ";".join(f"{k} x{n}" for k, n in seen.items()) or None
    return OneDnn(primitives=text_out, reorders=reorders)


@contextlib.contextmanager
def _onednn_verbose(on: bool) -> Iterator[None]:
    """oneDNN's verbose mode (exec lines to stdout) for the block, where torch has mkldnn."""
    if not on:
        yield
        return
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        yield


def _profiler(activities: list[Any]) -> Any:
    """CPU alone: torch.autograd's profiler (the same events); ``torch.profiler.profile`` probes
    ``torch._inductor`` when it starts, which imports ``torch._dynamo`` (about 1.2 s a process)."""
    if list(activities) == [ProfilerActivity.CPU]:
        return autograd_profiler.profile(use_cpu=True)
    return profile(activities=activities)


def _traces_onednn(device: Device) -> bool:
    return device.backend.traces_onednn and torch.backends.mkldnn.is_available()


def what_ran(fn: Callable[..., Any], args: tuple, device: str | Device) -> dict[str, Any]:
    """Profile one call of ``fn(*args)``; on CPU with oneDNN verbose mode on around the same call.
    Whatever native code prints meanwhile (profiler, oneDNN) is captured at the file-descriptor
    level, parsed, and logged at debug level, never shown.

    Returns:
        ``kernels``: up to ``TOP_KERNELS`` names, longest self time first: GPU kernel names (e.g.
        ``sm90_xmma_gemm_...``, ``cudnn::...``), or on CPU the ATen implementation ops (e.g.
        ``aten::mkldnn_convolution``, ``aten::_slow_conv2d_forward``), ';'-joined;
        ``kernel_launches``: GPU kernels launched by one call (on CPU: ATen ops dispatched);
        ``onednn_primitives``, ``onednn_reorders``: what oneDNN executed in that call
        (``parse_onednn``); both None where oneDNN is not traced (GPU, torch without mkldnn).
    """
    device = resolve_device(device)
    backend = device.backend
    traced = _traces_onednn(device)
    with capture_fds() as out, contextlib.redirect_stderr(io.StringIO()):
        with _profiler(backend.profiler_activities()) as prof, _onednn_verbose(traced):
            fn(*args)
            backend.synchronize(device)
    if out.text:
        log.debug("native output of the profiled call:\n%s", out.text.rstrip())
    events = prof.function_events if hasattr(prof, "function_events") else prof.events()
    kernels = backend.device_kernels(events)
    times, launches = kernels if kernels is not None else _aten_implementations(events)
    top = sorted(times, key=lambda k: -times[k])[:TOP_KERNELS]
    onednn = parse_onednn(out.text) if traced else None
    return {"kernels": ";".join(top), "kernel_launches": launches,
            "onednn_primitives": onednn.primitives if onednn else None,
            "onednn_reorders": onednn.reorders if onednn else None}


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
