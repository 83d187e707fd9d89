"""The result record: one row per case x device x dtype, declared once.

A row is made of typed parts (``Key``, ``CaseFields``, ``Counts``, ``Timing``, ``WhatRan``,
``Health``, ``Peaks``, ``Provenance``); their fields *are* the columns, with units in the names
(``_s`` seconds, ``_flops_s`` FLOP/s, ``_bytes_s`` bytes/s, ``_mhz``, ``_bytes``) and a unit and a
meaning in each field's metadata. ``SCHEMA`` (pyarrow) is built from them and carries
``SCHEMA_VERSION`` in the file metadata; every writer goes through it and every reader validates
against it (``harness.store``), upgrading older versions (``harness.store.upgrade``). Analysis and
report import column names from here (the constants at the end) instead of repeating literals.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

import pyarrow as pa

#: Bumped whenever a column is added, removed, renamed or changes meaning; ``harness.store.upgrade``
#: reads every older version. 1: the first store (no version in the file); 2: typed record, machine
#: identity, stored peaks; 3: cross-process repeats, per-row host load and stability verdict, threading
#: policy, oneDNN primitives, per-level bandwidth ceilings; 4: the device's main-memory name and label
#: (stored from the run's ``Device``, so the analysis never asks a device string what it is); 5: the pass
#: and its gradients, the measured CPU clock, the canary and the samples it rejected, a bimodal row's
#: modes, timing notes, the pass's peak memory (older rows upgrade as forward passes); 6: the host heap's
#: policy while timing and the page faults per call.
SCHEMA_VERSION = 6
#: Parquet schema-metadata keys: the schema version and the run's metadata (JSON).
VERSION_KEY = b"layerbench.schema_version"
META_KEY = b"layerbench"


class _Word(str, Enum):
    """A stored word: compares equal to its value and prints as it."""

    def __str__(self) -> str:
        return self.value


class Stability(_Word):
    """Whether a measured row's time can carry a verdict (findings by median, compare, regress use ``stable``
    rows and rows with no verdict: ``harness.analysis.verdicts``; a set-aside row's finding must hold
    across processes: ``harness.analysis.findings``)."""

    STABLE = "stable"
    NOISY = "noisy"
    BIMODAL = "bimodal"
    CONTENDED = "contended"
    HOST_SLOWED = "host-slowed"


#: Timing modes (``Timing.mode``; ``auto`` settles on one of the others before sampling and is never stored):
#: ``hot`` (back-to-back calls), ``cold`` (GPU L2 flushed before each call), ``graph`` (CUDA-graph replays).
MODES = ("hot", "cold", "graph", "auto")
#: OpenMP wait policies a run may set in its measuring processes (``CaseFields.omp_wait_policy``; the
#: suite key ``omp_wait``, ``--omp-wait``).
OMP_WAIT_POLICIES = ("active", "passive")
#: The passes a row may time (``CaseFields.pass_``; the suite key ``passes``, ``--pass``): the forward; the
#: backward alone (gradients from a forward made before timing); both in one call (a training step).
PASSES = ("forward", "backward", "forward+backward")
#: The gradients a backward may compute (``CaseFields.grads``; the sweep key ``grads``), in stored order:
#: the layer's inputs' and its parameters' (``weight``: every parameter, biases included).
GRADIENTS = ("input", "weight")


class Status(_Word):
    """What happened to a row: ``ok`` (measured), ``skipped`` (an invalid configuration or a dtype
    the device cannot run, never measured), ``oom`` (out of memory), ``error`` (any other failure)."""

    OK = "ok"
    SKIPPED = "skipped"
    OOM = "oom"
    ERROR = "error"


def col(unit: str, doc: str, *, required: bool = False, added: int = 0, name: str | None = None,
        default: Any = None) -> Any:
    """A column: its unit (``-`` for none) and meaning; ``required`` columns are never null. Columns
    ``added`` after version 2 default to ``default`` (null), so code that does not fill them still
    builds rows. ``name``: the column's name where it is not a Python name (``pass``)."""
    meta = {"unit": unit, "doc": doc, "required": required, "added": added, "name": name}
    return field(metadata=meta, default=default) if added else field(metadata=meta)


