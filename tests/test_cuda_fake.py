"""The CUDA path on a fake GPU that behaves like one (tests/fake_cuda.py): each defect the first
review found, reproduced on the fake, and the fake itself (so that a fix is not tested against a
fake that cannot show the defect)."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from fake_cuda import (
    CAPTURE_SYNC,
    TICK_S,
    FakeAutograd,
    FakeCudaError,
    FakeEvent,
    FakeGpu,
    FakeModule,
    FakeNode,
    FakeTorchCuda,
    fake_backend,
    fake_pynvml,
    measure_on,
    rig,
)

from harness.backends.cuda import (
    GRAPH_REPLAY_S,
    THROTTLE_CLOCK_FRACTION,
    CudaBackend,
    NvmlClockMonitor,
    cuda_settings,
    nvml_handle,
)
from harness.devices.nvml import Nvml
from harness.timing import measure
from harness.timing.stats import CI_Z

US, MIB = 1e-6, 2**20


# --- the fake behaves like a GPU where timing depends on it ------------------------------------------

def test_the_queue_is_asynchronous_and_drains_while_the_host_waits():
    gpu = FakeGpu(launch_s=5 * US)
    start, end = FakeEvent(gpu), FakeEvent(gpu)
    start.record()
    for _ in range(3):
        gpu.run(100 * US)
    end.record()
    assert gpu.host == pytest.approx(15 * US) and gpu.tail == pytest.approx(305 * US)   # host ran ahead
    with pytest.raises(FakeCudaError, match="not ready"):
        start.elapsed_time(end)                                  # read before the host waited
    gpu.synchronize()
    assert gpu.host >= gpu.tail
    assert start.elapsed_time(end) == pytest.approx(0.305)       # ms: the first launch's gap and 3 kernels


def test_events_tick_at_half_a_microsecond_from_a_phase():
    gpu = FakeGpu(launch_s=0.0)
    start, end = FakeEvent(gpu), FakeEvent(gpu)
    gpu.host = gpu.tail = 10.2 * US
    start.record()
    gpu.run(2.2 * US)
    end.record()
    gpu.synchronize()
    assert start.elapsed_time(end) * 1e-3 == pytest.approx(2.0 * US)     # 2.2 us read as 4 ticks
    gpu.phase_s = 0.15 * US
    assert start.elapsed_time(end) * 1e-3 == pytest.approx(2.5 * US)     # another process: 5 ticks
    assert gpu.tick_s == TICK_S


def test_capture_records_once_rejects_syncs_and_the_first_replay_uploads():
    gpu = FakeGpu(launch_s=0.0, replay_s=0.0, upload_s=60 * US, node_s=0.0)
    cuda = FakeTorchCuda(gpu)
    mod = FakeModule(gpu, kernels=(2 * US,))
    g = cuda.CUDAGraph()
    with cuda.graph(g):
        mod()
    assert mod.calls == 1 and len(g.nodes) == 1 and gpu.launches == 0      # recorded, not run
    replays = []
    for _ in range(2):
        t0 = gpu.reached()
        g.replay()
        replays.append(gpu.tail - t0)
        gpu.synchronize()
    assert replays == [pytest.approx(62 * US), pytest.approx(2 * US)]
    with pytest.raises(FakeCudaError, match="previous error during capture"), cuda.graph(cuda.CUDAGraph()):
        FakeModule(gpu, syncs=True)()


def test_nvml_clocks_fall_when_idle_and_sit_at_the_power_cap_under_load():
    gpu = FakeGpu()
    nvml = fake_pynvml(gpu)
    assert nvml.nvmlDeviceGetClockInfo(gpu, 1) == gpu.idle_mhz and nvml.nvmlDeviceGetCurrentClocksEventReasons(gpu) == 1
    for _ in range(50):
        gpu.run(100 * US)
    gpu.synchronize()
    assert nvml.nvmlDeviceGetClockInfo(gpu, 1) == 1755 and nvml.nvmlDeviceGetCurrentClocksEventReasons(gpu) == 0x4


def test_masked_devices_and_sticky_errors():
    node = FakeNode([FakeGpu(uuid="GPU-aaaa-1"), FakeGpu(uuid="GPU-bbbb-2")]).masked("1")
    cuda = FakeTorchCuda(node)
    assert cuda.device_count() == 1 and cuda.get_device_properties(0).uuid == "bbbb-2"
    assert FakeNode(node.gpus).masked("GPU-bbbb,0").visible == [1, 0] and not FakeNode(node.gpus).masked("2,0").visible
    assert fake_pynvml(node).nvmlDeviceGetCount() == 2                     # NVML sees the node
    gpu = node.gpus[1]
    gpu.poison()
    with pytest.raises(FakeCudaError, match="illegal memory access"):
        cuda.synchronize()


# --- 2. throttled: the clock over the trial, not the power cap -------------------------------------------

def test_the_power_cap_under_load_is_recorded_not_throttling():
    gpu = FakeGpu()                                             # 1755 of 1980 MHz at the power cap
    m = measure_on(gpu, FakeModule(gpu, kernels=(200 * US,)))
    assert not m.throttled
    assert "sw_power_cap" in m.clocks.reasons and m.summary()["clock_reasons"] == "sw_power_cap"
    assert m.clocks.sm_clock_min_mhz == pytest.approx(1755, rel=0.01) and m.clocks.source == "trial"


def test_an_nvml_sample_taken_while_the_gpu_idles_does_not_throttle_a_row():
    gpu = FakeGpu()
    m = measure_on(gpu, FakeModule(gpu, kernels=(1 * US,)))    # launch-bound: the GPU idles 80 % of the time
    assert not m.throttled and m.clocks.sm_clock_min_mhz == pytest.approx(1755, rel=0.01)
    assert "gpu_idle" not in m.clocks.reasons


def test_a_clock_under_three_quarters_of_the_rated_clock_is_throttling():
    gpu = FakeGpu(load_mhz=1200, thermal=True)
    m = measure_on(gpu, FakeModule(gpu, kernels=(200 * US,)))
    assert m.throttled and m.clocks.sm_clock_min_mhz == pytest.approx(1200, rel=0.01)
    assert 1200 < THROTTLE_CLOCK_FRACTION * gpu.rated_mhz and "hw_thermal" in m.clocks.reasons
    slow = NvmlClockMonitor(None, None, rated_mhz=1980)         # without NVML the trial clocks still judge
    slow.trial(1400.0)
    assert slow.summary().throttled and slow.summary().reasons == ()


# --- 3. graph replays sized from a replay, the first never timed ---------------------------------------

def test_graph_replays_last_milliseconds_and_the_upload_is_never_timed():
    gpu = FakeGpu(upload_s=60 * US)
    relu = FakeModule(gpu, kernels=(2 * US,), host_s=3 * US)   # relu 64x64: 2 us on the device, 8 us eager
    m = measure_on(gpu, relu, "graph")
    per_call = 2 * US + gpu.node_s
    assert m.number * m.median >= 0.99 * GRAPH_REPLAY_S          # was 20 calls: a 50 us replay
    assert m.median == pytest.approx(per_call, rel=1e-3)
    assert m.stats.max <= 1.001 * m.median                       # no sample holds the 60 us upload


# --- 4. auto: a one-call replay against eager calls ------------------------------------------------------

def test_auto_graphs_small_multi_kernel_modules():
    gpu = FakeGpu()
    mha = FakeModule(gpu, kernels=(3 * US,) * 10, host_s=20 * US)   # 70 us of host per call, 35 us of device
    m = measure_on(gpu, mha, "auto")
    assert m.mode == "graph" and m.median == pytest.approx(10 * (3 * US + gpu.node_s), rel=1e-3)
    big = FakeGpu()
    m = measure_on(big, FakeModule(big, kernels=(25 * US,)), "auto")    # device-bound: eager is the device
    assert m.mode == "hot" and m.median == pytest.approx(25 * US)


# --- 5. hot samples queued behind a lead kernel ------------------------------------------------------------

def test_no_hot_sample_holds_the_host_launch_gap():
    gpu = FakeGpu()
    slow_host = FakeModule(gpu, kernels=(6e-3,), host_s=200 * US)   # 2 samples a chunk, each after a sync
    m = measure_on(gpu, slow_host)
    assert m.median == pytest.approx(6e-3, rel=1e-4)               # was 6.1 ms: half the samples held 205 us
    assert m.stats.max <= 6e-3 * 1.0005


# --- 8. a failed capture falls back to hot; an OOM inside capture is an OOM --------------------------------

def test_a_capture_that_syncs_falls_back_to_hot_with_the_reason():
    gpu = FakeGpu()
    syncs = FakeModule(gpu, kernels=(2 * US,), syncs=True)     # .item() inside the layer
    m = measure_on(gpu, syncs, "graph")
    assert m.mode == "hot" and m.timer == "cuda_event" and m.converged
    assert m.notes[0].startswith("graph capture failed") and CAPTURE_SYNC in m.notes[0]
    assert m.stop_reason == "converged; " + m.notes[0]
    auto = FakeGpu()
    assert measure_on(auto, FakeModule(auto, kernels=(2 * US,), syncs=True), "auto").mode == "hot"


def test_an_oom_inside_capture_is_reported_as_an_oom():
    gpu = FakeGpu()
    grows = FakeModule(gpu, kernels=(2 * US,), capture_alloc_bytes=100 * 2**30)
    with pytest.raises(RuntimeError) as err:
        measure_on(gpu, grows, "graph")
    assert CudaBackend().is_oom(err.value)                     # was "operation failed due to a previous error"


# --- 9. one-call samples within a few ticks: the mean beside the median ------------------------------------

@pytest.mark.parametrize("phase", [0.0, 0.37 * US])
def test_cold_samples_near_the_tick_report_their_mean(phase):
    gpu = FakeGpu(jitter=0.01, phase_s=phase, seed=3)
    m = measure_on(gpu, FakeModule(gpu, kernels=(2.2 * US,)), "cold", budget_s=0.5)
    assert m.median in (pytest.approx(2.0 * US), pytest.approx(2.5 * US))    # snapped to ticks
    assert m.stats.mean == pytest.approx(2.2 * US, rel=0.02)                   # the mean is not
    assert any(n.startswith("one-call median") and "mean" in n for n in m.notes)
    if m.converged:                                                          # on the mean's CI, not the median's
        assert CI_Z * m.stats.std / math.sqrt(m.stats.n) <= 0.01 * m.stats.mean


# --- the NVML handle: by UUID (MIG instances too), never guessed by index --------------------------------

def test_a_mig_instance_is_found_by_its_uuid_and_nothing_is_guessed():
    mig = FakeGpu(uuid="GPU-cccc-3", mig=("MIG-dddd-4",))
    nvml = Nvml(fake_pynvml(FakeNode([FakeGpu(uuid="GPU-aaaa-1"), mig])))
    assert nvml_handle(nvml, "dddd-4") is mig                  # torch's MIG UUID: the GPU it lives on
    assert nvml_handle(nvml, "bbbb-9") is None and nvml_handle(nvml, None) is None     # was: NVML's GPU 0
    lone = FakeGpu(uuid="GPU-eeee-5")
    m = measure_on(lone, FakeModule(lone, kernels=(200 * US,)), nvml=False)   # no NVML: trial clocks only
    assert m.clocks.reasons == () and m.clocks.sm_clock_min_mhz == pytest.approx(1755, rel=0.01)


# --- 10. a backward: captured on the stream its forward ran on; its peak memory from the allocator ---------

def _backward(gpu: FakeGpu, mode: str, scoped: bool) -> tuple[object, FakeAutograd]:
    """A backward timed as the runner times one: forward graphs made first (inside the backend's pass
    scope when ``scoped``), then the gradient calls alone."""
    r = rig(gpu, mode)
    layer = FakeAutograd(gpu, forward_kernels=(30 * US,), backward_kernels=(20 * US, 20 * US))
    scope = r.device.backend.pass_scope(r.device, "backward") if scoped else contextlib.nullcontext()
    with scope:
        graphs = [(layer.forward(),) for _ in range(3)]
        m = measure(layer.grad, device=r.device, inputs=graphs, mode=mode, timer=r.timer, cuda_api=r.api,
                    monitor=r.monitor, warmup_s=1e-3)
    return m, layer


def test_a_backward_is_captured_on_the_stream_its_forward_ran_on():
    gpu = FakeGpu()
    m, layer = _backward(gpu, "graph", scoped=True)
    assert m.mode == "graph" and m.timer == "cuda_graph" and not m.notes
    assert m.median == pytest.approx(2 * (20 * US + gpu.node_s), rel=1e-3)     # the backward's kernels only
    assert layer.forwards == 3                                                   # no forward was timed
    assert gpu.current is None                                                   # the scope's stream undone


def test_a_backward_whose_forward_ran_on_the_default_stream_is_timed_hot_and_says_why():
    gpu = FakeGpu()
    m, _ = _backward(gpu, "graph", scoped=False)           # autograd would launch on the legacy default stream
    assert m.mode == "hot" and m.notes[0].startswith("graph capture failed") and CAPTURE_SYNC in m.notes[0]
    assert m.median == pytest.approx(40 * US, rel=1e-3)
    hot, _ = _backward(FakeGpu(), "hot", scoped=True)
    assert hot.mode == "hot" and hot.median == pytest.approx(40 * US, rel=1e-3)


def test_the_forward_keeps_its_stream_and_peak_memory_is_the_allocators():
    gpu = FakeGpu()
    backend = fake_backend(gpu)
    device = backend.resolve("cuda:0")
    with backend.pass_scope(device, "forward"):
        assert backend.cuda.current_stream() is gpu.default        # forward rows are timed as they always were
    layer = FakeAutograd(gpu, saved_bytes=3 * MIB, grad_bytes=5 * MIB)
    gpu.alloc(100 * MIB)                                          # inputs and weights: allocated before the step
    peak = backend.peak_memory(device, lambda: layer.grad(layer.forward()))
    assert peak == 8 * MIB                                        # saved activations + gradients at the peak
    assert backend.peak_memory(device, lambda: None) == 0


# --- also: TF32 switches, bf16 -------------------------------------------------------------------------------

def test_tf32_settings_read_through_the_new_api():
    m = torch.backends.cuda.matmul
    before = m.fp32_precision
    try:
        m.fp32_precision = "tf32"                              # anything in the process using the new API
        with pytest.raises(RuntimeError):
            _ = m.allow_tf32                                    # torch then refuses the legacy flag
        s = cuda_settings()
        assert s["allow_tf32_matmul"] is True and s["float32_matmul_precision"] == "high"
        with CudaBackend().gemm_dtype("fp32"):
            assert cuda_settings()["allow_tf32_matmul"] is False
        assert m.fp32_precision == "tf32"
    finally:
        m.fp32_precision = before


def test_bf16_needs_the_measured_devices_compute_capability():
    volta = FakeGpu(name="Tesla V100-SXM2-16GB", cc=(7, 0))
    node = FakeNode([FakeGpu(), volta])
    backend = fake_backend(node)
    assert backend.cuda.is_bf16_supported()                     # torch's answer: current device, emulation counts
    assert "compute capability 8.0" in backend.dtype_problem(backend.resolve("cuda:1"), "bf16")
    assert backend.dtype_problem(backend.resolve("cuda:0"), "bf16") is None
