"""The pass a row times, made ready before the timer starts: what ``measure`` calls, with one argument
tuple per rotating input set.

* ``forward``: the layer itself, called on one input set per call (timed under inference mode).
* ``backward``: the gradients alone. One forward graph per input set is made here, before warm-up,
  with autograd on; each call is ``torch.autograd.grad(outputs, wanted, grad_outputs,
  retain_graph=True)`` on the next set's graph. The forward never runs inside a timed block, and
  ``autograd.grad`` returns fresh gradients (nothing accumulates into ``.grad``), so nothing is zeroed
  or reset between calls either: each sample is the gradient computation and nothing else (triton's
  ``do_bench(grad_to_none=...)`` resets ``.grad`` outside its timed region for the same reason).
* ``forward+backward``: both in one call (a training step without the optimizer), on input sets that
  require grad where the input's gradient is wanted.

``grads`` names what a backward computes: ``input`` (the layer's floating-point inputs) and
``weight`` (every parameter, biases included; parameters not wanted are frozen with
``requires_grad_(False)``, as a first layer's input or a frozen layer would be). Gradient outputs
are drawn by the caller (``draw``: random, never zeros, laid out like the inputs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

#: ``draw(shapes, sets)``: ``sets`` tuples of random tensors of ``shapes`` (the gradient outputs).
Draw = Callable[[list[tuple[int, ...]], int], list[tuple[torch.Tensor, ...]]]


@dataclass(frozen=True, slots=True)
class Pass:
    """One pass ready to time.

    Attributes:
        name: ``forward``, ``backward`` or ``forward+backward``.
        module: the layer.
        fn: the timed call, ``fn(*args)`` with ``args`` one of ``sets``.
        sets: one argument tuple per rotating input set (for the backward: each set's forward graph).
        grad_mode: the autograd mode timing, profiling and the peak-memory call run under
            (``torch.inference_mode`` for the forward, ``torch.enable_grad`` otherwise).
        step: one forward and backward of the first input set, made from scratch (the training step
            whose peak memory a device's allocator measures); ``None`` for the forward.
    """

    name: str
    module: nn.Module
    fn: Callable[..., object]
    sets: list[tuple[Any, ...]]
    grad_mode: Callable[[], contextlib.AbstractContextManager[Any]]
    step: Callable[[], object] | None = None


def forward_pass(module: nn.Module, sets: Sequence[tuple[Any, ...]]) -> Pass:
    """The forward: ``module(*args)`` per call, under inference mode."""
    return Pass("forward", module, module, list(sets), torch.inference_mode)


def _floating(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point()


def _tensors(out: Any) -> list[torch.Tensor]:
    """The outputs a gradient flows back from (tensors that require grad)."""
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.requires_grad]


def _leaves(args: tuple[Any, ...], want_input: bool) -> tuple[Any, ...]:
    """An input set as leaves of a fresh graph (sharing storage: no copy), requiring grad where wanted."""
    return tuple(t.detach().requires_grad_(want_input) if _floating(t) else t for t in args)


def _parameters(module: nn.Module, want_weight: bool) -> list[torch.Tensor]:
    """The module's floating-point parameters, requiring grad only when their gradient is wanted."""
    params = [p for p in module.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(want_weight)
    return params if want_weight else []


def _wanted(args: tuple[Any, ...], params: list[torch.Tensor], want_input: bool) -> list[torch.Tensor]:
    return ([t for t in args if _floating(t)] if want_input else []) + params


def _grad_outputs(module: nn.Module, first: tuple[Any, ...], sets: int, draw: Draw) -> list[tuple[torch.Tensor, ...]]:
    """One tuple of gradient outputs per set, shaped as the module's outputs (one forward to learn them)."""
    with torch.enable_grad():
        shapes = [tuple(t.shape) for t in _tensors(module(*first))]
    return draw(shapes, sets)


def _grad(outs: list[torch.Tensor], wanted: list[torch.Tensor], grad_outs: tuple[torch.Tensor, ...]) -> object:
    """The timed backward call: fresh gradients from a stored graph, which is kept for the next call."""
    return torch.autograd.grad(outs, wanted, grad_outs, retain_graph=True)


def backward_pass(module: nn.Module, sets: Sequence[tuple[Any, ...]], grads: tuple[str, ...], draw: Draw) -> Pass:
    """The backward of ``grads`` alone: every set's forward graph made now (module docstring)."""
    want_input = "input" in grads
    params = _parameters(module, "weight" in grads)
    leaves = [_leaves(args, want_input) for args in sets]
    with torch.enable_grad():
        outs = [_tensors(module(*args)) for args in leaves]
    grad_outs = draw([tuple(t.shape) for t in outs[0]], len(leaves))
    graphs = [(o, _wanted(args, params, want_input), g) for o, args, g in zip(outs, leaves, grad_outs)]
    return Pass("backward", module, _grad, graphs, torch.enable_grad,
                step=lambda: _step(module, leaves[0], params, want_input, grad_outs[0]))


def _step(module: nn.Module, args: tuple[Any, ...], params: list[torch.Tensor], want_input: bool,
          grad_outs: tuple[torch.Tensor, ...]) -> object:
    """One training step: the forward, then the gradients of ``grads`` (the graph freed after)."""
    outs = _tensors(module(*args))
    return torch.autograd.grad(outs, _wanted(args, params, want_input), grad_outs)


def training_pass(module: nn.Module, sets: Sequence[tuple[Any, ...]], grads: tuple[str, ...], draw: Draw) -> Pass:
    """The forward and the backward of ``grads`` in one call."""
    want_input = "input" in grads
    params = _parameters(module, "weight" in grads)
    leaves = [_leaves(args, want_input) for args in sets]
    grad_outs = _grad_outputs(module, leaves[0], len(leaves), draw)

    def step(args: tuple[Any, ...], g: tuple[torch.Tensor, ...]) -> object:
        return _step(module, args, params, want_input, g)

    return Pass("forward+backward", module, step, [(args, g) for args, g in zip(leaves, grad_outs)], torch.enable_grad,
                step=lambda: step(leaves[0], grad_outs[0]))


#: The builder of each pass that has a backward.
WITH_BACKWARD: dict[str, Callable[[nn.Module, Sequence[tuple[Any, ...]], tuple[str, ...], Draw], Pass]] = {
    "backward": backward_pass, "forward+backward": training_pass}


def make_pass(name: str, module: nn.Module, sets: Sequence[tuple[Any, ...]], grads: tuple[str, ...] | None,
              draw: Draw) -> Pass:
    """The pass ``name`` of ``module`` over ``sets`` (``grads`` and ``draw`` unused by the forward)."""
    if name == "forward":
        return forward_pass(module, sets)
    assert grads is not None, "a pass with a backward names its gradients"
    return WITH_BACKWARD[name](module, sets, grads, draw)
