"""The measuring loop driven by fake clocks: CPU, and the CUDA paths (hot, cold/L2 flush, graph)
with a fake device, so their logic is tested without a GPU. One real CPU measurement at the end."""

import contextlib
import gc
import math

import pytest
import torch

from harness.backends import Device
from harness.backends.cpu import CpuBackend, CpuTimer
from harness.backends.cuda import CudaBackend, CudaEventTimer
from harness.errors import SpecError
from harness.timing import ClockSummary, FixedCount, measure, random_inputs, rotation_sets
from harness.timing.inputs import ALIGN_BYTES, POOL_BLOCK, InputPool, _tiled
from harness.timing.measure import ESTIMATE_CALLS, MIN_WARMUP_CALLS

CPU_BLOCK_S, CUDA_BLOCK_S = CpuBackend.block_s, CudaBackend.block_s


class FakeClock:
    """Nanosecond clock that moves only when the fake work says so."""

    def __init__(self):
        self.ns = 0

    def __call__(self):
        return self.ns

    def advance(self, seconds):
        self.ns += round(seconds * 1e9)


def cpu_work(clock, costs):
    """A callable whose n-th call takes costs(n) seconds of fake time."""
    state = {"n": 0}

    def fn(*args):
        clock.advance(costs(state["n"]))
        state["n"] += 1
    return fn, state


def test_cpu_constant_work_converges_at_min_reps():
    clock = FakeClock()
    fn, _ = cpu_work(clock, lambda n: 1e-3)
    m = measure(fn, timer=CpuTimer(clock), warmup_s=0.01, min_reps=10)
    assert m.stop_reason == "converged" and m.stats.n == 10
    assert m.median == pytest.approx(1e-3) and m.number == 1
    assert m.timer == "perf_counter_ns" and m.device == "cpu" and m.gc_paused


def test_cpu_warmup_is_not_sampled():
    # five slow first calls (module load, autotuning); warm-up makes 2 and the estimate 3 more
    clock = FakeClock()
    fn, state = cpu_work(clock, lambda n: 0.1 if n < MIN_WARMUP_CALLS + ESTIMATE_CALLS else 1e-3)
    m = measure(fn, timer=CpuTimer(clock), warmup_s=0.0)
    assert m.warmup_calls == MIN_WARMUP_CALLS + ESTIMATE_CALLS
    assert m.stats.max == pytest.approx(1e-3)     # no slow call among the samples
    assert m.estimate_s == pytest.approx(0.1)


def test_cpu_warmup_runs_for_its_time():
    clock = FakeClock()
    fn, state = cpu_work(clock, lambda n: 1e-3)
    m = measure(fn, timer=CpuTimer(clock), warmup_s=0.05)
    assert m.warmup_calls == 50 + ESTIMATE_CALLS
    assert m.warmup_s == pytest.approx(0.053)


def test_cpu_tiny_op_is_timed_in_blocks():
    clock = FakeClock()
    fn, _ = cpu_work(clock, lambda n: 1e-6)
    m = measure(fn, timer=CpuTimer(clock), warmup_s=0.0)
    assert m.number == round(CPU_BLOCK_S / 1e-6)          # 1000 calls per sample
    assert m.median == pytest.approx(1e-6)


def test_cpu_noisy_work_stops_on_budget():
    clock = FakeClock()
    fn, _ = cpu_work(clock, lambda n: 1e-3 if n % 2 else 3e-3)   # alternating: never within 1 %
    m = measure(fn, timer=CpuTimer(clock), warmup_s=0.0, budget_s=0.5, block_s=1e-4)
    assert m.stop_reason == "budget" and not m.converged
    assert 0.5 <= m.sampling_s < 0.51
    assert m.stats.n == pytest.approx(250, abs=2)           # 0.5 s of 2 ms-average calls
    assert m.stats.noisy


