"""One case into one row: analytic counts on the meta device, the layer built on the device with
seeded random inputs, timing, what ran, and the health of the result. Every failure becomes a row
(``skipped``, ``oom``, ``error``) with its reason; nothing here writes or prints."""

from __future__ import annotations

import dataclasses
import logging
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from harness.analytic.count import count_totals
from harness.backends import Device
from harness.devices import clock
from harness.errors import SpecError
from harness.layers.dtypes import itemsize, parse_dtype
from harness.layers.modules import build_module
from harness.record import Counts, Health, Row, Status, Timing, WhatRan
from harness.runner.context import RunContext
from harness.suite import Case
from harness.timing import Measurement, heap, rotation_sets
from harness.timing.inputs import POOL
from harness.timing.passes import Pass, make_pass
from harness.timing.profile import what_ran

log = logging.getLogger(__name__)

#: Longest error text a row keeps.
MAX_ERROR = 2000
INPUT_DISTRIBUTION = "normal(0,1)"


#: Added to a case's seed for its gradient outputs (they come from another window of the input pool).
GRAD_SEED_OFFSET = 0x9E3779B1
FORWARD = "forward"


@dataclass(frozen=True, slots=True)
class Analytic:
    """The analytic part of a row: its counts, the saved-activation bytes of a pass with a backward
    (``None`` for the forward) and what a reader must know of how it was counted (the attention
    backward's convention)."""

    counts: Counts
    saved_bytes: int | None
    notes: tuple[str, ...]


def analytic_counts(case: Case) -> Counts:
    """The analytic columns: canonical counts on the meta device and torch's own count, of the case's
    pass (the backward of its ``grads``, or the sum of both passes)."""
    return analytic(case).counts


def analytic(case: Case) -> Analytic:
    """``analytic_counts`` with the saved-activation bytes and the counting notes."""
    dtype = parse_dtype(case.dtype)
    assert case.spec is not None and case.inputs is not None
    t = count_totals(build_module(case.spec, dtype, "meta"), *case.inputs, dtype=dtype, passes=case.pass_,
                     grads=case.grads if case.pass_ != FORWARD else None)
    counts = Counts(flops=int(t["flops"]), macs=int(t["macs"]), params=int(t["params"]),
                    bytes_read=int(t["bytes_read"]), bytes_written=int(t["bytes_written"]),
                    intensity_flop_per_byte=float(t["intensity"]), flop_counter_flops=int(t["flop_counter_flops"]),
                    flop_counter_agrees=bool(t["flop_counter_disagreements"] == 0) if t["flop_counter_ops"] else None,
                    aten_ops=int(t["ops"]))
    saved = t.get("saved_activation_bytes")
    note = t.get("count_note")
    return Analytic(counts, int(saved) if saved is not None else None,
                    (str(note),) if isinstance(note, str) and note else ())


def case_seed(case: Case) -> int:
    """The inputs' seed: the first 32 bits of the case id."""
    return int(case.case_id[:8], 16)


def _memory_format(case: Case) -> torch.memory_format | None:
    assert case.inputs is not None
    if case.memory_format != "channels_last":
        return None
    return torch.channels_last if len(case.inputs[0]) == 4 else torch.channels_last_3d


def input_bytes(case: Case) -> int:
    """Bytes of one input set."""
    assert case.inputs is not None
    return sum(math.prod(s) for s in case.inputs) * itemsize(parse_dtype(case.dtype))


def prepare_case(case: Case, device: Device, per_set: int | None = None) -> tuple[torch.nn.Module, list[tuple], int]:
    """The layer on ``device`` and its random input sets (enough to span twice its last-level cache,
    at most ``MAX_ROTATION``, sets of ``per_set`` bytes, default the inputs'): windows of the process's
    input pool at an offset taken from the case id (``harness.timing.inputs.InputPool``). The layer is
    in the mode its spec builds, as its counts are taken, forward and backward alike: a norm uses batch
    statistics only with ``train=true``; dropout and attention modules are in eval mode."""
    dtype = parse_dtype(case.dtype)
    assert case.spec is not None and case.inputs is not None
    llc_bytes = device.llc_bytes
    module = build_module(case.spec, dtype, device.tensors)
    fmt = _memory_format(case)
    if fmt is not None:
        module = module.to(memory_format=fmt)
    seed = case_seed(case)
    sets = rotation_sets(per_set or input_bytes(case), llc_bytes)
    return module, POOL.inputs(case.inputs, dtype, device.tensors, seed, sets, llc_bytes, memory_format=fmt), seed


