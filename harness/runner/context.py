"""What a run fixes when it starts: its id and directory, the ``Device`` (resolved once), the
machine identity, the thread setting, and the peaks and ceilings every row will carry. The context
is made once, in the run's own process, and travels whole in every worker's job: no worker
describes the machine, runs git or looks up ceilings again."""

from __future__ import annotations

import dataclasses
import logging
import platform
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import harness
from harness.backends import Device, with_variants
from harness.ceilings.calibrate import Ceilings, calibrate, lookup, plan
from harness.devices.identity import MachineInfo, describe_machine_identity
from harness.devices.peaks import Peak
from harness.record import CaseFields, Key, Peaks, Provenance, Repeats, RunMeta, now_iso
from harness.record.ids import row_id
from harness.suite import Case, Suite
from harness.timing.hostload import auto_threads, cpu_load

log = logging.getLogger(__name__)

#: ``calibrate`` choices of a run: measure the missing ceilings, re-measure all, or use what is stored.
CALIBRATE = ("missing", "always", "never")


@dataclass(frozen=True, slots=True)
class RunContext:
    """The fixed facts of one run shard (everything a row repeats)."""

    run_id: str
    suite: Suite
    device: Device
    machine: MachineInfo
    threads: int
    mode: str
    shard: tuple[int, int]
    peaks: Mapping[str, Peaks]
    ceilings: Ceilings | None
    git_commit: str | None
    #: What ``--threads auto`` saw and chose (``harness.timing.hostload.auto_threads``), or ``None``.
    threads_choice: str | None = None

    @property
    def backend(self) -> Any:
        return self.device.backend

    def key(self, case: Case) -> Key:
        m = self.machine
        return Key(run_id=self.run_id, row_id=self.row_id(case.case_id), case_id=case.case_id,
                   config_id=case.config_id, suite=self.suite.name, family=case.family, machine_id=m.machine_id,
                   machine_name=m.name, settings_id=m.settings_id, host=m.host)

    def row_id(self, case_id: str) -> str:
        return row_id(self.machine.machine_id, self.device.spec, case_id)

    def case_fields(self, case: Case, threads: int | None = None) -> CaseFields:
        d = self.device
        return CaseFields(layer=case.layer, config=case.config_json(), axes=case.axes_json(),
                          input_shapes=case.input_text(), memory_format=stored_layout(case), dtype=case.dtype,
                          device=d.spec, device_type=d.type, device_name=d.name,
                          threads=threads or case.threads or self.threads, main_memory=d.main_memory,
                          device_label=self.machine.name if d.host else d.name, pass_=case.pass_,
                          grads=case.grads_text())

    def peaks_for(self, case: Case, settings: Mapping[str, Any] | None = None) -> Peaks:
        """The peaks of ``case``'s peak dtype (the backend's rule: TF32 on CUDA fp32) under ``settings``
        (default: the backend's settings now)."""
        if settings is None:
            settings = self.backend.settings(self.device)
        return self.peaks.get(self.backend.peak_dtype(case.layer, case.dtype, settings)) or _no_peaks()

    def provenance(self) -> Provenance:
        s = self.machine.software
        return Provenance(timestamp=now_iso(), git_commit=self.git_commit, harness_version=harness.__version__,
                          torch_version=s.torch, cuda_version=s.cuda, cudnn_version=s.cudnn, python_version=s.python)

    def with_peaks(self, peaks: Mapping[str, Peaks]) -> RunContext:
        return dataclasses.replace(self, peaks=dict(peaks))

    def metadata(self, dtypes: Sequence[str] | None, started: float, argv: Sequence[str], repeats: Repeats,
                 load_avg: tuple[float, ...] | None) -> RunMeta:
        """The run's metadata (stored beside the rows and in the Parquet file)."""
        m, d = self.machine, self.device
        return RunMeta(run_id=self.run_id, suite=self.suite.name, suite_file=self.suite.path, device=d.spec,
                       device_type=d.type, device_name=d.name, shard=self.shard,
                       dtypes=tuple(dtypes) if dtypes else None, argv=tuple(argv), timing_mode=self.mode,
                       threads=self.threads, git_commit=self.git_commit, started=now_iso(started),
                       machine_id=m.machine_id, machine_name=m.name, settings_id=m.settings_id, host=m.host,
                       machine=m.to_json(), peaks=dict(self.peaks),
                       ceilings=self.ceilings.to_json() if self.ceilings is not None else None, load_avg=load_avg,
                       harness_version=harness.__version__, torch_version=torch.__version__,
                       python_version=platform.python_version(), repeats=repeats, threads_choice=self.threads_choice)


