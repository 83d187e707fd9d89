"""The measuring loop driven by fake clocks: CPU, and the CUDA paths (hot, cold/L2 flush, graph,
auto) on a fake GPU (tests/fake_cuda.py), so their logic is tested without one. One real CPU
measurement at the end."""

import gc
import math

import pytest
import torch
from fake_cuda import FakeGpu, FakeModule, measure_on, rig

from harness.backends.cpu import CpuBackend, CpuTimer
from harness.backends.cuda import GRAPH_REPLAY_S, CudaBackend
from harness.errors import SpecError
from harness.timing import FixedCount, measure, random_inputs, rotation_sets
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


# --- CUDA paths on a fake GPU (tests/fake_cuda.py: an asynchronous queue, event ticks, capture) --------

def test_cuda_hot_times_blocks_with_events():
    gpu = FakeGpu()
    r = rig(gpu)
    m = measure(FakeModule(gpu, kernels=(10e-6,)), device=r.device, timer=r.timer, cuda_api=r.api,
                monitor=r.monitor, warmup_s=1e-3)
    assert m.timer == "cuda_event" and m.device == "cuda:0" and m.mode == "hot"
    assert m.number == round(CUDA_BLOCK_S / 10e-6)            # 20 launches per event pair
    assert m.median == pytest.approx(10e-6)
    assert m.settings["cudnn_benchmark"] is True               # autotuning on during warm-up and timing
    assert gpu.syncs >= 2


def test_cuda_cold_flushes_l2_before_every_sample_untimed():
    gpu = FakeGpu(write_bytes_s=20e9)                          # a 5 ms flush of 2 x 50 MiB
    r = rig(gpu, "cold")
    m = measure(FakeModule(gpu, kernels=(10e-6,)), device=r.device, mode="cold", timer=r.timer, cuda_api=r.api,
                monitor=r.monitor, warmup_s=1e-3)
    assert m.number == 1
    assert m.median == pytest.approx(10e-6)                    # the flush is outside the events
    assert gpu.log.count("flush") == m.stats.n + ESTIMATE_CALLS  # the estimate's single calls are cold too
    assert m.stats.n < 20                                        # chunks sized with the flush time included
    i = len(gpu.log) - 1 - gpu.log[::-1].index("flush")
    assert gpu.log[i:i + 3] == ["flush", "sleep", "kernel"]     # flush, the lead spin, the timed call
    assert m.settings["l2_flush_bytes"] == 2 * 50 * 2**20


def test_cuda_graph_mode_removes_launch_overhead():
    hot_gpu, gpu = FakeGpu(), FakeGpu()
    hot = measure_on(hot_gpu, FakeModule(hot_gpu, kernels=(1e-6,)))
    graph = measure_on(gpu, FakeModule(gpu, kernels=(1e-6,)), "graph")
    assert hot.median == pytest.approx(5e-6)                   # every launch costs the host 5 us: host-bound
    assert graph.timer == "cuda_graph" and graph.mode == "graph"
    per_call = 1e-6 + gpu.node_s
    assert graph.number == math.ceil(GRAPH_REPLAY_S / per_call)    # a replay of 2 ms, sized from a replay
    assert graph.median == pytest.approx(per_call, rel=1e-3)   # launch cost paid once per 2 ms replay
    assert graph.median < hot.median / 3


def test_cuda_auto_mode_graphs_host_bound_calls_only():
    tiny_gpu, big_gpu = FakeGpu(), FakeGpu()
    m = measure_on(tiny_gpu, FakeModule(tiny_gpu, kernels=(1e-6,)), "auto")
    assert m.mode == "graph" and m.timer == "cuda_graph"      # 5 us eager (host) vs 1.5 us replayed
    m = measure_on(big_gpu, FakeModule(big_gpu, kernels=(1e-3,)), "auto")
    assert m.mode == "hot" and m.timer == "cuda_event" and m.median == pytest.approx(1e-3)
    clock = FakeClock()
    fn, _ = cpu_work(clock, lambda n: 1e-6)
    assert measure(fn, timer=CpuTimer(clock), warmup_s=0, mode="auto").mode == "hot"


def test_cuda_stopping_rule_on_device_time():
    gpu = FakeGpu()
    m = measure_on(gpu, FakeModule(gpu, kernels=(1e-3,)), min_reps=12)
    assert m.stop_reason == "converged" and m.stats.n >= 12 and m.stats.rel_ci < 1e-9