def column_name(f: Any) -> str:
    """The column a dataclass field of a row part stores (its ``name`` metadata, else its own name)."""
    return f.metadata.get("name") or f.name


@dataclass(frozen=True, slots=True)
class Key:
    """Which row: the run, the case, the machine."""

    run_id: str = col("-", "the run: `<suite>-<device type>-<UTC time>`", required=True)
    row_id: str = col("-", "`<machine_id>:<device>:<case_id>`: this case on this device of this machine "
                      "(resume and dedupe key)", required=True)
    case_id: str = col("-", "hash of family, layer, canonical config, input shapes, memory format and dtype: "
                       "the same case on any machine (cross-device joins)", required=True)
    config_id: str = col("-", "hash of layer, canonical config, input shapes, memory format and dtype: the same "
                         "layer wherever it appears (several families may hold it)", required=True)
    suite: str = col("-", "suite name", required=True)
    family: str = col("-", "the sweep's family label (equal-FLOPs families share one)", required=True)
    machine_id: str = col("-", "12 hex digits: the hardware (CPU model/stepping/flags/cores, memory, GPU "
                          "models); README, Machine identity", required=True)
    machine_name: str = col("-", "readable machine label, e.g. `AMD EPYC (family 25 model 1, 2 CPUs)`",
                            required=True)
    settings_id: str = col("-", "12 hex digits: threads, affinity size and threading/math environment "
                           "variables", required=True)
    host: str = col("-", "host name (not part of machine_id)", required=True)


@dataclass(frozen=True, slots=True)
class CaseFields:
    """What was measured, under the spec's canonical parameter names."""

    layer: str = col("-", "layer kind (`conv2d`, `linear`, `sdpa`, ...)", required=True)
    config: str = col("-", "the validated layer's parameters as JSON under canonical names, defaults included "
                      "(`{\"in_channels\": 64, \"kernel_size\": [3, 3], ...}`); for a case invalid before "
                      "validation, its parameters as written under canonical names", required=True)
    axes: str = col("-", "the suite's coordinates of the case as JSON (`{\"batch\": 1, \"g\": 4, ...}`)",
                    required=True)
    input_shapes: str | None = col("-", "`8x64x28x28`, `;` between inputs")
    memory_format: str = col("-", "`nchw` or `channels_last`; `contiguous` where no input is 4-d or 5-d, and for "
                             "sdpa, mha, mm/bmm/matmul/einsum, linear, layernorm and softmax at the default "
                             "layout (their 4-d inputs are tokens, not images)", required=True)
    dtype: str = col("-", "`fp32`, `fp16`, `bf16`, `fp64`", required=True)
    device: str = col("-", "`cpu`, `cuda:0`", required=True)
    device_type: str = col("-", "`cpu`, `cuda` (the backend)", required=True)
    device_name: str = col("-", "CPU brand or GPU name", required=True)
    threads: int | None = col("count", "torch threads while timing (the run's setting for rows not timed)")
    omp_wait_policy: str | None = col("-", "OMP_WAIT_POLICY in the measuring process(es): `active`, `passive`, "
                                      "or null (unset: the OpenMP runtime's default)", added=3)
    main_memory: str | None = col("-", "the device's memory past its caches, as its backend names it: `DRAM` "
                                  "(CPU), `HBM` (GPU); the level of the main-memory roof", added=4)
    device_label: str | None = col("-", "the device as findings and tables name it: a GPU's name; for the host CPU "
                                   "the machine's label (`AMD EPYC (family 25 model 1, 2 CPUs)`), which says more "
                                   "than its brand", added=4)
    pass_: str = col("-", "`forward`, `backward` (the gradients of `grads` from a stored forward) or "
                     "`forward+backward` (both in one call); docs/backward-pass.md", added=5, name="pass",
                     default="forward")
    grads: str | None = col("-", "backward rows: the gradients computed, `,`-joined (`input,weight`, `weight`, "
                            "`input`); null for forward rows", added=5)