#: The layout a row stores for inputs with no image layout (none 4-d or 5-d: linear, attention, norms
#: over tokens): ``contiguous``, not ``nchw`` (the case id still hashes the suite's ``nchw``, so ids
#: of such rows stored before are unchanged).
NO_LAYOUT = "contiguous"
#: Layers whose 4-d inputs are not images (attention's batch x heads x tokens x features, batched
#: matrices, scores): their default layout is stored as ``NO_LAYOUT`` too.
TOKEN_LAYERS = frozenset({"sdpa", "mha", "bmm", "matmul", "einsum", "mm", "linear", "layernorm", "softmax"})


def stored_layout(case: Case) -> str:
    """``case.memory_format``, or ``NO_LAYOUT`` for a measured case none of whose inputs is 4-d or 5-d,
    and for a layer of ``TOKEN_LAYERS`` at the default ``nchw``."""
    if case.inputs is not None and not any(len(s) in (4, 5) for s in case.inputs):
        return NO_LAYOUT
    if case.layer in TOKEN_LAYERS and case.memory_format == "nchw":
        return NO_LAYOUT
    return case.memory_format


def _no_peaks(source: str = "none") -> Peaks:
    return Peaks(peak_dtype=None, peak_flops_s=None, peak_bytes_s=None, peak_source=source, peak_native=None,
                 peak_detail=None, ceiling_flops_s=None, ceiling_bytes_s=None, ceiling_source=source, ceiling_id=None,
                 ceiling_gemm_n=None, ceiling_copy_bytes=None, ceiling_measured_at=None, launch_overhead_s=None)


def resolve_peaks(device: Device, dtypes: Sequence[str], threads: int, ceilings: Ceilings | None) -> dict[str, Peaks]:
    """Per peak dtype (the run's dtypes, and ``tf32`` beside fp32 on CUDA): the theoretical peak
    and the measured ceilings (GEMM, copy, each memory level), as every row of that dtype will
    store them. The formula takes the stored measured clock (``clock`` entry), else the effective
    clock of a stored one-thread GEMM where higher than the reported one; a
    dtype whose measured GEMM is not native (``harness.ceilings.calibrate.NATIVE_MARGIN``) gets the
    fp32 peak."""
    wanted = with_variants(device.backend, dtypes)
    one = ceilings.one_thread if ceilings is not None else None
    mhz = ceilings.clock_mhz if ceilings is not None else None
    theory = {d: _theoretical(device, d, threads, one, mhz) for d in dict.fromkeys(wanted + ["fp32"])}
    return {d: _peaks(device, d, theory, ceilings) for d in wanted}


def _theoretical(device: Device, dtype: str, threads: int, one_thread: float | None,
                 clock_mhz: float | None) -> Peak | None:
    try:
        return device.backend.peak(device, dtype, threads, one_thread, clock_mhz=clock_mhz)
    except Exception as e:          # a failing probe leaves the peak unknown, never the run dead
        log.warning("peak for %s %s unknown: %s", device, dtype, e)
        return None


