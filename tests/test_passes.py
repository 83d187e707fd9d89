"""The passes a row times (harness/timing/passes.py): what a timed call does, on a fake clock that
moves only when the layer's forward or backward runs, so that a forward (or a gradient reset) inside a
timed block would show in every sample."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.backends.cpu import CpuTimer
from harness.timing import measure
from harness.timing.passes import backward_pass, forward_pass, make_pass, training_pass

#: Fake seconds one forward and one backward of the layer take: far apart, so a sample says which ran.
FORWARD_S, BACKWARD_S = 1.0, 1e-3


class FakeClock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += round(seconds * 1e9)


class Scale(nn.Module):
    """y = x * w, whose forward and backward move the fake clock and count their calls."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((4,), 2.0))
        self.clock, self.forwards, self.backwards = clock, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self

        class Op(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, w):  # noqa: ANN001, ANN205
                ctx.save_for_backward(x, w)
                return x * w

            @staticmethod
            def backward(ctx, g):  # noqa: ANN001, ANN205
                layer.backwards += 1
                layer.clock.advance(BACKWARD_S)
                x, w = ctx.saved_tensors
                return g * w, (g * x).sum(0)

        self.forwards += 1
        self.clock.advance(FORWARD_S)
        return Op.apply(x, self.w)


def draw(shapes: list[tuple[int, ...]], n: int) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(torch.full(s, 0.5) for s in shapes) for _ in range(n)]


SETS = [(torch.full((3, 4), float(i + 1)),) for i in range(3)]


def timed(fn, sets, clock):  # noqa: ANN001, ANN201
    return measure(fn, inputs=sets, timer=CpuTimer(clock), warmup_s=0.01, min_reps=10, canary=False)


def test_a_backward_sample_times_the_gradients_alone_and_nothing_is_reset():
    clock = FakeClock()
    layer = Scale(clock)
    work = backward_pass(layer, SETS, ("input", "weight"), draw)
    # one forward graph per input set, all made before the timer starts
    assert layer.forwards == len(SETS) and layer.backwards == 0
    with work.grad_mode():
        m = timed(work.fn, work.sets, clock)
    assert layer.forwards == len(SETS)                       # no forward in any timed block (nor in warm-up)
    assert layer.backwards == m.warmup_calls + m.number * len(m.samples_s)
    assert m.median == pytest.approx(BACKWARD_S) and max(m.samples_s) == pytest.approx(BACKWARD_S)
    # autograd.grad returns fresh gradients: nothing accumulated, so nothing needed zeroing between calls
    assert layer.w.grad is None and all(x.grad is None for (x,) in SETS)
    outs, wanted, grad_outs = work.sets[1]
    dx, dw = work.fn(outs, wanted, grad_outs)
    assert torch.equal(dx, torch.full((3, 4), 0.5 * 2.0))                      # g * w
    assert torch.equal(dw, torch.full((4,), 0.5 * 2.0 * 3))                    # sum over 3 rows of g * x (x = 2)


def test_forward_plus_backward_times_both_in_one_call():
    clock = FakeClock()
    layer = Scale(clock)
    work = training_pass(layer, SETS, ("weight",), draw)
    assert layer.forwards == 1                               # the shapes only
    with work.grad_mode():
        m = timed(work.fn, work.sets, clock)
    assert m.median == pytest.approx(FORWARD_S + BACKWARD_S)
    assert layer.forwards == 1 + layer.backwards
    assert layer.w.grad is None


def test_grads_choose_what_requires_grad():
    clock = FakeClock()
    layer = Scale(clock)
    weight_only = backward_pass(layer, SETS, ("weight",), draw)
    outs, wanted, _ = weight_only.sets[0]
    assert [t.shape for t in wanted] == [torch.Size([4])] and not outs[0].is_leaf
    assert layer.w.requires_grad
    input_only = backward_pass(layer, SETS, ("input",), draw)
    _, wanted, _ = input_only.sets[0]
    assert [t.shape for t in wanted] == [torch.Size([3, 4])] and not layer.w.requires_grad    # frozen
    assert all(not x.requires_grad for (x,) in SETS)       # the caller's inputs are left as they were


def test_the_forward_is_the_layer_under_inference_mode():
    layer = Scale(FakeClock())
    work = make_pass("forward", layer, SETS, None, draw)
    assert work == forward_pass(layer, SETS) and work.fn is layer and work.step is None
    with work.grad_mode():
        assert torch.is_inference_mode_enabled()
    with make_pass("backward", layer, SETS, ("input", "weight"), draw).grad_mode():
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