def test_cuda_monitor_takes_trial_clocks_and_reasons():
    gpu = FakeGpu()
    m = measure_on(gpu, FakeModule(gpu, kernels=(1e-3,)))
    assert m.clocks.samples >= 1 and m.clocks.source == "trial"
    assert not m.throttled and m.summary()["clock_reasons"] == "sw_power_cap"
    assert m.summary()["sm_clock_min_mhz"] == pytest.approx(gpu.load_mhz, rel=0.01)


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


def test_cpu_blocks_beside_a_slow_canary_are_rejected_and_counted():
    """A host slowed 30 % for a while: the layer's calls and the canary's steps both take 1.3x.
    The blocks in that window are rejected (not samples, not counted by the rule); the others kept."""
    from harness.timing.canary import Canary
    clock = FakeClock()
    slow = {"on": False}
    calls = {"n": 0}

    def layer():
        calls["n"] += 1
        slow["on"] = 40 <= calls["n"] < 60            # the host slows while calls 40-59 run
        clock.advance(1e-3 * (1.3 if slow["on"] else 1.0))

    bird = Canary(clock=clock, step=lambda: clock.advance(10e-6 * (1.3 if slow["on"] else 1.0)))
    m = measure(layer, timer=CpuTimer(clock), warmup_s=0.0, min_reps=80, target_rel_ci=1e-9, max_reps=80,
                canary=bird)
    r = m.canary
    # 20 slowed blocks; the first has a quick canary before it (the faster neighbour counts): 19 rejected
    assert r is not None and r.rejected == 19
    assert m.stats.n == 80 and len(r.kept_s) == 80          # the rule counted kept samples only
    assert sorted(m.samples_s)[-2] == pytest.approx(1e-3)   # one slowed block (the first) among them
    assert r.reference_s == pytest.approx(10e-6) and r.slowdown == pytest.approx(0.3)   # seconds per step


def test_cpu_canary_slow_from_the_first_block_on_rejects_nothing():
    """A host slow during the whole sampling is not told within one measurement: the blocks' median
    canary moves with it, no block is rejected and the stopping rule sees every sample."""
    from harness.timing.canary import BURST, REPEATS, TARGET_S, Canary
    clock = FakeClock()
    n = {"c": 0}
    steps = round(TARGET_S / 10e-6)
    quick = 5 + BURST * (1 + REPEATS * steps)         # sizing (5 one-step readings), then the burst

    def step():                                      # the burst is quick, then the host stays slow
        n["c"] += 1
        clock.advance(10e-6 * (1.0 if n["c"] <= quick else 1.5))

    fn, _ = cpu_work(clock, lambda i: 1e-3)
    m = measure(fn, timer=CpuTimer(clock), warmup_s=0.0, min_reps=10, max_reps=10, canary=Canary(clock=clock,
                                                                                                   step=step))
    assert m.canary.rejected == 0 and m.stats.n == 10
    assert m.canary.reference_s == pytest.approx(1.5 * 10e-6)


def test_a_convergence_stands_only_where_the_blocks_the_canary_keeps_converge():
    """Sampling stops on the blocks the canary let through so far; the stored samples are those its
    final judgement keeps, so ``converged`` is asked of them again (``settled``). Twelve blocks of
    1.0 ms, then eight of 1.5 ms: beside a steady canary all twenty are kept and their median's CI
    (ranks 5 to 14 of 20) reaches into the slow ones, far over a 2 % target: sample on. Where the
    canary ran 30 % slow beside the last eight (the first of them has a quick reading before it, the
    faster neighbour counts), seven are rejected and the rest converge."""
    from harness.timing.measure import settled
    from harness.timing.stopping import CONVERGED, RelativeCI
    rule = RelativeCI(target=0.02, min_reps=10, min_time_s=0.0, budget_s=10.0, max_reps=1000)
    samples = [1.0e-3] * 12 + [1.5e-3] * 8
    assert rule.reason(sorted(samples[:12]), 0.1) == CONVERGED             # what sampling saw
    assert settled(rule, samples, [10e-6] * 21, 0.1) is None                # all kept: not converged
    assert settled(rule, samples, [10e-6] * 13 + [13e-6] * 8, 0.1) == CONVERGED
    assert settled(rule, samples, [10e-6] * 21, 20.0) == "budget"           # past the budget: the rule says so