def prepare_pass(case: Case, device: Device, counts: Counts) -> tuple[Pass, int]:
    """The case's pass ready to time (``harness.timing.passes``) and its inputs' seed. A pass with a
    backward rotates sets sized by the bytes one call moves (its counts); its gradient outputs are
    windows of the input pool too, laid out like the inputs. On the host, the heap is held steady
    before the case's tensors exist (``harness.timing.heap``): every path that times a case (a run's
    rows, interleaved confirmations, the pytest plugin) makes them here."""
    if device.host:
        heap.steady()
    moved = counts.bytes_read + counts.bytes_written if case.pass_ != FORWARD else None
    module, sets, seed = prepare_case(case, device, moved)
    dtype, fmt = parse_dtype(case.dtype), _memory_format(case)

    def draw(shapes: list[tuple[int, ...]], n: int) -> list[tuple[torch.Tensor, ...]]:
        return POOL.inputs(shapes, dtype, device.tensors, seed + GRAD_SEED_OFFSET, n, device.llc_bytes,
                           memory_format=fmt)

    return make_pass(case.pass_, module, sets, case.grads, draw), seed


def analytic_peak_bytes(case: Case, work: Pass, saved_bytes: int | None) -> int | None:
    """A pass with a backward: the saved activations (counted) plus the gradients it returns."""
    if saved_bytes is None or case.grads is None:
        return None
    grads = input_bytes(case) if "input" in case.grads else 0
    if "weight" in case.grads:
        params = sum(p.numel() for p in work.module.parameters() if p.is_floating_point())
        grads += params * itemsize(parse_dtype(case.dtype))
    return saved_bytes + grads


def timing_of(m: Measurement, seed: int, notes: tuple[str, ...] = ()) -> Timing:
    """The timing part of a row from a Measurement (seconds per call); ``notes``: what the counts need
    said beside the timer's own notes (the attention backward's counting convention)."""
    st, s = m.stats, m.settings
    return Timing(timer=m.timer, mode=m.mode, number=m.number, reps=st.n, samples_s=list(m.samples_s),
                  time_median_s=st.median, time_q1_s=st.q1, time_q3_s=st.q3, time_iqr_s=st.iqr, time_min_s=st.min,
                  time_max_s=st.max, time_mean_s=st.mean, time_std_s=st.std, time_ci_low_s=st.ci_low,
                  time_ci_high_s=st.ci_high, rel_iqr=st.rel_iqr, rel_std=st.rel_std, rel_ci=st.rel_ci,
                  outliers=st.outliers, noisy=st.noisy, stop_reason=m.stop_reason.split(";", 1)[0],
                  target_rel_ci=m.target_rel_ci,
                  estimate_s=m.estimate_s, sampling_s=m.sampling_s, warmup_calls=m.warmup_calls,
                  warmup_s=m.warmup_s, gc_paused=m.gc_paused, rotation=m.rotation, seed=seed,
                  input_distribution=INPUT_DISTRIBUTION, cudnn_benchmark=s.get("cudnn_benchmark"),
                  allow_tf32_matmul=s.get("allow_tf32_matmul"), allow_tf32_cudnn=s.get("allow_tf32_cudnn"),
                  float32_matmul_precision=s.get("float32_matmul_precision"), l2_flush_bytes=s.get("l2_flush_bytes"),
                  samples_rejected=m.canary.rejected if m.canary else None,
                  canary_s=m.canary.reference_s if m.canary else None,
                  process_canaries_s=[m.canary.median_s] if m.canary else None,
                  heap=m.heap, page_faults_per_call=m.page_faults_per_call,
                  timing_notes="; ".join((*m.notes, *notes)) or None)


def health_of(m: Measurement, cpu_clock: clock.ClockReading | None = None) -> Health:
    """The health part of a measured row: GPU clocks, the host canary's slowdown, the CPU clock read
    around the row (``cpu_clock``)."""
    c = m.clocks
    return Health(status=Status.OK, error=None, throttled=m.throttled if c is not None else None,
                  sm_clock_min_mhz=c.sm_clock_min_mhz if c else None,
                  sm_clock_max_mhz=c.sm_clock_max_mhz if c else None,
                  clock_reasons=",".join(c.reasons) if c else None, sm_clock_source=c.source if c else None,
                  canary_slowdown=0.0 if m.canary else None,    # across processes: repeats
                  clock_mhz=cpu_clock.mhz if cpu_clock else None, clock_spread=cpu_clock.spread if cpu_clock else None)


