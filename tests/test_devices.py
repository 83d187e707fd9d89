"""Device description with NVML present (a fake pynvml), absent, or failing; the clock monitor;
the CPU description on this machine."""

import sys
import types

import pytest

from harness.backends.cuda import THROTTLE_CLOCK_FRACTION, NvmlClockMonitor, clock_monitor, nvml_handle
from harness.devices.cpu import CpuDescription, check_caches, cpuinfo, describe_cpu, effective_clock_ghz
from harness.devices.gpu import describe_gpus
from harness.devices.nvml import THROTTLE_MASK, Nvml, reason_names


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


def fake_pynvml(gpus, init_error=None):
    """A pynvml stand-in over ``gpus``: dicts of name, uuid, clocks... Missing keys raise NotSupported."""
    m = types.SimpleNamespace(NVMLError=NVMLError)

    def init():
        if init_error:
            raise init_error
    m.nvmlInit = init
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]
    m.nvmlSystemGetDriverVersion = lambda: "560.35.03"
    m.nvmlSystemGetCudaDriverVersion = lambda: 12060

    def get(key):
        def f(h, *args):
            v = h.get(key)
            if callable(v):
                return v(*args)
            if v is None:
                raise NVMLError_NotSupported("Not Supported")
            return v
        return f
    for fn, key in [("nvmlDeviceGetName", "name"), ("nvmlDeviceGetUUID", "uuid"),
                    ("nvmlDeviceGetMemoryInfo", "memory"), ("nvmlDeviceGetClockInfo", "clock"),
                    ("nvmlDeviceGetMaxClockInfo", "max_clock"), ("nvmlDeviceGetEnforcedPowerLimit", "power_limit"),
                    ("nvmlDeviceGetPowerUsage", "power"), ("nvmlDeviceGetTemperature", "temperature"),
                    ("nvmlDeviceGetCurrentClocksEventReasons", "reasons"), ("nvmlDeviceGetMemoryBusWidth", "bus"),
                    ("nvmlDeviceGetMigMode", "mig"), ("nvmlDeviceGetCudaComputeCapability", "cc")]:
        setattr(m, fn, get(key))
    return m


def h100(uuid="GPU-1111", sm=1980, reasons=0x1):
    return {"name": "NVIDIA H100 80GB HBM3", "uuid": uuid,
            "memory": types.SimpleNamespace(total=80 * 2**30, free=79 * 2**30, used=2**30),
            "clock": lambda kind: {1: sm, 2: 2619}[kind], "max_clock": lambda kind: {1: 1980, 2: 2619}[kind],
            "power_limit": 700_000, "power": 120_000, "temperature": 41, "reasons": reasons, "bus": 5120,
            "mig": [0, 0], "cc": (9, 0)}


class FakeTorchCuda:
    def __init__(self, props=()):
        self.props = list(props)

    def is_available(self):
        return bool(self.props)

    def device_count(self):
        return len(self.props)

    def get_device_properties(self, i):
        return self.props[i]


def props(uuid="1111", name="NVIDIA H100 80GB HBM3"):
    return types.SimpleNamespace(name=name, major=9, minor=0, multi_processor_count=132, L2_cache_size=50 * 2**20,
                                 total_memory=80 * 2**30, uuid=uuid, clock_rate=1_980_000, memory_clock_rate=2_619_000,
                                 memory_bus_width=5120)


def test_without_pynvml_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)          # import pynvml -> ImportError
    nvml = Nvml()
    assert not nvml.ok and "nvidia-ml-py is not installed" in nvml.error
    assert nvml.query("nvmlDeviceGetCount") is None
    report = describe_gpus(nvml=nvml, cuda=FakeTorchCuda())
    assert report.gpus == ()
    assert any("nvidia-ml-py" in n for n in report.notes) and any("no CUDA device" in n for n in report.notes)
    assert report.driver_version is None


def test_without_driver():
    nvml = Nvml(fake_pynvml([h100()], init_error=NVMLError_LibraryNotFound("NVML Shared Library Not Found")))
    assert not nvml.ok and "NVMLError_LibraryNotFound" in nvml.error
    assert describe_gpus(nvml=nvml, cuda=FakeTorchCuda()).gpus == ()
    mon = clock_monitor("1111", 1980, nvml)                   # no NVML: the trial clocks alone, no reasons
    assert mon.nvml is None and mon.limit_mhz == 1980 and mon.summary() is None