def _peaks(device: Device, d: str, theory: Mapping[str, Peak | None], ceilings: Ceilings | None) -> Peaks:
    p, fp32 = theory[d], theory.get("fp32")
    gemm = ceilings.entry("compute", d) if ceilings is not None else None
    copy = ceilings.entry("memory") if ceilings is not None else None
    flops, native, detail = (p.flops, p.native, p.source) if p else (None, None, None)
    if gemm is not None and gemm.native is not None:
        native = gemm.native
        if not gemm.native and p is not None and p.native and fp32 is not None and fp32.flops:
            flops, detail = fp32.flops, f"{p.source}; measured GEMM under the native margin over fp32: bounded by " \
                                        f"the fp32 peak {fp32.flops / 1e9:.4g} GFLOP/s"
    measured = ceilings is not None and bool(gemm or copy)

    def level(name: str) -> float | None:
        lv = ceilings.level(name) if ceilings is not None else None
        return lv.value if lv else None

    return Peaks(
        peak_dtype=d, peak_flops_s=flops, peak_bytes_s=p.bandwidth if p else None,
        peak_source=p.kind if p and (p.flops or p.bandwidth) else "none", peak_native=native,
        peak_detail=detail, ceiling_flops_s=gemm.value if gemm else None,
        ceiling_bytes_s=copy.value if copy else None, ceiling_source="measured" if measured else "none",
        ceiling_id=ceilings.ceiling_id if measured else None,
        ceiling_gemm_n=gemm.size if gemm else None, ceiling_copy_bytes=copy.size if copy else None,
        ceiling_measured_at=ceilings.measured_at if measured else None,
        launch_overhead_s=(ceilings.launch if ceilings is not None and ceilings.launch     # measured at calibration
                           else device.backend.launch_overhead_s), ceiling_l1_bytes_s=level("L1"),
        ceiling_l2_bytes_s=level("L2"), ceiling_l3_bytes_s=level("L3"),
        ceiling_levels=ceilings.levels_json() if ceilings is not None else None)


def run_ceilings(device: Device, dtypes: Sequence[str], threads: int, how: str,
                 store: str | Path | None) -> Ceilings | None:
    """The ceilings a run uses: stored ones, measuring what is missing first (``missing``: dtypes,
    the one-thread GEMM, memory levels; ``harness.ceilings.calibrate.plan``), everything again
    (``always``), or nothing measured (``never``)."""
    backend = device.backend
    gemm = with_variants(backend, [d for d in dtypes if d in ("fp32", "fp16", "bf16")])
    try:
        stored = lookup(device, threads, store)
        if how == "never" or not gemm:
            return stored
        if how == "missing" and plan(gemm, stored, False, backend.calibration.one_thread_gemm).empty:
            return stored
        log.info("calibrating %s ceilings on %s (%s thread%s) ...", ",".join(gemm), device, threads,
                 "" if threads == 1 else "s")
        return calibrate(device, gemm, threads=threads, store=store, force=how == "always")
    except Exception as e:              # calibration trouble must not stop the run: rows say "none"
        log.warning("ceilings unavailable (%s: %s); rows are measured against the theoretical peak only",
                    type(e).__name__, e)
        return None


def git_commit() -> str | None:
    """layerbench's commit (``-dirty`` with uncommitted changes), or ``None`` outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here)
        if sha.returncode or not sha.stdout.strip():
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=here).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def make_context(suite: Suite, device: Device, dtypes: Sequence[str], threads: int | str | None, mode: str,
                 shard: tuple[int, int], run_id: str, calibrate_how: str = "never",
                 ceilings_store: str | Path | None = None, settle: Callable[[], None] | None = None) -> RunContext:
    """The machine identity, and the peaks and ceilings for ``dtypes`` on ``device`` (resolved).
    ``threads``: a count, ``auto`` (the CPUs free of other processes now, on the host CPU, where
    the suite sets none: ``harness.timing.hostload.auto_threads``), or ``None`` (the suite's, else
    torch's). ``settle``: called before the CPUs are watched for ``auto``, so this run's own start-up
    (its worker fork server importing torch) is over and not counted as another process's load."""
    choice = None
    if threads == "auto":
        threads = None
        if suite.threads is None and device.host:
            if settle is not None:
                settle()
            choice = auto_threads(torch.get_num_threads(), cpu_load())
            threads = choice.threads
            log.log(logging.WARNING if choice.contended else logging.INFO, "%s", choice.text)
    threads = threads or suite.threads or torch.get_num_threads()
    machine = describe_machine_identity(threads)
    ceilings = run_ceilings(device, dtypes, threads, calibrate_how, ceilings_store)
    return RunContext(run_id=run_id, suite=suite, device=device, machine=machine, threads=threads, mode=mode,
                      shard=shard, peaks=resolve_peaks(device, dtypes, threads, ceilings), ceilings=ceilings,
                      git_commit=git_commit(), threads_choice=choice.text if choice else None)


def elapsed_since(start: float) -> float:
    """Seconds since ``start`` (``time.time()``)."""
    return time.time() - start