def failed(status: Status, error: str) -> Health:
    return Health(status=status, error=error[:MAX_ERROR], throttled=None, sm_clock_min_mhz=None,
                  sm_clock_max_mhz=None, clock_reasons=None)


@dataclass(frozen=True, slots=True)
class Measured:
    counts: Counts
    timing: Timing
    ran: WhatRan | None
    health: Health
    settings: dict[str, Any]
    threads: int


def measure_case(case: Case, ctx: RunContext, measure_fn: Callable[..., Measurement],
                 profile: bool = True) -> Measured:
    """Counts and timing of one case: the measured part of a row. ``ctx.mode`` (hot, cold, graph,
    auto) applies where the backend supports it. The case's pass is prepared before the timer starts
    (a backward's forward graphs included: ``harness.timing.passes``), inside the backend's scope for
    the pass (its own CUDA stream for a backward). Raises whatever building or running the layer
    raises (``build_row`` turns it into a row)."""
    device = ctx.device
    backend = device.backend
    problem = backend.dtype_problem(device, case.dtype)
    if problem is not None:
        raise SpecError("dtype", case.dtype, problem)
    counted = analytic(case)
    s = ctx.suite
    mode = ctx.mode if ctx.mode in device.modes or ctx.mode == "auto" else "hot"
    threads = case.threads or ctx.threads
    with backend.pass_scope(device, case.pass_):
        work, seed = prepare_pass(case, device, counted.counts)
        before = clock.around(threads) if device.host else None
        with work.grad_mode():
            m = measure_fn(work.fn, device=device, inputs=work.sets, threads=threads, budget_s=s.budget_s,
                           target_rel_ci=s.target_rel_ci, warmup_s=s.warmup_s, min_reps=s.min_reps, mode=mode)
        cpu_clock = clock.combined(before, clock.around(threads)) if device.host else None
        ran = None
        if profile:
            with work.grad_mode():
                ran = WhatRan(**what_ran(work.fn, work.sets[0], device))
        counts = peak_memory(case, work, counted, device)
    return Measured(counts=counts, timing=timing_of(m, seed, counted.notes), ran=ran,
                    health=health_of(m, cpu_clock), settings=dict(m.settings), threads=m.threads)


def peak_memory(case: Case, work: Pass, counted: Analytic, device: Device) -> Counts:
    """The counts with the peak memory of a pass with a backward: measured by the device's allocator
    over one training step (``Backend.peak_memory``), else counted (``analytic_peak_bytes``); a
    forward's stays null."""
    if work.step is None:
        return counted.counts
    with work.grad_mode():
        measured = device.backend.peak_memory(device, work.step)
    if measured is not None:
        return dataclasses.replace(counted.counts, peak_memory_bytes=int(measured), peak_memory_source="measured")
    peak = analytic_peak_bytes(case, work, counted.saved_bytes)
    return dataclasses.replace(counted.counts, peak_memory_bytes=peak,
                               peak_memory_source="analytic" if peak is not None else None)


def build_row(case: Case, ctx: RunContext, measure_fn: Callable[..., Measurement], profile: bool = True) -> Row:
    """The row of ``case``: measured, or ``skipped``/``oom``/``error`` with the reason. Only
    ``KeyboardInterrupt`` (and other ``BaseException``s) pass through."""
    base = {"key": ctx.key(case)}
    if case.skip is not None:
        return Row(**base, case=ctx.case_fields(case), health=failed(Status.SKIPPED, case.skip),
                   peaks=ctx.peaks_for(case), provenance=ctx.provenance())
    try:
        got = measure_case(case, ctx, measure_fn, profile)
    except SpecError as e:
        health = failed(Status.SKIPPED, str(e))
    except Exception as e:
        oom = ctx.backend.is_oom(e)
        health = failed(Status.OOM if oom else Status.ERROR, f"{type(e).__name__}: {e}".strip())
        if oom:
            ctx.backend.after_oom(ctx.device)
        else:
            log.debug("case %s failed:\n%s", case.case_id, traceback.format_exc())
    else:
        return Row(**base, case=ctx.case_fields(case, got.threads), health=got.health,
                   peaks=ctx.peaks_for(case, got.settings), provenance=ctx.provenance(), counts=got.counts,
                   timing=got.timing, ran=got.ran)
    return Row(**base, case=ctx.case_fields(case), health=health, peaks=ctx.peaks_for(case),
               provenance=ctx.provenance())
