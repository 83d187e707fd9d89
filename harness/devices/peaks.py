"""Theoretical peaks: a GPU datasheet table, the GPU and CPU peak formulas.

Units: FLOP/s and bytes/s (the table is written in TFLOP/s and GB/s, 1e12 and 1e9). Dense
numbers only: NVIDIA prints Hopper/Ada/Blackwell tensor figures with 2:4 sparsity, which does no
extra math; the table holds half of them. Research and sources: shared/research/hardware.md §3-4.
A datasheet peak is a lead, not a ceiling: ``harness.devices.ceilings`` measures the ceiling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import SpecError

#: Dtypes a peak can be asked for. ``tf32`` is fp32 matmul/conv on tensor cores (when enabled).
PEAK_DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp64")


@dataclass(frozen=True, slots=True)
class Peak:
    """A peak compute rate for one dtype and the memory bandwidth beside it.

    Attributes:
        flops: FLOP/s, or ``None`` when unknown.
        bandwidth: bytes/s of main (device) memory, or ``None``.
        native: ``False`` when the device has no unit for this dtype (bf16/fp16 on AVX2 CPUs):
            ``flops`` is then the fp32 rate, a ceiling the dtype cannot beat, not a target.
        source: where the numbers come from (datasheet name, or the formula with its factors).
        kind: ``datasheet`` (a vendor's table) or ``formula`` (computed from clocks and units).
    """

    flops: float | None
    bandwidth: float | None
    native: bool
    source: str
    kind: str = "formula"


@dataclass(frozen=True, slots=True)
class GpuDatasheet:
    """Datasheet figures of one GPU model (dense; TFLOP/s, GB/s). ``None``: no such unit.

    ``fp64`` is the vector (CUDA-core) rate, ``fp64_tensor`` the FP64 tensor-core rate (DMMA, A100
    and later): cuBLAS runs fp64 GEMMs and cuDNN fp64 convolutions on the tensor cores, so the fp64
    peak is the tensor-core rate where there is one."""

    model: str
    pattern: str          # regex matched against the NVML / torch device name
    sms: int | None
    fp32: float           # CUDA cores
    tf32: float | None    # tensor cores
    fp16: float           # tensor cores, FP32 accumulate
    bf16: float | None
    fp64: float | None    # CUDA cores (vector)
    mem_gbs: float
    source: str
    fp64_tensor: float | None = None


#: Order matters: the first pattern that matches a device name wins (A100 before A10, L40S before L4,
#: GH200 and H200 NVL before H200).
DATASHEETS: tuple[GpuDatasheet, ...] = (
    GpuDatasheet("V100 SXM2", r"V100.*SXM2|V100-SXM", 80, 15.7, None, 125, None, 7.8, 900,
                 "NVIDIA V100 datasheet (SXM2); forum (R. Crovella) 80 SM x 1024 FLOP/clk x 1.53 GHz"),
    GpuDatasheet("V100 PCIe", r"V100", 80, 14.0, None, 112, None, 7.0, 900,
                 "NVIDIA V100 datasheet (PCIe); 80 x 1024 x 1.367 GHz = 112 TF"),
    GpuDatasheet("A100 SXM4 80GB", r"A100.*SXM.*80|A100.*80GB.*SXM", 108, 19.5, 156, 312, 312, 9.7, 2039,
                 "NVIDIA A100 datasheet (dense: 312 TF BF16/FP16, 156 TF TF32, 19.5 TF FP64 Tensor Core)", 19.5),
    GpuDatasheet("A100 SXM4 40GB", r"A100.*SXM", 108, 19.5, 156, 312, 312, 9.7, 1555,
                 "NVIDIA A100 datasheet; deviceQuery 1410 MHz, 1215 MHz x 5120-bit HBM2", 19.5),
    GpuDatasheet("A100 PCIe 80GB", r"A100.*PCIE.*80|A100.*80GB.*PCIE", 108, 19.5, 156, 312, 312, 9.7, 1935,
                 "NVIDIA A100 datasheet (PCIe 80GB)", 19.5),
    GpuDatasheet("A100 PCIe 40GB", r"A100", 108, 19.5, 156, 312, 312, 9.7, 1555,
                 "NVIDIA A100 datasheet (PCIe 40GB)", 19.5),
    GpuDatasheet("A10", r"\bA10\b(?!0)", 72, 31.2, 62.5, 125, 125, None, 600,
                 "NVIDIA A10 datasheet; 72 SM, 1695 MHz, 600 GB/s"),
    GpuDatasheet("L40S", r"L40S", 142, 91.6, 183, 362, 362, None, 864,
                 "NVIDIA L40S datasheet (sparse figures halved)"),
    GpuDatasheet("L4", r"\bL4\b", 58, 30.3, 60, 121, 121, None, 300,
                 "NVIDIA L4 datasheet (sparse figures halved)"),
    GpuDatasheet("H100 PCIe", r"H100.*PCIE", 114, 51, 378, 756, 756, 26, 2000,
                 "NVIDIA H100 datasheet (PCIe; sparse halved); 114 SM x 4096 x 1.62 GHz = 756 TF", 51),
    GpuDatasheet("H100 SXM5", r"H100(?!.*(PCIE|NVL))", 132, 67, 495, 989, 989, 34, 3350,
                 "NVIDIA H100 datasheet (SXM5; sparse halved); 132 SM x 4096 x 1.83 GHz = 989 TF", 67),
    GpuDatasheet("GH200 144GB HBM3e", r"GH200.*(144G|HBM3e)", 132, 67, 494, 990, 990, 34, 4900,
                 "NVIDIA GH200 Grace Hopper Superchip datasheet (HBM3e: 144 GB, 4.9 TB/s; sparse halved)", 67),
    GpuDatasheet("GH200 96GB HBM3", r"GH200", 132, 67, 494, 990, 990, 34, 4000,
                 "NVIDIA GH200 Grace Hopper Superchip datasheet (HBM3: 96 GB, 4 TB/s; sparse halved)", 67),
    GpuDatasheet("H200 NVL", r"H200.*NVL", 132, 60, 417.5, 835.5, 835.5, 30, 4800,
                 "NVIDIA H200 datasheet, H200 NVL column (141 GB HBM3e, 4.8 TB/s, up to 600 W; TF32 835 and "
                 "FP16/BF16 1,671 TF sparse, halved)", 60),
    GpuDatasheet("H200 SXM", r"(?<!G)H200(?!.*NVL)", 132, 67, 495, 989, 989, 34, 4800,
                 "NVIDIA H200 datasheet, H200 SXM column (141 GB HBM3e, 4.8 TB/s; TF32 989 and FP16/BF16 "
                 "1,979 TF sparse, halved)", 67),
    GpuDatasheet("B200", r"B200", None, 75, 1100, 2250, 2250, 37, 7700,
                 "NVIDIA HGX B200 spec (180 GB, 7.7 TB/s; sparse halved; FP64 and FP64 Tensor Core both 37 TF)", 37),
    GpuDatasheet("RTX 4090", r"RTX 4090", 128, 82.6, 82.6, 165, 165, 1.3, 1008,
                 "Ada whitepaper: 165 TF FP16/BF16 with FP32 accumulate; 1008 GB/s"),
)


def datasheet_for(name: str) -> GpuDatasheet | None:
    """The datasheet row whose pattern matches a device name (``NVIDIA H100 80GB HBM3``), or ``None``."""
    for row in DATASHEETS:
        if re.search(row.pattern, name, flags=re.IGNORECASE):
            return row
    return None


def datasheet_peak(name: str, dtype: str) -> Peak | None:
    """Datasheet peak of a GPU for ``dtype`` (``fp32``, ``tf32``, ``fp16``, ``bf16``, ``fp64``)."""
    _check_dtype(dtype)
    row = datasheet_for(name)
    if row is None:
        return None
    tflops = (row.fp64_tensor or row.fp64) if dtype == "fp64" else getattr(row, dtype)
    native = tflops is not None
    if tflops is None:      # no unit for it (V100 bf16, TF32 before Ampere): the fp32 rate bounds it
        tflops = row.fp32
    return Peak(flops=tflops * 1e12, bandwidth=row.mem_gbs * 1e9, native=native, source=f"datasheet {row.model}: "
                f"{row.source}", kind="datasheet")


#: Dense tensor-core FLOP per clock per SM (FP32 accumulate), by compute capability (§3.2).
TENSOR_FLOP_PER_CLK_SM: dict[tuple[int, int], dict[str, int]] = {
    (7, 0): {"fp16": 1024},
    (8, 0): {"fp16": 2048, "bf16": 2048, "tf32": 1024},
    (8, 6): {"fp16": 1024, "bf16": 1024, "tf32": 512},
    (8, 9): {"fp16": 1024, "bf16": 1024, "tf32": 512},
    (9, 0): {"fp16": 4096, "bf16": 4096, "tf32": 2048},
}
#: FP32 CUDA-core lanes per SM, by compute capability (each lane: one FMA = 2 FLOP per clock).
FP32_LANES_PER_SM: dict[tuple[int, int], int] = {(7, 0): 64, (8, 0): 64, (8, 6): 128, (8, 9): 128, (9, 0): 128,
                                                 (10, 0): 128}
#: FP64 FLOP per clock per SM, the faster unit's: FP64 tensor cores (DMMA) on 8.0 and 9.0 (twice the
#: vector rate: A100 19.5 vs 9.7 TF, H100 SXM 67 vs 34 TF), vector units elsewhere (Volta 32 FP64
#: FMA/clk/SM, consumer parts 2).
FP64_FLOP_PER_CLK_SM: dict[tuple[int, int], int] = {(7, 0): 64, (8, 0): 128, (8, 6): 4, (8, 9): 4, (9, 0): 256}


def gpu_formula_peak(cc: tuple[int, int], sms: int, sm_clock_mhz: float, dtype: str) -> float | None:
    """``SMs x FLOP/clk/SM x clock`` (FLOP/s): tensor cores for tf32/fp16/bf16, ``2 x FP32 lanes``
    for fp32, ``FP64_FLOP_PER_CLK_SM`` for fp64. ``None`` for an architecture or dtype not in the
    tables. NVIDIA rates Hopper's tensor peak at its tensor clock (1830 MHz on H100 SXM), below the
    max SM clock: at the max clock the formula is an upper bound."""
    _check_dtype(dtype)
    hz = sm_clock_mhz * 1e6
    if dtype == "fp32":
        lanes = FP32_LANES_PER_SM.get(tuple(cc))
        return None if lanes is None else sms * lanes * 2 * hz
    if dtype == "fp64":
        fp64 = FP64_FLOP_PER_CLK_SM.get(tuple(cc))
        return None if fp64 is None else sms * fp64 * hz
    per_clk = TENSOR_FLOP_PER_CLK_SM.get(tuple(cc), {}).get(dtype)
    return None if per_clk is None else sms * per_clk * hz


def memory_bandwidth(mem_clock_mhz: float, bus_width_bits: int) -> float:
    """``2 x f_mem x bus_width / 8`` bytes/s, with ``f_mem`` as NVML/CUDA report it (the factor 2
    holds for HBM and GDDR alike there; gpumembench #1)."""
    return 2 * mem_clock_mhz * 1e6 * bus_width_bits / 8


@dataclass(frozen=True, slots=True)
class CpuCore:
    """FLOP per cycle per core for one dtype (FMA pipes x SIMD lanes x 2) and whether it is native."""

    flop_per_cycle: int
    native: bool
    uarch: str


def cpu_flop_per_cycle(flags: frozenset[str] | set[str], dtype: str, vendor: str = "", family: int | None = None,
                       model: int | None = None) -> CpuCore:
    """FLOP/cycle/core from the ISA flags and, for AMD, the family/model (flags alone cannot tell
    Zen 1 from Zen 2: both show only ``avx2 fma``). Table: shared/research/hardware.md §4.

    fp32: AVX-512 (2 FMA) 64; AVX2+FMA 32 (Zen 1/Zen+: 16, 256-bit ops split in two 128-bit);
    AVX 16; SSE 8. fp64: half of fp32. bf16: AMX 1024; AVX512_BF16 2 x fp32; fp16: AMX-FP16 1024,
    AVX512_FP16 2 x fp32; otherwise not native (the fp32 rate, ``native=False``).
    """
    _check_dtype(dtype)
    f = {x.lower() for x in flags}
    amd = "amd" in vendor.lower()
    if amd and family == 0x17:
        fp32, uarch = (16, "zen1") if (model or 0) < 0x30 else (32, "zen2")
    elif amd and family == 0x19:
        fp32, uarch = 32, "zen3/zen4"     # Zen 4's AVX-512 runs on 256-bit datapaths
    elif amd and family == 0x1A and "avx512f" in f:
        fp32, uarch = 64, "zen5"
    elif "avx512f" in f:
        fp32, uarch = 64, "avx512"
    elif "avx2" in f and "fma" in f:
        fp32, uarch = 32, "avx2-fma"
    elif "avx" in f:
        fp32, uarch = 16, "avx"
    else:
        fp32, uarch = 8, "sse"
    if dtype in ("fp32", "tf32"):
        return CpuCore(fp32, dtype == "fp32", uarch)
    if dtype == "fp64":
        return CpuCore(fp32 // 2, True, uarch)
    if dtype == "bf16":
        if "amx_bf16" in f:
            return CpuCore(1024, True, uarch + "+amx")
        if "avx512_bf16" in f:
            return CpuCore(2 * fp32, True, uarch + "+avx512_bf16")
        return CpuCore(fp32, False, uarch)
    if "amx_fp16" in f:
        return CpuCore(1024, True, uarch + "+amx")
    if "avx512_fp16" in f:
        return CpuCore(2 * fp32, True, uarch + "+avx512_fp16")
    return CpuCore(fp32, False, uarch)


def cpu_peak(cores: int, clock_ghz: float, core: CpuCore, bandwidth: float | None = None) -> Peak:
    """``cores x clock x FLOP/cycle/core`` (FLOP/s). In VMs the visible clock is often the TSC, not
    the core clock (on one 2-vCPU VM: 2.0 GHz shown, 2.48 GHz measured), so the measured
    ceiling is the better denominator."""
    flops = cores * clock_ghz * 1e9 * core.flop_per_cycle
    src = f"formula: {cores} cores x {clock_ghz:.3f} GHz x {core.flop_per_cycle} FLOP/cycle ({core.uarch})"
    return Peak(flops=flops, bandwidth=bandwidth, native=core.native, source=src)


def _check_dtype(dtype: str) -> None:
    if dtype not in PEAK_DTYPES:
        raise SpecError("dtype", dtype, "one of " + ", ".join(PEAK_DTYPES))