def test_cpu_fixed_rule_and_max_reps():
    clock = FakeClock()
    fn, _ = cpu_work(clock, lambda n: 1e-3 if n % 2 else 3e-3)
    assert measure(fn, timer=CpuTimer(clock), warmup_s=0, rule=FixedCount(7)).stats.n == 7
    m = measure(fn, timer=CpuTimer(clock), warmup_s=0, min_reps=5, max_reps=12, block_s=1e-4)
    assert m.stop_reason == "max_reps" and m.stats.n == 12


def test_threads_set_and_restored_gc_paused_and_restored():
    before = torch.get_num_threads()
    seen = {}

    def fn():
        seen["threads"] = torch.get_num_threads()
        seen["gc"] = gc.isenabled()
    m = measure(fn, threads=1, warmup_s=0, budget_s=0.05)
    assert seen == {"threads": 1, "gc": False}
    assert m.threads == 1
    assert torch.get_num_threads() == before and gc.isenabled()


def test_inputs_rotate_in_order():
    order = []
    sets = [(i,) for i in range(3)]
    clock = FakeClock()

    def fn(i):
        order.append(i)
        clock.advance(1e-3)
    m = measure(fn, inputs=sets, timer=CpuTimer(clock), warmup_s=0, rule=FixedCount(4))
    assert order[:7] == [0, 1, 2, 0, 1, 2, 0]
    assert m.rotation == 3


def test_rotation_sets():
    assert rotation_sets(64 * 1024, 32 * 2**20) == 16            # capped (would be 1024)
    assert rotation_sets(10 * 2**20, 32 * 2**20) == 7            # ceil(64 / 10)
    assert rotation_sets(100 * 2**20, 32 * 2**20) == 1
    assert rotation_sets(0, 1) == 1


def test_random_inputs_seeded_never_zero():
    a = random_inputs([(4, 8), (8,)], torch.float32, seed=3, sets=2)
    b = random_inputs([(4, 8), (8,)], torch.float32, seed=3, sets=2)
    c = random_inputs([(4, 8), (8,)], torch.float32, seed=4, sets=1)
    assert len(a) == 2 and all(torch.equal(x, y) for s, t in zip(a, b) for x, y in zip(s, t))
    assert not torch.equal(a[0][0], a[1][0])                     # sets differ from one another
    assert not torch.equal(a[0][0], c[0][0])
    assert (a[0][0] != 0).all()
    cl = random_inputs([(2, 3, 4, 5)], torch.bfloat16, seed=0, memory_format=torch.channels_last)[0][0]
    assert cl.dtype == torch.bfloat16 and cl.is_contiguous(memory_format=torch.channels_last)
    ints = random_inputs([(100,)], torch.int64, seed=0)[0][0]
    assert 0 <= ints.min() and ints.max() < 100


def _spans(tensors):  # noqa: ANN001, ANN202
    """(first byte, one past the last byte) of each tensor's storage window."""
    out = []
    for t in tensors:
        first = t.data_ptr()
        last = first + max((n - 1) * st for n, st in zip(t.shape, t.stride())) * t.element_size() + t.element_size()
        out.append((first, last))
    return out


def test_input_pool_windows_are_disjoint_page_aligned_and_seeded():
    pool = InputPool()
    shapes = [(2, 3, 4, 5), (7,)]
    sets = pool.inputs(shapes, torch.float32, "cpu", seed=12345, sets=3, cache_bytes=2**20,
                       memory_format=torch.channels_last)
    flat = [t for s in sets for t in s]
    assert [tuple(t.shape) for t in flat] == [(2, 3, 4, 5), (7,)] * 3
    assert all(t.data_ptr() % ALIGN_BYTES == 0 for t in flat)
    spans = sorted(_spans(flat))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))            # no two windows overlap
    assert sets[0][0].is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(sets[0][0], sets[1][0]) and (sets[0][0] != 0).all()
    again = InputPool().inputs(shapes, torch.float32, "cpu", seed=12345, sets=3, cache_bytes=2**20,
                               memory_format=torch.channels_last)
    assert all(torch.equal(x, y) for s, t in zip(sets, again) for x, y in zip(s, t))   # a new process: same values
    other = pool.inputs(shapes, torch.float32, "cpu", seed=54321, sets=1, cache_bytes=2**20)
    assert not torch.equal(other[0][1], sets[0][1])
    ints = pool.inputs([(100,)], torch.int64, "cpu", seed=1, sets=1, cache_bytes=2**20)[0][0]
    assert ints.dtype == torch.int64 and 0 <= ints.min() and ints.max() < 100


