"""A parsed suite and how it expands into cases: one case per sweep point x memory format x dtype
(x the device, when one is given), each with a stable id. Expansion is streamed (a generator):
a large sweep starts measuring at once and never sits in memory as a list."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import SpecError
from harness.layers.spec import LAYERS, LayerSpec, parse_layer, parse_shape
from harness.record import GRADIENTS, PASSES, ids
from harness.suite.formula import evaluate

_PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
#: The pass every suite times unless told otherwise; its cases' ids are those suites always gave them.
FORWARD = PASSES[0]


@dataclass(frozen=True, slots=True)
class Case:
    """One row-to-be: a layer configuration of a suite at one dtype (and device, when given).

    Attributes:
        case_id: hash of family, layer, canonical config, input shapes, memory format and dtype.
        config_id: the same without the family (one layer held by several families).
        family: the sweep's family label (equal-FLOPs families share one).
        layer: layer kind (``conv2d``).
        config: the layer's parameters under canonical names (``in_channels``, ``groups``, ...):
            every field of the validated spec, defaults included; for a case invalid before
            validation, its parameters as written under canonical names.
        inputs: input shapes (``None`` when skipped before shapes were known).
        axes: every name of the sweep point: axes, constants, derived values (``batch``, ``g``...).
        memory_format: ``nchw`` or ``channels_last``; dtype: ``fp32``, ``bf16``, ...
        device: the device type the run gives (``None`` when the suite is expanded without one).
        threads: CPU threads the suite asks for (``None``: the run's).
        skip: why the configuration is invalid (the row gets status ``skipped``), else ``None``.
        spec: the validated layer spec (``None`` when skipped).
        pass_: ``forward``, ``backward`` or ``forward+backward`` (``harness.record.PASSES``).
        grads: the gradients a backward computes, in ``harness.record.GRADIENTS`` order (``None`` for a
            forward case; for a case skipped before validation, as the sweep declared them).
    """

    case_id: str
    config_id: str
    suite: str
    family: str
    layer: str
    config: tuple[tuple[str, Any], ...]
    inputs: tuple[tuple[int, ...], ...] | None
    axes: tuple[tuple[str, Any], ...]
    memory_format: str
    dtype: str
    device: str | None
    threads: int | None
    skip: str | None
    spec: LayerSpec | None
    pass_: str = FORWARD
    grads: tuple[str, ...] | None = None

    def config_json(self) -> str:
        return json.dumps(dict(self.config), sort_keys=True, default=str)

    def axes_json(self) -> str:
        return json.dumps(dict(self.axes), sort_keys=True, default=str)

    def input_text(self) -> str | None:
        return ";".join("x".join(map(str, s)) for s in self.inputs) if self.inputs else None

    def grads_text(self) -> str | None:
        """``input,weight``: the row's ``grads`` column (``None`` for a forward case)."""
        return ",".join(self.grads) if self.grads is not None and self.pass_ != FORWARD else None


@dataclass(frozen=True, slots=True)
class Solve:
    axis: str
    keep: ast.Expression
    keep_text: str
    target: float
    multiple_of: str | int | None
    max: int


@dataclass(frozen=True, slots=True)
class Sweep:
    """One ``[[sweep]]`` table, validated."""

    file: str
    index: int
    family: str
    layer: str
    input: tuple[str, ...] | None
    memory_formats: tuple[str, ...]
    dtypes: tuple[str, ...]
    params: tuple[tuple[str, Any], ...]
    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    zipped: tuple[tuple[str, tuple[Any, ...]], ...]
    derive: tuple[tuple[str, ast.Expression], ...]
    solve: Solve | None
    #: The passes each point is timed in (crossed like dtypes); ``grads``: what a backward computes
    #: (``None``: every gradient the layer has).
    passes: tuple[str, ...] = (FORWARD,)
    grads: tuple[str, ...] | None = None

    def points(self) -> int:
        """Sweep points (before memory formats and dtypes)."""
        n = 1
        for _, values in self.axes:
            n *= len(values)
        return n * (len(self.zipped[0][1]) if self.zipped else 1)

    def size(self, dtypes: Sequence[str] | None = None) -> int:
        """Cases this sweep expands to."""
        return self.points() * len(self.memory_formats) * len(dtypes or self.dtypes) * len(self.passes)

    def _points(self) -> Iterator[dict[str, Any]]:
        names = [k for k, _ in self.axes]
        znames = [k for k, _ in self.zipped]
        zipped_rows = list(zip(*(v for _, v in self.zipped))) if self.zipped else [()]
        for combo in itertools.product(*(v for _, v in self.axes)):
            for zrow in zipped_rows:
                point = dict(self.params)
                point.update(zip(names, combo))
                point.update(zip(znames, zrow))
                yield point

    def expand(self, suite: str, dtypes: Sequence[str] | None, device: str | None,
               threads: int | None) -> Iterator[Case]:
        for point in self._points():
            for fmt in self.memory_formats:
                layer = _Layer.of(self, dict(point), fmt)
                for dtype in dtypes or self.dtypes:
                    for pass_ in self.passes:
                        yield layer.case(suite, self.family, dtype, device, threads, pass_, self.grads)


@dataclass(frozen=True, slots=True)
class _Layer:
    """A sweep point at one memory format: the validated spec and shapes, or why it is invalid."""

    layer: str
    config: tuple[tuple[str, Any], ...]
    inputs: tuple[tuple[int, ...], ...] | None
    axes: tuple[tuple[str, Any], ...]
    memory_format: str
    skip: str | None
    spec: LayerSpec | None

    @classmethod
    def of(cls, sweep: Sweep, env: dict[str, Any], fmt: str) -> _Layer:
        skip = None
        try:
            if sweep.solve is not None:
                env[sweep.solve.axis] = solve(sweep.solve, env, sweep.derive)
            for name, tree in sweep.derive:
                env[name] = evaluate(tree, env)
        except (ArithmeticError, ValueError, TypeError, KeyError) as e:
            skip = f"formula failed: {type(e).__name__}: {e}"
        keys = LAYERS[sweep.layer].keys()
        written = {keys[k]: v for k, v in env.items() if k in keys}
        axes = tuple(sorted(env.items()))
        if skip is not None:
            return cls(sweep.layer, tuple(sorted(written.items())), None, axes, fmt, skip, None)
        try:
            spec = parse_layer(sweep.layer, written)
            shapes = [parse_shape(fill_template(t, env)) for t in sweep.input] if sweep.input is not None else None
            inputs = tuple(tuple(s) for s in spec.inputs(shapes))
            if fmt == "channels_last" and not any(len(s) in (4, 5) for s in inputs):
                raise SpecError("memory_format", fmt, "nchw for inputs that are not 4-d or 5-d", sweep.layer)
        except SpecError as e:
            return cls(sweep.layer, tuple(sorted(written.items())), None, axes, fmt, str(e), None)
        return cls(sweep.layer, tuple(sorted(spec.canonical().items())), inputs, axes, fmt, None, spec)

    def case(self, suite: str, family: str, dtype: str, device: str | None, threads: int | None,
             pass_: str = FORWARD, declared: tuple[str, ...] | None = None) -> Case:
        what = ids.config_key(self.layer, self.config, self.inputs, self.memory_format, dtype)
        if self.skip is not None:      # invalid before validation: the point's names tell two such cases apart
            what.append(ids.pairs(self.axes))
        config_id = ids.digest(what)
        grads, skip = self._grads(pass_, declared)
        if pass_ != FORWARD:           # forward ids stay as they were: the same case, the same history
            what = what + [["pass", pass_], ["grads", list(grads) if grads is not None else None]]
        axis_threads = dict(self.axes).get(THREADS_AXIS)
        if axis_threads is not None:          # a `threads` axis: one case per thread count, same config_id
            what = what + [[THREADS_AXIS, axis_threads]]
            n = usable_cpus() if axis_threads == "all" else axis_threads
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 4096:
                skip = skip or f"threads={axis_threads!r}: expected an integer in [1, 4096] or \"all\""
            else:
                threads = n
        return Case(case_id=ids.case_id(family, what), config_id=config_id, suite=suite, family=family,
                    layer=self.layer, config=self.config, inputs=self.inputs, axes=self.axes,
                    memory_format=self.memory_format, dtype=dtype, device=device, threads=threads, skip=skip,
                    spec=self.spec if skip is None else None, pass_=pass_, grads=grads)

    def _grads(self, pass_: str, declared: tuple[str, ...] | None) -> tuple[tuple[str, ...] | None, str | None]:
        """The gradients a case of ``pass_`` computes (``declared``, or every gradient the layer has)
        and the skip reason: the point's own, or a weight gradient asked of a layer without parameters."""
        if pass_ == FORWARD:
            return None, self.skip
        if self.spec is None:
            return declared, self.skip
        has = ("input", "weight") if self.spec.has_parameters() else ("input",)
        if declared is None:
            return tuple(g for g in GRADIENTS if g in has), self.skip
        if "weight" in declared and "weight" not in has:
            why = SpecError("grads", list(declared), "['input']: the layer has no parameters, so no weight gradient",
                            self.layer)
            return declared, self.skip or str(why)
        return declared, self.skip


#: An axis of this name sets the case's CPU threads (a thread sweep); it is part of the case id.
#: ``"all"`` is every CPU this process may run on (its affinity).
THREADS_AXIS = "threads"


def usable_cpus() -> int:
    """CPUs this process may run on (affinity), else the CPU count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def fill_template(template: str, env: Mapping[str, Any]) -> str:
    """``{batch}x{c}x{size}`` with integer values from ``env`` (no attribute or index lookups:
    templates are validated at load to hold only ``{name}`` placeholders)."""
    def sub(m: re.Match[str]) -> str:
        v = env[m.group(1)]
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                return str(int(v))
            raise SpecError(m.group(1), v, "an integer size in the input template", "input")
        return str(v)
    return _PLACEHOLDER.sub(sub, template)


def solve(spec: Solve, env: dict[str, Any], derive: Sequence[tuple[str, ast.Expression]]) -> int:
    """Smallest-error integer value of ``spec.axis`` making ``keep`` equal the target (``keep`` must
    grow with the axis), rounded to a multiple of ``multiple_of``; ValueError when none fits."""
    def value(x: int) -> float:
        e = dict(env)
        e[spec.axis] = x
        for name, tree in derive:
            if name != spec.axis:
                try:
                    e[name] = evaluate(tree, e)
                except KeyError:
                    pass
        return float(evaluate(spec.keep, e))

    step = spec.multiple_of if isinstance(spec.multiple_of, int) else (
        int(env[spec.multiple_of]) if spec.multiple_of else 1)
    if step < 1:
        raise ValueError(f"multiple_of={step}: expected a positive integer")
    lo, hi = 1, max(1, spec.max // step)
    while lo < hi:                       # first multiple m*step with keep >= target
        mid = (lo + hi) // 2
        if value(mid * step) >= spec.target:
            hi = mid
        else:
            lo = mid + 1
    best = min((m for m in (lo - 1, lo) if m >= 1), key=lambda m: abs(value(m * step) - spec.target))
    return best * step


@dataclass(frozen=True, slots=True)
class Suite:
    """A parsed suite: settings and its sweeps (expanded lazily by ``cases()``)."""

    name: str
    path: str
    description: str
    devices: tuple[str, ...]
    dtypes: tuple[str, ...]
    budget_s: float
    target_rel_ci: float
    warmup_s: float
    min_reps: int
    threads: int | None
    sweeps: tuple[Sweep, ...]
    mode: str = "auto"
    #: Fresh worker processes per case (1-64); ``None``: the caller's default.
    processes: int | None = None
    #: ``OMP_WAIT_POLICY`` of the measuring processes, ``active`` or ``passive``; ``None``: leave the
    #: environment alone.
    omp_wait: str | None = None
    #: The suite's ``passes`` (each sweep's own, where it sets them, are in ``sweeps``).
    passes: tuple[str, ...] = (FORWARD,)

    def cases(self, dtypes: Sequence[str] | None = None, device: str | None = None) -> Iterator[Case]:
        """Every case, in file order (deterministic): each sweep point x memory format x dtype
        (``dtypes`` overrides the suite's), tagged with ``device`` when given. A run stores exactly
        these rows."""
        for sweep in self.sweeps:
            yield from sweep.expand(self.name, dtypes, device, self.threads)

    def count(self, dtypes: Sequence[str] | None = None) -> int:
        """Number of cases (rows a run makes), without building any spec."""
        return sum(s.size(dtypes) for s in self.sweeps)

    def with_passes(self, passes: Sequence[str]) -> Suite:
        """This suite with every sweep timed in ``passes`` (``--pass``: validated by the caller), as
        ``dtypes`` given to ``cases`` replace every sweep's dtypes."""
        chosen = tuple(passes)
        return dataclasses.replace(self, passes=chosen,
                                   sweeps=tuple(dataclasses.replace(s, passes=chosen) for s in self.sweeps))

    def all_passes(self) -> tuple[str, ...]:
        """The passes its sweeps are timed in, in ``harness.record.PASSES`` order."""
        held = {p for s in self.sweeps for p in s.passes}
        return tuple(p for p in PASSES if p in held)