@dataclass(frozen=True, slots=True)
class Counts:
    """Analytic counts of the case (canonical convention), next to torch's own."""

    flops: int = col("FLOP", "floating-point operations per call, canonical convention (FLOPs = 2 x MACs for "
                     "products)")
    macs: int = col("MAC", "multiply-accumulates per call")
    params: int = col("element", "parameters (weights and biases) of the layer")
    bytes_read: int = col("byte", "minimum traffic read per call: each input and weight once at its dtype size")
    bytes_written: int = col("byte", "minimum traffic written per call")
    intensity_flop_per_byte: float = col("FLOP/byte", "flops / (bytes_read + bytes_written)")
    flop_counter_flops: int | None = col("FLOP", "torch.utils.flop_counter's count of the ops it covers")
    flop_counter_agrees: bool | None = col("-", "whether it equals ours on those ops (null when it covers none)")
    aten_ops: int = col("count", "ATen ops the pass dispatches")
    peak_memory_bytes: int | None = col("byte", "rows with a backward: memory the pass holds at its peak beyond its "
                                        "inputs and weights: CUDA `max_memory_allocated` over one forward and "
                                        "backward of an input set; CPU the saved activations and gradients, counted "
                                        "(see peak_memory_source); null for forward rows", added=5)
    peak_memory_source: str | None = col("-", "`measured` (the device's allocator) or `analytic` (counted from "
                                         "the shapes)", added=5)


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a call took, and how it was timed (seconds per call)."""

    timer: str = col("-", "`perf_counter_ns` (CPU), `cuda_event`, `cuda_graph`, `pytest-benchmark`")
    mode: str = col("-", "`hot`, `cold` (GPU L2 flushed before each call), `graph` (CUDA-graph replays)")
    number: int = col("call", "calls per sample")
    reps: int = col("count", "samples taken")
    samples_s: list[float] = col("s", "every sample, seconds per call, in the order taken")
    time_median_s: float = col("s", "median of the samples")
    time_q1_s: float = col("s", "first quartile")
    time_q3_s: float = col("s", "third quartile")
    time_iqr_s: float = col("s", "interquartile range")
    time_min_s: float = col("s", "fastest sample")
    time_max_s: float = col("s", "slowest sample")
    time_mean_s: float = col("s", "mean of the samples")
    time_std_s: float = col("s", "standard deviation")
    time_ci_low_s: float = col("s", "the median's 95 % confidence interval, low end (distribution-free)")
    time_ci_high_s: float = col("s", "the median's 95 % confidence interval, high end")
    rel_iqr: float = col("fraction", "IQR / median")
    rel_std: float = col("fraction", "std / mean")
    rel_ci: float = col("fraction", "half-width of the median's CI / median")
    outliers: int = col("count", "samples beyond 1.5 IQR of the quartiles (kept)")
    noisy: bool = col("-", "rel_iqr > 0.10 or fewer than 3 samples")
    stop_reason: str = col("-", "`converged`, `budget`, `max_reps`, `fixed`")
    target_rel_ci: float = col("fraction", "the noise target of the stopping rule")
    estimate_s: float = col("s", "per-call time estimated after warm-up (what sized `number`)")
    sampling_s: float = col("s", "host time spent sampling")
    warmup_calls: int = col("call", "calls before the first sample")
    warmup_s: float = col("s", "host time spent warming up")
    gc_paused: bool = col("-", "Python's garbage collector off while timing")
    rotation: int = col("count", "input sets cycled through, one per call")
    seed: int = col("-", "seed of the random inputs (taken from case_id; places the case's window of the input pool)")
    input_distribution: str = col("-", "`normal(0,1)`")
    cudnn_benchmark: bool | None = col("-", "CUDA rows: cuDNN autotuning during warm-up and timing")
    allow_tf32_matmul: bool | None = col("-", "CUDA rows: TF32 allowed in cuBLAS")
    allow_tf32_cudnn: bool | None = col("-", "CUDA rows: TF32 allowed in cuDNN")
    float32_matmul_precision: str | None = col("-", "CUDA rows: `highest`, `high`, `medium`")
    l2_flush_bytes: int | None = col("byte", "CUDA cold mode: bytes written to flush L2 before each call")
    processes: int | None = col("count", "fresh worker processes whose measurements judge the case (`--processes`, "
                                "less those set aside because the host canary beside them ran over 10 % above "
                                "the fastest process's: stability_reason names them); the statistics above are "
                                "those of the process whose median is the median", added=3)
    process_medians_s: list[float] | None = col("s", "each process's median, in the order the processes ran", added=3)
    process_median_s: float | None = col("s", "median over processes of their medians: the row's time "
                                         "(equals time_median_s for one process)", added=3)
    process_spread: float | None = col("fraction", "(largest - smallest process median) / process_median_s; "
                                       "0 for one process", added=3)
    samples_rejected: int | None = col("count", "sample blocks set aside because the canary beside them ran over "
                                       "5 % (or 3 of its median absolute deviations) above its median (every "
                                       "process); README, Shared hosts", added=5)
    canary_s: float | None = col("s", "host CPU rows: the median canary (seconds per step: one small GEMM and "
                                 "copy) beside the blocks of the process whose statistics are kept (the host's "
                                 "typical speed then)", added=5)
    process_canaries_s: list[float] | None = col("s", "each process's median canary beside its kept blocks, in "
                                                 "the order of process_medians_s", added=5)
    heap: str | None = col("-", "host CPU rows: the heap policy while timing (`glibc: mmap threshold 32 MiB, trim "
                           "threshold 1 GiB`: freed memory serves the next call; `allocator default` where it "
                           "could not be set); docs/measuring.md, The host heap", added=6)
    page_faults_per_call: float | None = col("count", "host CPU rows: minor page faults per call while sampling "
                                             "(the process's, canary included): memory first touched each call, "
                                             "a tensor above the 32 MiB mmap threshold mapped anew", added=6)
    timing_notes: str | None = col("-", "what was timed differently from what was asked (a graph capture that "
                                   "failed, timed hot), or needs care (one-call samples near the clock tick, with "
                                   "their mean; which attention backward the counts "
                                   "followed: the fused kernel's 2.5x or the math path's 2x)", added=5)


@dataclass(frozen=True, slots=True)
class WhatRan:
    """One profiled call: the implementations that ran."""

    kernels: str | None = col("-", "up to 3 kernels (GPU) or ATen implementations (CPU), longest first, `;`-joined")
    kernel_launches: int | None = col("count", "GPU kernels launched per call (CPU: ATen ops dispatched)")
    onednn_primitives: str | None = col("-", "CPU: oneDNN primitives one call executed, `kind:implementation` "
                                        "with `xN` counts, `;`-joined (null: oneDNN not used or not traced)", added=3)
    onednn_reorders: int | None = col("count", "CPU: oneDNN reorders (layout conversions) one call executed", added=3)


@dataclass(frozen=True, slots=True)
class Health:
    """Whether the row can be trusted."""

    status: Status = col("-", "`ok`, `skipped`, `oom`, `error`", required=True)
    error: str | None = col("-", "the reason or exception text (rows not ok)")
    throttled: bool | None = col("-", "GPU: the SM clock measured over a trial fell below 75 % of the rated clock "
                                 "(NVBench's rule); the power cap alone is a reason, not throttling")
    sm_clock_min_mhz: int | None = col("MHz", "GPU: lowest SM clock over a trial (measured by a timed spin kernel; "
                                       "sm_clock_source)")
    sm_clock_max_mhz: int | None = col("MHz", "GPU: highest SM clock over a trial")
    clock_reasons: str | None = col("-", "GPU: clock-event reasons NVML reported while the device was busy, "
                                    "`,`-joined (the software power cap among them)")
    host_busy: float | None = col("fraction", "share of the machine's CPU time taken by other processes while "
                                  "this row was measured (sampled around its own measurement; highest over "
                                  "processes)", added=3)
    stability: str | None = col("-", "`stable`, `noisy` (wide spread within a process), `bimodal` (processes "
                                "or samples split into separated clusters), `contended` (host_busy over the "
                                "threshold); null for rows not measured", added=3)
    stability_reason: str | None = col("-", "the figures behind the verdict", added=3)
    modes: str | None = col("-", "bimodal and host-slowed rows: JSON list of the two speeds, each "
                            "`{median_s, samples, processes, holds_row}` (`holds_row` false for both where one "
                            "process's samples split and the row's time is another process's median)", added=5)
    canary_slowdown: float | None = col("fraction", "how much slower the host ran in the row's slowest process "
                                        "than in its fastest: the largest process median canary / the smallest "
                                        "- 1 (0 for one process)", added=5)
    clock_mhz: float | None = col("MHz", "host CPU rows: the clock the row's CPUs ran at, measured by a "
                                  "dependent-add chain before and after the row (median)", added=5)
    clock_spread: float | None = col("fraction", "host CPU rows: (highest - lowest clock reading) / clock_mhz "
                                     "around the row", added=5)
    sm_clock_source: str | None = col("-", "GPU: `trial` (the SM clock measured by a timed spin kernel after "
                                      "each chunk) or `nvml` (sampled from NVML)", added=5)


@dataclass(frozen=True, slots=True)
class Peaks:
    """The peaks this row is measured against, resolved when the run started and stored with it."""

    peak_dtype: str | None = col("-", "the dtype whose peak applies: `tf32` for fp32 CUDA rows with TF32 "
                                 "allowed for that op (cuDNN for convolutions, cuBLAS otherwise)")
    peak_flops_s: float | None = col("FLOP/s", "theoretical peak: GPU datasheet, or the formula (CPU: cores x "
                                     "clock x FLOP/cycle; GPU: SMs x FLOP/clk/SM x clock)")
    peak_bytes_s: float | None = col("B/s", "theoretical memory bandwidth (GPU datasheet or formula; CPU: none)")
    peak_source: str = col("-", "`datasheet`, `formula`, `none`, or `not stored` (a run of an older schema)",
                           required=True)
    peak_native: bool | None = col("-", "false when the device has no unit for the dtype: the peak is then the "
                                   "fp32 rate, a bound, not a target")
    peak_detail: str | None = col("-", "where the peak comes from (datasheet row, formula and its factors)")
    ceiling_flops_s: float | None = col("FLOP/s", "measured GEMM ceiling for peak_dtype (`layerbench calibrate`)")
    ceiling_bytes_s: float | None = col("B/s", "measured copy bandwidth from main memory (DRAM/HBM), bytes "
                                        "read + written")
    ceiling_source: str = col("-", "`measured`, `none` (not calibrated), or `not stored` (older schema)",
                              required=True)
    ceiling_id: str | None = col("-", "12 hex digits naming the stored ceilings used (their key and time)")
    ceiling_gemm_n: int | None = col("-", "side n of the GEMM that set ceiling_flops_s")
    ceiling_copy_bytes: int | None = col("byte", "buffer size of the copy that set ceiling_bytes_s")
    ceiling_measured_at: str | None = col("-", "when the ceilings were measured (ISO 8601)")
    launch_overhead_s: float | None = col("s", "the backend's cost of one launch (CUDA kernel) or dispatched op "
                                          "(CPU): the analysis' launch floor")
    ceiling_l1_bytes_s: float | None = col("B/s", "CPU: measured bandwidth with buffers resident in L1", added=3)
    ceiling_l2_bytes_s: float | None = col("B/s", "measured bandwidth with buffers resident in L2 (CPU, GPU)", added=3)
    ceiling_l3_bytes_s: float | None = col("B/s", "CPU: measured bandwidth with buffers resident in L3", added=3)
    ceiling_levels: str | None = col("-", "JSON: per memory level, the buffer bytes that set its bandwidth and "
                                     "the cache size it was sized from", added=3)


@dataclass(frozen=True, slots=True)
class Provenance:
    """When and with what software."""

    timestamp: str = col("-", "when the row was stored (ISO 8601, local time with offset)", required=True)
    git_commit: str | None = col("-", "layerbench's commit (`-dirty` marks uncommitted changes)")
    harness_version: str = col("-", "layerbench version", required=True)
    torch_version: str = col("-", "torch version and build", required=True)
    cuda_version: str | None = col("-", "CUDA runtime torch was built with")
    cudnn_version: int | None = col("-", "cuDNN version")
    python_version: str = col("-", "Python version", required=True)


PARTS = (Key, CaseFields, Counts, Timing, WhatRan, Health, Peaks, Provenance)


@dataclass(frozen=True, slots=True)
class Row:
    """One stored row. ``counts``, ``timing`` and ``ran`` are ``None`` for rows that were not
    measured (their columns are null)."""

    key: Key
    case: CaseFields
    health: Health
    peaks: Peaks
    provenance: Provenance
    counts: Counts | None = None
    timing: Timing | None = None
    ran: WhatRan | None = None

    def to_record(self) -> dict[str, Any]:
        """The flat record (column -> plain Python value, nulls for absent parts), in schema order."""
        out: dict[str, Any] = {}
        for part_cls, part in zip(PARTS, (self.key, self.case, self.counts, self.timing, self.ran, self.health,
                                          self.peaks, self.provenance)):
            for f in fields(part_cls):
                out[column_name(f)] = _plain(getattr(part, f.name)) if part is not None else None
        return out

    @property
    def status(self) -> Status:
        return self.health.status

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Row:
        """The row of a flat record (``to_record``'s inverse); optional parts whose columns are all
        null are ``None``."""
        parts: dict[str, Any] = {}
        for name, part_cls in zip(_PART_NAMES, PARTS):
            values = {f.name: record.get(column_name(f)) for f in fields(part_cls)}
            if part_cls is Health and values["status"] is not None:
                values["status"] = Status(values["status"])
            if name in _OPTIONAL_PARTS and all(v is None for v in values.values()):
                parts[name] = None
            else:
                parts[name] = part_cls(**values)
        return cls(**parts)


_PART_NAMES = ("key", "case", "counts", "timing", "ran", "health", "peaks", "provenance")
_OPTIONAL_PARTS = ("counts", "timing", "ran")


def _plain(v: Any) -> Any:
    if isinstance(v, Enum):
        return v.value
    if hasattr(v, "item") and not isinstance(v, (list, tuple, str, bytes)):
        return v.item()                                         # numpy scalars
    if isinstance(v, tuple):
        return list(v)
    return v


# --- columns and the Arrow schema -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Column:
    name: str
    part: str
    arrow: pa.DataType
    python: type
    unit: str
    doc: str
    required: bool
    added: int = 2


_ARROW: dict[Any, pa.DataType] = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(),
                                  Status: pa.string(), Stability: pa.string()}


def _arrow_type(hint: Any) -> tuple[pa.DataType, type]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list:
        return pa.list_(_ARROW[args[0]]), list
    if args and typing.get_origin(hint) is not list:        # X | None
        return _arrow_type(args[0])
    return _ARROW[hint], (str if hint in (Status, Stability) else hint)


def _columns() -> tuple[Column, ...]:
    out = []
    for part in PARTS:
        hints = typing.get_type_hints(part)
        for f in fields(part):
            arrow, py = _arrow_type(hints[f.name])
            out.append(Column(column_name(f), part.__name__, arrow, py, f.metadata["unit"], f.metadata["doc"],
                              f.metadata["required"], f.metadata.get("added") or 2))
    names = [c.name for c in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RuntimeError(f"columns declared twice: {sorted(dup)}")
    return tuple(out)


COLUMNS: tuple[Column, ...] = _columns()
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
BY_NAME: Mapping[str, Column] = {c.name: c for c in COLUMNS}
SCHEMA: pa.Schema = pa.schema([pa.field(c.name, c.arrow, nullable=not c.required) for c in COLUMNS],
                              metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()})


def names_in_version(version: int) -> tuple[str, ...]:
    """The columns a file of schema ``version`` (2 or later) holds."""
    return tuple(c.name for c in COLUMNS if c.added <= version)


def columns_markdown(columns: tuple[Column, ...] = COLUMNS) -> str:
    """The table of columns in docs/columns.md: name, unit, meaning, grouped by part."""
    lines = ["| column | unit | meaning |", "|---|---|---|"]
    part = None
    for c in columns:
        if c.part != part:
            part = c.part
            lines.append(f"| **{part}** | | |")
        lines.append(f"| `{c.name}` | {c.unit} | {c.doc}{' (never null)' if c.required else ''} |")
    return "\n".join(lines)


def to_table(records: list[Mapping[str, Any]], metadata: Mapping[str, Any] | None = None) -> pa.Table:
    """Records (``Row.to_record()``) as an Arrow table of ``SCHEMA``; a value of the wrong type raises."""
    table = pa.Table.from_pylist([{n: r.get(n) for n in COLUMN_NAMES} for r in records], schema=SCHEMA)
    meta = dict(SCHEMA.metadata)
    if metadata is not None:
        meta[META_KEY] = json.dumps(metadata, default=str, allow_nan=False).encode()
    return table.replace_schema_metadata(meta)


def check_required(table: pa.Table, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` and the column when a required column holds a null."""
    for c in COLUMNS:
        if c.required and table.column(c.name).null_count:
            raise ValueError(f"{where}: column {c.name}: null values, expected {c.python.__name__} in every row")


# --- column names used downstream (analysis, report, CLI) ----------------------------------------------

RUN_ID, ROW_ID, CASE_ID, CONFIG_ID, SUITE, FAMILY = "run_id", "row_id", "case_id", "config_id", "suite", "family"
MACHINE_ID, MACHINE_NAME, SETTINGS_ID, HOST = "machine_id", "machine_name", "settings_id", "host"
LAYER, CONFIG, AXES, INPUT_SHAPES, MEMORY_FORMAT, DTYPE = "layer", "config", "axes", "input_shapes", "memory_format", \
    "dtype"
DEVICE, DEVICE_TYPE, DEVICE_NAME, THREADS = "device", "device_type", "device_name", "threads"
MAIN_MEMORY, DEVICE_LABEL = "main_memory", "device_label"
PASS, GRADS, PEAK_MEMORY, PEAK_MEMORY_SOURCE = "pass", "grads", "peak_memory_bytes", "peak_memory_source"
SAMPLES_REJECTED, CANARY, PROCESS_CANARIES, TIMING_NOTES = "samples_rejected", "canary_s", "process_canaries_s", \
    "timing_notes"
MODES_COLUMN, CANARY_SLOWDOWN, CLOCK_MHZ, CLOCK_SPREAD = "modes", "canary_slowdown", "clock_mhz", "clock_spread"
FLOPS, MACS, PARAMS, BYTES_READ, BYTES_WRITTEN = "flops", "macs", "params", "bytes_read", "bytes_written"
INTENSITY = "intensity_flop_per_byte"
OMP_WAIT_POLICY = "omp_wait_policy"
PROCESSES, PROCESS_MEDIANS, PROCESS_MEDIAN, PROCESS_SPREAD = "processes", "process_medians_s", "process_median_s", \
    "process_spread"
HOST_BUSY, STABILITY, STABILITY_REASON = "host_busy", "stability", "stability_reason"
ONEDNN_PRIMITIVES, ONEDNN_REORDERS = "onednn_primitives", "onednn_reorders"
CEILING_L1_BYTES, CEILING_L2_BYTES, CEILING_L3_BYTES, CEILING_LEVELS = "ceiling_l1_bytes_s", "ceiling_l2_bytes_s", \
    "ceiling_l3_bytes_s", "ceiling_levels"
TIME_MEDIAN, TIME_Q1, TIME_Q3 = "time_median_s", "time_q1_s", "time_q3_s"
TIME_CI_LOW, TIME_CI_HIGH, REL_IQR, REL_CI, NOISY = "time_ci_low_s", "time_ci_high_s", "rel_iqr", "rel_ci", "noisy"
SAMPLES, TIMER, ROTATION = "samples_s", "timer", "rotation"
KERNELS, KERNEL_LAUNCHES, ATEN_OPS = "kernels", "kernel_launches", "aten_ops"
STATUS, ERROR = "status", "error"
PEAK_DTYPE, PEAK_FLOPS, PEAK_BYTES, PEAK_SOURCE, PEAK_NATIVE = "peak_dtype", "peak_flops_s", "peak_bytes_s", \
    "peak_source", "peak_native"
PEAK_DETAIL, CEILING_MEASURED_AT = "peak_detail", "ceiling_measured_at"
CEILING_FLOPS, CEILING_BYTES, CEILING_SOURCE = "ceiling_flops_s", "ceiling_bytes_s", "ceiling_source"
LAUNCH_OVERHEAD = "launch_overhead_s"
TORCH_VERSION, GIT_COMMIT, TIMESTAMP = "torch_version", "git_commit", "timestamp"

#: What a case is, as a person reads it (tables, compare output): a backward of a layer is not its forward.
IDENTITY = (FAMILY, LAYER, CONFIG, INPUT_SHAPES, MEMORY_FORMAT, DTYPE, PASS, GRADS)
#: What a row's measurements are grouped by: never mixed across these.
MACHINE_KEYS = (MACHINE_ID, DEVICE, DEVICE_NAME)

__all__ = [
    'MODES', 'OMP_WAIT_POLICIES', 'PASSES', 'GRADIENTS', 'PEAK_DETAIL', 'CEILING_MEASURED_AT',
    'SCHEMA_VERSION', 'VERSION_KEY', 'META_KEY', 'Stability', 'Status', 'col', 'Key',
    'CaseFields', 'Counts', 'Timing', 'WhatRan', 'Health', 'Peaks', 'Provenance', 'PARTS', 'Row', 'Column',
    'COLUMNS', 'COLUMN_NAMES', 'BY_NAME', 'SCHEMA', 'names_in_version', 'columns_markdown', 'to_table',
    'check_required', 'RUN_ID', 'ROW_ID', 'CASE_ID', 'CONFIG_ID', 'SUITE', 'FAMILY', 'MACHINE_ID', 'MACHINE_NAME',
    'SETTINGS_ID', 'HOST', 'LAYER', 'CONFIG', 'AXES', 'INPUT_SHAPES', 'MEMORY_FORMAT', 'DTYPE', 'DEVICE',
    'DEVICE_TYPE', 'DEVICE_NAME', 'THREADS', 'MAIN_MEMORY', 'DEVICE_LABEL', 'PASS', 'GRADS', 'PEAK_MEMORY',
    'PEAK_MEMORY_SOURCE', 'SAMPLES_REJECTED', 'CANARY', 'PROCESS_CANARIES', 'TIMING_NOTES', 'MODES_COLUMN',
    'CANARY_SLOWDOWN', 'CLOCK_MHZ', 'CLOCK_SPREAD', 'column_name', 'FLOPS', 'MACS', 'PARAMS', 'BYTES_READ',
    'BYTES_WRITTEN', 'INTENSITY', 'OMP_WAIT_POLICY', 'PROCESSES', 'PROCESS_MEDIANS', 'PROCESS_MEDIAN',
    'PROCESS_SPREAD', 'HOST_BUSY', 'STABILITY', 'STABILITY_REASON', 'ONEDNN_PRIMITIVES', 'ONEDNN_REORDERS',
    'CEILING_L1_BYTES', 'CEILING_L2_BYTES', 'CEILING_L3_BYTES', 'CEILING_LEVELS', 'TIME_MEDIAN', 'TIME_Q1',
    'TIME_Q3', 'TIME_CI_LOW', 'TIME_CI_HIGH', 'REL_IQR', 'REL_CI', 'NOISY', 'SAMPLES', 'TIMER', 'ROTATION',
    'KERNELS', 'KERNEL_LAUNCHES', 'ATEN_OPS', 'STATUS', 'ERROR', 'PEAK_DTYPE', 'PEAK_FLOPS', 'PEAK_BYTES',
    'PEAK_SOURCE', 'PEAK_NATIVE', 'CEILING_FLOPS', 'CEILING_BYTES', 'CEILING_SOURCE', 'LAUNCH_OVERHEAD',
    'TORCH_VERSION', 'GIT_COMMIT', 'TIMESTAMP', 'IDENTITY', 'MACHINE_KEYS',
]