def test_input_pool_is_drawn_once_per_dtype_and_bounded():
    pool = InputPool(max_bytes=2 * 3 * 2**20)                 # room for two pools of 3 x 1 MiB (any dtype)
    a = pool.inputs([(64,)], torch.float32, "cpu", seed=1, sets=2, cache_bytes=2**20)[0][0]
    b = pool.inputs([(64,)], torch.float32, "cpu", seed=2, sets=2, cache_bytes=2**20)[0][0]
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()   # one pool, two windows
    pool.inputs([(64,)], torch.bfloat16, "cpu", seed=1, sets=1, cache_bytes=2**20)
    fresh = pool.inputs([(64,)], torch.float16, "cpu", seed=1, sets=1, cache_bytes=2**20)[0][0]
    assert fresh._base is None                                  # a third pool would pass the bound: fresh inputs
    assert len(pool._pools) == 2 and sum(p.nbytes for p in pool._pools.values()) <= pool.max_bytes
    again = pool.inputs([(64,)], torch.float32, "cpu", seed=1, sets=2, cache_bytes=2**20)[0][0]
    assert again.untyped_storage().data_ptr() == a.untyped_storage().data_ptr()   # never evicted, never redrawn
    pool.clear()
    assert not pool._pools


CL, CL3 = torch.channels_last, torch.channels_last_3d


@pytest.mark.parametrize("shape, fmt", [((2, 3, 4, 5), CL), ((8, 1, 6, 6), CL), ((4, 7, 1, 1), CL), ((1, 1, 5, 5), CL),
                                        ((2, 3, 2, 4, 5), CL3), ((2, 1, 2, 4, 5), CL3)])
def test_pool_views_have_the_strides_of_fresh_inputs(shape, fmt):
    # kernels choose by strides: with a size-1 dimension torch keeps plain strides for channels_last
    view = InputPool().inputs([shape], torch.float32, "cpu", seed=3, sets=2, cache_bytes=2**20, memory_format=fmt)
    fresh = random_inputs([shape], torch.float32, seed=3, memory_format=fmt)[0][0]
    assert all(s[0].stride() == fresh.stride() and s[0].is_contiguous(memory_format=fmt) for s in view)


def test_input_pool_gives_a_case_too_large_for_it_fresh_inputs():
    pool = InputPool()
    big = pool.inputs([(1024, 1024)], torch.float32, "cpu", seed=1, sets=1, cache_bytes=2**18)[0][0]
    assert big._base is None and not pool._pools                # 4 MiB > 3 x 256 KiB: drawn for itself
    assert torch.equal(big, random_inputs([(1024, 1024)], torch.float32, seed=1)[0][0])


def test_pool_tiles_are_rotated_copies_of_one_draw():
    n = 3 * POOL_BLOCK + 10
    values = _tiled(torch.empty(n))
    b = POOL_BLOCK
    assert not torch.equal(values[:b], values[b:2 * b]) and not torch.equal(values[b:2 * b], values[2 * b:3 * b])
    assert torch.equal(values[b:b + 100], values[4099:4199])    # tile 1: the block shifted by 4099
    assert abs(float(values.mean())) < 0.01 and abs(float(values.std()) - 1) < 0.01


@pytest.mark.parametrize("kwargs, field", [
    ({"mode": "cold"}, "mode"), ({"mode": "warm"}, "mode"), ({"device": "mps"}, "device"),
    ({"threads": 0}, "threads"), ({"inputs": []}, "inputs"), ({"warmup_s": -1}, "warmup_s"),
    ({"warmup_s": float("inf")}, "warmup_s")])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(SpecError, match=f"{field}="):
        measure(lambda: None, **kwargs)