def test_without_driver_but_torch_sees_the_device():
    nvml = Nvml(fake_pynvml([], init_error=NVMLError_LibraryNotFound("missing")))
    (g,) = describe_gpus(nvml=nvml, cuda=FakeTorchCuda([props()])).gpus
    assert g.source == "torch" and g.name == "NVIDIA H100 80GB HBM3"
    assert g.sm_clock_max_mhz == 1980 and g.mem_clock_max_mhz == 2619      # from kHz properties
    assert g.sm_clock_mhz is None and g.temperature_c is None and g.clock_reasons == ()
    assert g.peak("bf16").flops == 989e12


def test_full_description_matched_by_uuid():
    a, b = h100("GPU-aaaa", reasons=0x4 | 0x1), h100("GPU-bbbb")
    b["temperature"] = None                                   # NotSupported on this one: None, not a crash
    nvml = Nvml(fake_pynvml([a, b]))
    # torch's order is the reverse of NVML's (CUDA_VISIBLE_DEVICES=1,0)
    report = describe_gpus(nvml=nvml, cuda=FakeTorchCuda([props("bbbb"), props("aaaa")]))
    g0, g1 = report.gpus
    assert g0.uuid == "GPU-bbbb" and g1.uuid == "GPU-aaaa"
    assert g0.temperature_c is None and g1.temperature_c == 41
    assert g1.clock_reasons == ("gpu_idle", "sw_power_cap")
    assert (g1.sm_count, g1.l2_bytes, g1.compute_capability) == (132, 50 * 2**20, (9, 0))
    assert (g1.power_limit_w, g1.power_draw_w) == (700.0, 120.0)
    assert g1.memory_total_bytes == 80 * 2**30 and g1.memory_bus_width_bits == 5120 and g1.mig_mode == 0
    assert g1.source == "nvml+torch"
    assert report.driver_version == "560.35.03" and report.cuda_driver_version == 12060


def test_nvml_only_gpu_listed_when_torch_has_no_cuda():
    report = describe_gpus(nvml=Nvml(fake_pynvml([h100()])), cuda=FakeTorchCuda())
    (g,) = report.gpus
    assert g.source == "nvml" and g.sm_count is None and g.compute_capability == (9, 0)


def test_unknown_gpu_peak_from_formula():
    p = props(name="NVIDIA Hypothetical H-class")
    g = describe_gpus(nvml=Nvml(fake_pynvml([], init_error=NVMLError("x"))), cuda=FakeTorchCuda([p])).gpus[0]
    pk = g.peak("bf16")
    assert pk.flops == pytest.approx(132 * 4096 * 1.98e9) and "formula" in pk.source
    assert "1980 MHz, the maximum SM clock" in pk.source and "upper bound" in pk.source    # not the rated boost
    assert pk.bandwidth == pytest.approx(2 * 2619e6 * 5120 / 8)


def test_reason_names():
    assert reason_names(0) == ()
    assert reason_names(0x4 | 0x40) == ("sw_power_cap", "hw_thermal")
    assert reason_names(0x1000) == ("0x1000",)
    assert THROTTLE_MASK & 0x1 == 0 and THROTTLE_MASK & 0x4


def test_monitor_records_the_power_cap_and_judges_the_clock():
    gpu = h100(reasons=0x1)
    nvml = Nvml(fake_pynvml([gpu]))
    mon = NvmlClockMonitor(nvml, gpu)
    mon.sample()
    s = mon.summary()
    assert not s.throttled and s.sm_clock_min_mhz is None and s.sm_clock_limit_mhz == 1980   # an idle sample: no clock
    gpu["reasons"] = 0x4
    mon.sample()
    s = mon.summary()
    assert not s.throttled and s.reasons == ("sw_power_cap",) and s.sm_clock_min_mhz == 1980 and s.source == "nvml"
    slow = h100(sm=int(1980 * THROTTLE_CLOCK_FRACTION) - 10, reasons=0)
    mon2 = NvmlClockMonitor(Nvml(fake_pynvml([slow])), slow)
    mon2.sample()
    assert mon2.summary().throttled and mon2.summary().reasons == ()
    mon2.trial(1900.0)                                          # a trial's measured clock outranks NVML's
    assert not mon2.summary().throttled and mon2.summary().source == "trial"
    assert NvmlClockMonitor(nvml, gpu).summary() is None        # nothing sampled


