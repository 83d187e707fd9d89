"""Peak formulas against datasheet figures (shared/research/hardware.md §3-4), the datasheet table's
name matching, and the CPU formula on known processors."""

import pytest

from harness.devices.peaks import (
    DATASHEETS,
    cpu_flop_per_cycle,
    cpu_peak,
    datasheet_for,
    datasheet_peak,
    gpu_formula_peak,
    memory_bandwidth,
)
from harness.errors import SpecError


@pytest.mark.parametrize("name, model", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM5"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", None),                      # a different part: no silent misattribution
    ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA H200 NVL", "H200 NVL"),                # 600 W, 60 TF fp32: not the SXM part
    ("NVIDIA GH200 480GB", "GH200 96GB HBM3"),      # 4 TB/s, not the H200's 4.8
    ("NVIDIA GH200 144G HBM3e", "GH200 144GB HBM3e"),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100 SXM4 40GB"),
    ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB"),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"),
    ("NVIDIA A10", "A10"),
    ("NVIDIA A10G", None),
    ("NVIDIA L4", "L4"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA L40", None),
    ("Tesla V100-SXM2-16GB", "V100 SXM2"),
    ("Tesla V100-PCIE-32GB", "V100 PCIe"),
    ("NVIDIA B200", "B200"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
])
def test_datasheet_name_matching(name, model):
    row = datasheet_for(name)
    assert (row.model if row else None) == model


def test_datasheet_covers_the_issue_list_with_sources():
    models = {r.model for r in DATASHEETS}
    for needed in ["V100 SXM2", "A100 SXM4 40GB", "A100 PCIe 40GB", "A10", "L4", "L40S", "H100 SXM5", "H100 PCIe",
                   "H200 SXM", "H200 NVL", "GH200 96GB HBM3", "GH200 144GB HBM3e", "B200", "RTX 4090"]:
        assert needed in models
    assert all(r.source for r in DATASHEETS)


def test_datasheet_peak_values_and_non_native_dtypes():
    h = datasheet_peak("NVIDIA H100 80GB HBM3", "bf16")
    assert h.flops == 989e12 and h.bandwidth == 3350e9 and h.native          # dense, not the 1979 sparse figure
    assert datasheet_peak("NVIDIA H200", "fp32").flops == 67e12
    assert datasheet_peak("NVIDIA H200", "fp32").bandwidth == 4800e9
    v = datasheet_peak("Tesla V100-SXM2-16GB", "bf16")                     # Volta has no bf16 unit
    assert not v.native and v.flops == 15.7e12
    assert datasheet_peak("NVIDIA A100-SXM4-40GB", "tf32").flops == 156e12
    assert datasheet_peak("some unknown card", "fp32") is None
    with pytest.raises(SpecError, match="dtype='int4'"):
        datasheet_peak("NVIDIA H200", "int4")


@pytest.mark.parametrize("cc, sms, mhz, dtype, datasheet_tflops", [
    ((9, 0), 132, 1830, "bf16", 989),     # H100 SXM at its tensor clock: 132 x 4096 x 1.83 GHz
    ((9, 0), 114, 1620, "fp16", 756),     # H100 PCIe
    ((9, 0), 132, 1830, "tf32", 495),
    ((9, 0), 132, 1980, "fp32", 67),      # 132 x 128 x 2 x 1.98 GHz = 66.9
    ((8, 0), 108, 1410, "bf16", 312),     # A100: 108 x 2048 x 1.41 GHz
    ((8, 0), 108, 1410, "tf32", 156),
    ((8, 0), 108, 1410, "fp32", 19.5),
    ((7, 0), 80, 1530, "fp16", 125),      # V100 SXM2
    ((8, 6), 72, 1695, "fp16", 125),      # A10
    ((8, 9), 58, 2040, "bf16", 121),      # L4
    ((8, 9), 128, 2520, "fp32", 82.6),    # RTX 4090 CUDA cores
])
def test_gpu_formula_reproduces_datasheets(cc, sms, mhz, dtype, datasheet_tflops):
    assert gpu_formula_peak(cc, sms, mhz, dtype) == pytest.approx(datasheet_tflops * 1e12, rel=0.005)


def test_gpu_formula_unknown():
    assert gpu_formula_peak((7, 0), 80, 1530, "bf16") is None
    assert gpu_formula_peak((12, 0), 80, 1530, "fp32") is None


@pytest.mark.parametrize("mhz, bits, gbs", [(1215, 5120, 1555), (6251, 192, 300), (10501, 384, 1008),
                                             (2619, 5120, 3352)])
def test_memory_bandwidth_formula(mhz, bits, gbs):
    # A100-40GB, L4, RTX 4090, H100 SXM: 2 x f_mem x bus / 8
    assert memory_bandwidth(mhz, bits) == pytest.approx(gbs * 1e9, rel=0.001)


def test_cpu_zen1_this_projects_first_machine():
    # AMD EPYC family 23 model 1 (Zen 1): 2 FMA x 4 fp32 lanes x 2 = 16 FLOP/cycle; 2 cores at 1.996 GHz
    core = cpu_flop_per_cycle({"avx2", "fma"}, "fp32", "AuthenticAMD", 0x17, 0x01)
    assert core.flop_per_cycle == 16 and core.uarch == "zen1"
    assert cpu_peak(2, 1.996, core).flops == pytest.approx(63.87e9, rel=1e-3)      # hardware.md §7.2
    assert cpu_peak(2, 2.48, core).flops == pytest.approx(79.4e9, rel=1e-3)
    assert cpu_flop_per_cycle({"avx2", "fma"}, "fp64", "AuthenticAMD", 0x17, 0x01).flop_per_cycle == 8