# --- CUDA paths on a fake device ---------------------------------------------------------------

class FakeEvent:
    def __init__(self, dev):
        self.dev, self.t, self.synced = dev, None, False

    def record(self):
        self.t = self.dev.t
        self.dev.unsynced.append(self)

    def elapsed_time(self, end):
        assert self.synced and end.synced, "event read before synchronize"
        return (end.t - self.t) * 1e3          # ms, as torch.cuda.Event


class FakeCuda:
    """A device whose clock advances by the work enqueued on it (launches run at once, in order).

    Each launch from the host costs ``overhead`` (the GPU idles while it is issued) plus ``cost``;
    a graph replay pays ``overhead`` once for all its launches; the flush takes ``flush_cost``."""

    device = "cuda:0"

    def __init__(self, cost, overhead=0.0, flush_cost=0.0, l2=50 * 2**20):
        self.cost, self.overhead, self.flush_cost, self.l2 = cost, overhead, flush_cost, l2
        self.t = 0.0
        self.unsynced = []
        self.flushes = self.syncs = 0
        self.captured = []
        self.autotune = None
        self.log = []

    def launch(self, *args):
        self.t += self.overhead + self.cost
        self.log.append("call")

    def event(self):
        return FakeEvent(self)

    def synchronize(self):
        self.syncs += 1
        for e in self.unsynced:
            e.synced = True
        self.unsynced = []

    def make_flush(self):
        def flush():
            self.flushes += 1
            self.t += self.flush_cost
            self.log.append("flush")
        return flush, 2 * self.l2

    def capture(self, call, number):
        self.captured.append(number)

        def replay():
            self.t += self.overhead + number * self.cost
        return replay

    def settings(self):
        return {"cudnn_benchmark": self.autotune, "allow_tf32_matmul": False}

    @contextlib.contextmanager
    def scope(self, autotune):
        self.autotune = autotune
        yield
        self.autotune = None


class FakeMonitor:
    def __init__(self):
        self.samples = 0

    def sample(self):
        self.samples += 1

    def summary(self):
        return ClockSummary(samples=self.samples, sm_clock_min_mhz=1400, sm_clock_max_mhz=1980,
                            sm_clock_limit_mhz=1980, reasons_mask=0x4, reasons=("sw_power_cap",), throttled=True)


#: A resolved CUDA device without the hardware: the fake API stands for it.
FAKE_GPU = Device(type="cuda", index=0, name="fake GPU", main_memory="HBM", modes=CudaBackend.modes, host=False,
                  tensors="cuda:0", llc_bytes=50 * 2**20, backend=CudaBackend())


def cuda_measure(api, mode, monitor=None, **kw):
    timer = CudaEventTimer(api, "hot" if mode == "auto" else mode, monitor, host_clock=lambda: api.t)
    return measure(api.launch, device=FAKE_GPU, mode=mode, cuda_api=api, timer=timer, monitor=monitor,
                   warmup_s=kw.pop("warmup_s", 0.001), **kw)


def test_cuda_hot_times_blocks_with_events():
    api = FakeCuda(cost=10e-6)
    m = cuda_measure(api, "hot", monitor=FakeMonitor())
    assert m.timer == "cuda_event" and m.device == "cuda:0" and m.mode == "hot"
    assert m.number == round(CUDA_BLOCK_S / 10e-6)            # 20 launches per event pair
    assert m.median == pytest.approx(10e-6)
    assert m.settings["cudnn_benchmark"] is True               # autotuning on during warm-up and timing
    assert api.autotune is None                                # scope left
    assert api.syncs >= 2


def test_cuda_cold_flushes_l2_before_every_sample_untimed():
    api = FakeCuda(cost=10e-6, flush_cost=5e-3)
    m = cuda_measure(api, "cold")
    assert m.number == 1
    assert m.median == pytest.approx(10e-6)                    # the 5 ms flush is outside the events
    assert api.flushes == m.stats.n + ESTIMATE_CALLS            # the estimate's single calls are cold too
    assert m.stats.n < 20                                        # chunks sized with the flush time included
    i = api.log.index("flush")
    assert api.log[i:i + 4] == ["flush", "call", "flush", "call"]
    assert m.settings["l2_flush_bytes"] == 2 * 50 * 2**20


