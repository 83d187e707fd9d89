"""What one measurement is: raw samples and the conditions they were taken under. Data, not prints."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from harness.backends.base import ClockSummary
from harness.timing.canary import CanaryReport
from harness.timing.stats import Stats


@dataclass(frozen=True)
class Measurement:
    """Raw timing samples of one callable on one device, and how they were taken.

    Every sample is one timed block of ``number`` calls; ``samples_s`` holds seconds *per call*
    (the block's time divided by ``number``). ``stats`` is computed from them on first use.

    Attributes:
        device: ``cpu`` or ``cuda:N``.
        timer: clock used: ``perf_counter_ns`` (CPU, monotonic), ``cuda_event`` (an event pair per
            sample), ``cuda_graph`` (an event pair around a graph replay of ``number`` calls).
        mode: ``hot`` (back-to-back calls, warm caches), ``cold`` (GPU L2 flushed before every
            call, flush not timed), ``graph`` (CUDA-graph replays: no launch overhead per call).
        samples_s: seconds per call, one value per sample, in the order taken.
        number: calls per sample.
        warmup_calls, warmup_s: calls made and seconds spent before the first sample.
        estimate_s: per-call time estimated after warm-up (what sized ``number``).
        sampling_s: host wall-clock seconds spent taking the samples.
        threads: ``torch.get_num_threads()`` during the measurement.
        gc_paused: whether Python's garbage collector was disabled while timing.
        rotation: number of input sets the calls cycled through (1 = the same inputs every call).
        stop_reason: ``converged``, ``budget``, ``max_reps`` or ``fixed``, followed by the ``notes``
            (``; ``-joined), so that a row's ``stop_reason`` column carries them.
        target_rel_ci: the confidence-interval target of the stopping rule (``nan`` if none).
        settings: backend flags in force (cudnn_benchmark, TF32 switches, L2 flush bytes, ...).
        clocks: GPU clock/throttle summary, ``None`` on CPU.
        notes: what was timed differently from what was asked, or needs reading with care: a graph
            capture that failed and was timed hot (with the error), one-call samples within a few
            event ticks (with their mean), a host slow beside every block.
        canary: what the host canary said (``harness.timing.canary``): the blocks it rejected (not in
            ``samples_s``) and its readings beside the kept ones; ``None`` without a canary.
        heap: the host heap's policy while timing (``harness.timing.heap``); ``None`` off the host.
        page_faults_per_call: minor page faults per call while sampling (host only).
    """

    device: str
    timer: str
    mode: str
    samples_s: tuple[float, ...]
    number: int
    warmup_calls: int
    warmup_s: float
    estimate_s: float
    sampling_s: float
    threads: int
    gc_paused: bool
    rotation: int
    stop_reason: str
    target_rel_ci: float
    settings: Mapping[str, Any] = field(default_factory=dict)
    clocks: ClockSummary | None = None
    notes: tuple[str, ...] = ()
    canary: CanaryReport | None = None
    heap: str | None = None
    page_faults_per_call: float | None = None

    @cached_property
    def stats(self) -> Stats:
        """Statistics of ``samples_s`` (seconds per call)."""
        return Stats.of(self.samples_s)

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return self.stats.median

    @property
    def converged(self) -> bool:
        """Whether sampling stopped because the noise target was met."""
        return self.stop_reason.split(";", 1)[0] == "converged"

    @property
    def throttled(self) -> bool:
        """Whether a trial's SM clock fell under the backend's threshold of the rated clock."""
        return bool(self.clocks and self.clocks.throttled)

    def summary(self) -> dict[str, Any]:
        """One flat record: conditions, ``time_*`` statistics (seconds per call), clocks."""
        st = dataclasses.asdict(self.stats)
        out: dict[str, Any] = {
            "device": self.device, "timer": self.timer, "mode": self.mode, "number": self.number,
            "warmup_calls": self.warmup_calls, "warmup_s": self.warmup_s, "threads": self.threads,
            "gc_paused": self.gc_paused, "rotation": self.rotation, "stop_reason": self.stop_reason,
            "target_rel_ci": self.target_rel_ci, "sampling_s": self.sampling_s,
        }
        out["reps"] = st.pop("n")
        out.update({f"time_{k}_s" if k in _TIME_FIELDS else k: v for k, v in st.items()})
        out.update(self.settings)
        c = self.clocks
        out.update({
            "sm_clock_min_mhz": c.sm_clock_min_mhz if c else None,
            "sm_clock_max_mhz": c.sm_clock_max_mhz if c else None,
            "clock_reasons": ",".join(c.reasons) if c else "",
            "throttled": self.throttled,
            "notes": "; ".join(self.notes),
        })
        return out


_TIME_FIELDS = {"median", "q1", "q3", "iqr", "min", "max", "mean", "std", "ci_low", "ci_high"}