def test_cpu_zen2_zen3_zen5():
    assert cpu_flop_per_cycle({"avx2", "fma"}, "fp32", "AuthenticAMD", 0x17, 0x31).flop_per_cycle == 32   # Rome
    assert cpu_flop_per_cycle({"avx2", "fma"}, "fp32", "AuthenticAMD", 0x19, 0x01).flop_per_cycle == 32   # Milan
    zen4 = {"avx2", "fma", "avx512f", "avx512_bf16"}
    assert cpu_flop_per_cycle(zen4, "fp32", "AuthenticAMD", 0x19, 0x11).flop_per_cycle == 32
    assert cpu_flop_per_cycle(zen4, "bf16", "AuthenticAMD", 0x19, 0x11).flop_per_cycle == 64
    assert cpu_flop_per_cycle({"avx512f"}, "fp32", "AuthenticAMD", 0x1A, 0x02).flop_per_cycle == 64


def test_cpu_intel():
    # Haswell Xeon E5-2680 v3: 12 cores x 2.5 GHz x 32 = 960 GFLOP/s fp32 (Intel's 480 GFLOP/s fp64)
    hsw = {"avx", "avx2", "fma"}
    assert cpu_peak(12, 2.5, cpu_flop_per_cycle(hsw, "fp32", "GenuineIntel")).flops == pytest.approx(960e9)
    assert cpu_peak(12, 2.5, cpu_flop_per_cycle(hsw, "fp64", "GenuineIntel")).flops == pytest.approx(480e9)
    spr = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"}
    assert cpu_flop_per_cycle(spr, "fp32", "GenuineIntel").flop_per_cycle == 64
    assert cpu_flop_per_cycle(spr, "bf16", "GenuineIntel").flop_per_cycle == 1024      # AMX: 16x16x32 MAC / 16 clk
    assert cpu_flop_per_cycle(spr, "fp16", "GenuineIntel").flop_per_cycle == 128       # AVX512-FP16
    cpx = {"avx512f", "avx512_bf16"}
    assert cpu_flop_per_cycle(cpx, "bf16", "GenuineIntel").flop_per_cycle == 128
    assert cpu_flop_per_cycle({"avx"}, "fp32", "GenuineIntel").flop_per_cycle == 16
    assert cpu_flop_per_cycle(set(), "fp32", "GenuineIntel").flop_per_cycle == 8


def test_cpu_no_native_half_precision():
    core = cpu_flop_per_cycle({"avx2", "fma", "f16c"}, "bf16", "AuthenticAMD", 0x19, 0x01)
    assert not core.native and core.flop_per_cycle == 32        # bounded by fp32, flagged not native
    assert not cpu_peak(2, 2.0, core).native
    assert not cpu_flop_per_cycle({"avx2", "fma"}, "fp16", "GenuineIntel").native


@pytest.mark.parametrize("name, model, gbs", [("NVIDIA H200", "H200 SXM", 4800), ("NVIDIA H200 NVL", "H200 NVL", 4800),
                                               ("NVIDIA GH200 480GB", "GH200 96GB HBM3", 4000),
                                               ("NVIDIA GH200 144G HBM3e", "GH200 144GB HBM3e", 4900)])
def test_h200_variants_have_their_own_rows(name, model, gbs):
    assert datasheet_for(name).model == model and datasheet_peak(name, "fp32").bandwidth == gbs * 1e9


def test_h200_nvl_and_gh200_figures():
    nvl = datasheet_peak("NVIDIA H200 NVL", "bf16")
    assert nvl.flops == 835.5e12 and "H200 NVL" in nvl.source              # 1,671 TF sparse, halved
    assert datasheet_peak("NVIDIA H200 NVL", "fp32").flops == 60e12
    assert datasheet_peak("NVIDIA GH200 480GB", "bf16").flops == 990e12


def test_fp64_peaks_are_the_tensor_core_rate_where_there_is_one():
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "fp64").flops == 67e12          # not the 34 TF vector rate
    assert datasheet_peak("NVIDIA A100-SXM4-80GB", "fp64").flops == 19.5e12
    assert datasheet_peak("NVIDIA H200 NVL", "fp64").flops == 60e12
    assert datasheet_peak("Tesla V100-SXM2-16GB", "fp64").flops == 7.8e12          # no FP64 tensor cores
    assert datasheet_peak("NVIDIA L4", "fp64").native is False                      # no fp64 figure: fp32 bounds it


@pytest.mark.parametrize("cc, sms, mhz, tflops", [((9, 0), 132, 1980, 67), ((8, 0), 108, 1410, 19.5),
                                                  ((7, 0), 80, 1530, 7.8), ((8, 9), 128, 2520, 1.3)])
def test_gpu_formula_fp64(cc, sms, mhz, tflops):
    # H100 SXM and A100 at their FP64 tensor-core rate, V100 and RTX 4090 at the vector rate
    assert gpu_formula_peak(cc, sms, mhz, "fp64") == pytest.approx(tflops * 1e12, rel=0.01)