def test_nvml_handle_by_uuid_never_by_index():
    a, b = h100("GPU-aaaa"), h100("GPU-bbbb")
    nvml = Nvml(fake_pynvml([a, b]))
    assert nvml_handle(nvml, "bbbb") is b and nvml_handle(nvml, "GPU-AAAA") is a
    assert nvml_handle(nvml, None) is None and nvml_handle(nvml, "cccc") is None


def test_describe_this_cpu():
    c = describe_cpu(check_load=False)
    assert isinstance(c, CpuDescription)
    assert c.logical_cpus >= 1 and 1 <= c.cores_for_peak <= c.logical_cpus
    assert c.threads >= 1 and c.busy_percent is None
    if c.clock_ghz:
        p = c.peak("fp32")
        assert p.flops > 0 and "formula" in p.source


def test_cpuinfo_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERBENCH_CACHE", str(tmp_path))
    cpuinfo.cache_clear()
    try:
        first = cpuinfo()
        files = list(tmp_path.glob("cpuinfo-*.json"))
        assert len(files) == 1
        cpuinfo.cache_clear()
        import cpuinfo as pkg
        monkeypatch.setattr(pkg, "get_cpu_info", lambda: pytest.fail("py-cpuinfo probed again"))
        assert cpuinfo() == first                 # read back from disk, no probe
    finally:
        cpuinfo.cache_clear()


def test_hypervisor_cache_report_capped():
    # a Xeon VM: 480 MiB L3 on 2 vCPUs (1 thread per core), 48 KiB L1d, 2 MiB L2 per core
    levels = {c.name: c for c in check_caches({"L1d": (48 * 2**10, 1), "L2": (2 * 2**20, 1),
                                                "L3": (480 * 2**20, 2)}, smt=1, hypervisor=True)}
    assert not levels["L1d"].capped and levels["L2"].used_bytes == 2 * 2**20
    l3 = levels["L3"]
    assert l3.capped and l3.limit_bytes == 24 * 2**20 and l3.used_bytes == 24 * 2**20       # 12 MiB x 2 cores
    assert "480 MiB" in l3.note and "capped to 24 MiB" in l3.note and "hypervisor" in l3.note
    # 4 logical CPUs with 2 threads per core share the L3: 2 cores; an 8 MiB L2 per core is capped to 4 MiB
    smt = {c.name: c for c in check_caches({"L2": (8 * 2**20, 2), "L3": (480 * 2**20, 4)}, smt=2)}
    assert smt["L2"].used_bytes == 4 * 2**20 and smt["L3"].used_bytes == 24 * 2**20
    # a real EPYC 9004 CCD (32 MiB shared by 8 cores) is plausible: not capped
    assert not check_caches({"L3": (32 * 2**20, 8)})[0].capped


def test_effective_clock_and_the_formula_uses_the_higher():
    assert effective_clock_ghz(185.6e9, 64) == pytest.approx(2.9)            # 1-thread fp32 GEMM / 64 FLOP/cycle
    c = describe_cpu(check_load=False)
    if not c.clock_ghz:
        pytest.skip("no clock reported")
    base = c.peak("fp32", cores=1)
    per_cycle = base.flops / (c.clock_ghz * 1e9)
    faster = c.peak("fp32", cores=1, one_thread_flops_s=per_cycle * (c.clock_ghz + 0.5) * 1e9)
    assert faster.flops == pytest.approx(base.flops * (c.clock_ghz + 0.5) / c.clock_ghz)
    assert "effective" in faster.source
    slower = c.peak("fp32", cores=1, one_thread_flops_s=per_cycle * (c.clock_ghz - 0.5) * 1e9)
    assert slower.flops == pytest.approx(base.flops)                         # the reported clock is higher


def test_devices_says_which_clock_the_formula_takes():
    """With a measured clock stored the formula takes it (``peak``: ``clock: measured``), so the
    devices line says so beside the effective clock, never "the formula uses it" of that one."""
    from harness.report.machine import _effective
    c = describe_cpu(check_load=False)
    fpc = c.peak("fp32", cores=1, clock_mhz=1000.0).flops / 1e9                # FLOP/cycle of one core
    one = fpc * 9.9e9                                                           # a 9.9 GHz GEMM: above any clock
    assert _effective(c, one).endswith("FLOP/cycle; the formula uses it)")
    assert _effective(c, one, 3232.0).endswith("FLOP/cycle; the formula uses the measured clock)")
    assert "clock: measured" in c.peak("fp32", one_thread_flops_s=one, clock_mhz=3232.0).source