def test_cuda_graph_mode_removes_launch_overhead():
    hot = cuda_measure(FakeCuda(cost=1e-6, overhead=5e-6), "hot")
    api = FakeCuda(cost=1e-6, overhead=5e-6)
    graph = cuda_measure(api, "graph")
    assert hot.median == pytest.approx(6e-6)                   # every launch pays the 5 us
    k = math.ceil(CUDA_BLOCK_S / 6e-6)                         # 34 launches captured in one graph
    assert api.captured == [k] and graph.number == k
    assert graph.timer == "cuda_graph"
    assert graph.median == pytest.approx(1e-6 + 5e-6 / k)      # overhead paid once per replay
    assert graph.median < hot.median / 4


def test_cuda_auto_mode_graphs_tiny_ops_only():
    tiny = FakeCuda(cost=1e-6, overhead=5e-6)
    m = cuda_measure(tiny, "auto")
    assert m.mode == "graph" and m.timer == "cuda_graph" and tiny.captured   # 6 us estimated < GRAPH_BELOW_S
    big = FakeCuda(cost=1e-3, overhead=5e-6)
    m = cuda_measure(big, "auto")
    assert m.mode == "hot" and m.timer == "cuda_event" and not big.captured
    clock = FakeClock()
    fn, _ = cpu_work(clock, lambda n: 1e-6)
    assert measure(fn, timer=CpuTimer(clock), warmup_s=0, mode="auto").mode == "hot"


def test_cuda_stopping_rule_on_device_time():
    api = FakeCuda(cost=1e-3)
    m = cuda_measure(api, "hot", min_reps=12)
    assert m.stop_reason == "converged" and m.stats.n >= 12 and m.stats.rel_ci == 0


def test_cuda_monitor_sampled_while_work_is_queued_and_flags_throttling():
    api = FakeCuda(cost=1e-3)
    mon = FakeMonitor()
    m = cuda_measure(api, "hot", monitor=mon)
    assert mon.samples >= 1 and m.clocks.samples == mon.samples
    assert m.throttled and m.summary()["clock_reasons"] == "sw_power_cap"
    assert m.summary()["sm_clock_min_mhz"] == 1400


def test_summary_is_flat_and_names_units():
    clock = FakeClock()
    fn, _ = cpu_work(clock, lambda n: 2e-3)
    s = measure(fn, timer=CpuTimer(clock), warmup_s=0).summary()
    assert s["time_median_s"] == pytest.approx(2e-3) and s["reps"] == 10
    assert {"time_iqr_s", "time_min_s", "rel_iqr", "rel_ci", "noisy", "threads", "throttled"} <= set(s)


def test_real_cpu_measurement():
    x = torch.randn(256, 256)
    m = measure(torch.mm, inputs=[(x, x)], budget_s=0.3)
    assert m.stats.n >= 1 and 0 < m.stats.min <= m.median <= m.stats.max
    assert m.threads == torch.get_num_threads()
    # 2 * 256^3 = 33.5 MFLOP: a modern CPU core needs between 10 us and 1 s for it
    assert 1e-5 < m.median < 1.0


@pytest.mark.cuda
def test_real_cuda_modes_agree_on_a_large_matmul():
    a = torch.randn(4096, 4096, device="cuda")
    hot = measure(torch.mm, device="cuda", inputs=[(a, a)], budget_s=1.0)
    cold = measure(torch.mm, device="cuda", mode="cold", inputs=[(a, a)], budget_s=1.0)
    graph = measure(torch.mm, device="cuda", mode="graph", inputs=[(a, a)], budget_s=1.0)
    assert hot.timer == "cuda_event" and graph.timer == "cuda_graph"
    for m in (cold, graph):
        assert m.median == pytest.approx(hot.median, rel=0.1)   # a 137 GFLOP matmul: launch cost invisible
