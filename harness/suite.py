"""Suites: TOML files declaring sweeps over layer configurations, expanded into cases.

A sweep is axes (a cross product), zipped axes (varied together), constant parameters, derived
parameters (small formulas over the axes) and optionally one axis *solved* so that a quantity
(e.g. ``c * c / g``, proportional to a conv's FLOPs) stays constant: an equal-FLOPs family.
Invalid combinations become cases with a ``skip`` reason, never dropped; a malformed file is
rejected before anything runs. Format: README, "Suites".
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import keyword
import math
import operator
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.dtypes import parse_dtype
from harness.errors import LayerbenchError, SpecError
from harness.spec import LAYERS, LayerSpec, parse_layer, parse_shape
from harness.timing.measure import MODES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Folder of the suites that ship with layerbench (``layerbench run quick``).
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "suites"
MEMORY_FORMATS = ("nchw", "channels_last")
DEVICES = ("cpu", "cuda")

_TOP_KEYS = {"name": str, "description": str, "devices": list, "dtypes": list, "mode": str, "budget_s": (int, float),
             "target_rel_ci": (int, float), "warmup_s": (int, float), "min_reps": int, "threads": int,
             "memory_format": list, "sweep": list}
_SWEEP_KEYS = {"family": str, "layer": str, "input": (str, list), "memory_format": list, "dtypes": list,
               "params": dict, "axes": dict, "zip": dict, "derive": dict, "solve": dict}
_SOLVE_KEYS = {"axis": str, "keep": str, "equal_to": (int, float), "like": dict, "multiple_of": (str, int),
               "max": int}
_TYPE_NAMES = {str: "a string", list: "a list", dict: "a table", int: "an integer", (int, float): "a number",
               (str, list): "a string or a list of strings", (str, int): "an axis name or an integer"}


class SuiteError(LayerbenchError, ValueError):
    """A malformed suite file: names the file, the key (or line) and what was expected."""

    def __init__(self, file: str, key: str, value: Any, expected: str) -> None:
        self.file, self.key, self.value, self.expected = file, key, value, expected
        super().__init__(f"{file}: {key}={value!r} is invalid: expected {expected}")


# --- formulas over axes ---------------------------------------------------------------------------

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_FUNCS = {"round": round, "int": int, "min": min, "max": max, "abs": abs, "ceil": math.ceil, "floor": math.floor}


def compile_formula(text: str, file: str, key: str) -> ast.Expression:
    """Parse an arithmetic formula (+ - * / // % **, numbers, axis names, round/int/min/max/abs/ceil/floor)."""
    # axis names may be Python keywords (``in``): parse them as ``in_`` and read them back as ``in``
    text_py = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: m.group(0) + "_" if keyword.iskeyword(m.group(0)) else m.group(0),
                     text)
    try:
        tree = ast.parse(text_py, mode="eval")
    except SyntaxError as e:
        raise SuiteError(file, key, text, f"an arithmetic formula ({e.msg})") from None
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.USub, ast.UAdd, ast.Constant, ast.Name,
                               ast.Load, ast.Call, *_BINOPS))
        if not ok or (isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS)):
            raise SuiteError(file, key, text, "arithmetic on axis names and numbers only, with "
                             + "/".join(_FUNCS))
    return tree


def _axis(name: str) -> str:
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


def formula_names(tree: ast.Expression) -> set[str]:
    """Axis names a formula reads."""
    return {_axis(n.id) for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in _FUNCS}


def evaluate(tree: ast.AST, env: Mapping[str, Any]) -> Any:
    """Value of a compiled formula with ``env`` giving the axis values."""
    if isinstance(tree, ast.Expression):
        return evaluate(tree.body, env)
    if isinstance(tree, ast.Constant):
        return tree.value
    if isinstance(tree, ast.Name):
        return env[_axis(tree.id)]
    if isinstance(tree, ast.UnaryOp):
        v = evaluate(tree.operand, env)
        return -v if isinstance(tree.op, ast.USub) else v
    if isinstance(tree, ast.BinOp):
        return _BINOPS[type(tree.op)](evaluate(tree.left, env), evaluate(tree.right, env))
    if isinstance(tree, ast.Call):
        return _FUNCS[tree.func.id](*(evaluate(a, env) for a in tree.args))  # type: ignore[union-attr]
    raise TypeError(type(tree).__name__)


# --- the data ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Case:
    """One layer configuration of a suite (devices and dtypes are crossed with it by the runner).

    Attributes:
        case_id: stable id: a hash of family, layer, parameters, input shapes and memory format.
        family: the sweep's family label (equal-FLOPs families share one).
        layer: layer kind (``conv2d``); params: the layer's key=value parameters as written.
        inputs: input shapes (``None`` when skipped before shapes were known).
        axes: every axis and derived value of this case (``batch``, ``size``, ``c``...).
        memory_format: ``nchw`` or ``channels_last``.
        dtypes: the sweep's dtypes (the CLI's ``--dtype`` overrides them).
        skip: why the configuration is invalid (the row gets status ``skipped``), else ``None``.
        spec: the validated layer spec (``None`` when skipped).
    """

    case_id: str
    suite: str
    family: str
    layer: str
    params: tuple[tuple[str, Any], ...]
    inputs: tuple[tuple[int, ...], ...] | None
    axes: tuple[tuple[str, Any], ...]
    memory_format: str
    dtypes: tuple[str, ...]
    skip: str | None
    spec: LayerSpec | None


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

    def cases(self) -> Iterator[Case]:
        """Every case of every sweep, in file order (deterministic)."""
        for sweep in self.sweeps:
            yield from sweep.expand(self.name)

    def count(self) -> int:
        """Number of cases, without building their specs."""
        return sum(s.size() for s in self.sweeps)


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

    def size(self) -> int:
        n = len(self.memory_formats)
        for _, values in self.axes:
            n *= len(values)
        if self.zipped:
            n *= len(self.zipped[0][1])
        return n

    def _points(self) -> Iterator[dict[str, Any]]:
        names = [k for k, _ in self.axes]
        zipped_rows = list(zip(*(v for _, v in self.zipped))) if self.zipped else [()]
        znames = [k for k, _ in self.zipped]
        for combo in itertools.product(*(v for _, v in self.axes)):
            for zrow in zipped_rows:
                point = dict(self.params)
                point.update(zip(names, combo))
                point.update(zip(znames, zrow))
                yield point

    def expand(self, suite: str) -> Iterator[Case]:
        keys = LAYERS[self.layer].keys()
        fields = {v for v in keys.values()}
        for point in self._points():
            for fmt in self.memory_formats:
                yield self._case(suite, dict(point), fmt, keys, fields)

    def _case(self, suite: str, env: dict[str, Any], fmt: str, keys: Mapping[str, str], fields: set[str]) -> Case:
        skip = None
        try:
            if self.solve is not None:
                env[self.solve.axis] = _solve(self.solve, env, self.derive)
            for name, tree in self.derive:
                env[name] = evaluate(tree, env)
        except (ArithmeticError, ValueError, TypeError, KeyError) as e:
            skip = f"formula failed: {type(e).__name__}: {e}"
        params = tuple((k, v) for k, v in env.items() if k in keys or k in fields)
        axes = tuple(sorted(env.items()))
        spec = inputs = None
        if skip is None:
            try:
                spec = parse_layer(self.layer, dict(params))
                shapes = None
                if self.input is not None:
                    shapes = [parse_shape(t.format(**env)) for t in self.input]
                inputs = tuple(tuple(s) for s in spec.inputs(shapes))
                if fmt == "channels_last" and not any(len(s) in (4, 5) for s in inputs):
                    raise SpecError("memory_format", fmt, "nchw for inputs that are not 4-d or 5-d", self.layer)
            except SpecError as e:
                skip, spec = str(e), None
            except (KeyError, IndexError, ValueError) as e:
                skip, spec = f"input template {self.input}: {e}", None
        ident = json.dumps([self.family, self.layer, sorted((k, _plain(v)) for k, v in params), inputs, fmt],
                           default=str)
        case_id = hashlib.sha1(ident.encode()).hexdigest()[:16]
        return Case(case_id=case_id, suite=suite, family=self.family, layer=self.layer, params=params,
                    inputs=inputs, axes=axes, memory_format=fmt, dtypes=self.dtypes, skip=skip, spec=spec)


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _solve(solve: Solve, env: dict[str, Any], derive: Sequence[tuple[str, ast.Expression]]) -> int:
    """Smallest-error integer value of ``solve.axis`` making ``keep`` equal the target (``keep`` must
    grow with the axis), rounded to a multiple of ``multiple_of``; ValueError when none fits."""
    def value(x: int) -> float:
        e = dict(env)
        e[solve.axis] = x
        for name, tree in derive:
            if name != solve.axis:
                try:
                    e[name] = evaluate(tree, e)
                except KeyError:
                    pass
        return float(evaluate(solve.keep, e))

    step = solve.multiple_of if isinstance(solve.multiple_of, int) else (
        int(env[solve.multiple_of]) if solve.multiple_of else 1)
    lo, hi = 1, max(1, solve.max // step)
    while lo < hi:                       # first multiple m*step with keep >= target
        mid = (lo + hi) // 2
        if value(mid * step) >= solve.target:
            hi = mid
        else:
            lo = mid + 1
    best = min((m for m in (lo - 1, lo) if m >= 1), key=lambda m: abs(value(m * step) - solve.target))
    return best * step


# --- loading ----------------------------------------------------------------------------------------

def _type_ok(value: Any, expected: Any) -> bool:
    if expected in (int, (int, float)) and isinstance(value, bool):
        return False
    return isinstance(value, expected)


def _check_keys(table: Mapping[str, Any], allowed: Mapping[str, Any], file: str, prefix: str) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise SuiteError(file, f"{prefix}{key}", value, "one of the keys " + ", ".join(sorted(allowed)))
        if not _type_ok(value, allowed[key]):
            raise SuiteError(file, f"{prefix}{key}", value, _TYPE_NAMES.get(allowed[key], str(allowed[key])))


def _values(v: Any, file: str, key: str) -> tuple[Any, ...]:
    """An axis's values: a list of scalars, or a range table {start, stop, step} / {start, stop, mul}."""
    if isinstance(v, list):
        if not v:
            raise SuiteError(file, key, v, "a non-empty list")
        for x in v:
            if not isinstance(x, (int, float, str, bool)):
                raise SuiteError(file, key, v, "a list of numbers, strings or booleans")
        return tuple(v)
    if isinstance(v, dict):
        extra = set(v) - {"start", "stop", "step", "mul"}
        if extra or "start" not in v or "stop" not in v or ("step" in v) == ("mul" in v):
            raise SuiteError(file, key, v, "a range {start, stop, step} or {start, stop, mul} (stop included)")
        start, stop = v["start"], v["stop"]
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, stop, v.get("step", v.get("mul")))):
            raise SuiteError(file, key, v, "integers in a range")
        out = []
        if "step" in v:
            if v["step"] <= 0:
                raise SuiteError(file, key, v, "step > 0")
            out = list(range(start, stop + 1, v["step"]))
        else:
            if v["mul"] <= 1 or start <= 0:
                raise SuiteError(file, key, v, "mul > 1 and start > 0")
            x = start
            while x <= stop:
                out.append(x)
                x *= v["mul"]
        if not out:
            raise SuiteError(file, key, v, "a range with at least one value (start <= stop)")
        return tuple(out)
    if isinstance(v, (int, float, str, bool)):
        return (v,)
    raise SuiteError(file, key, v, "a list of values or a range table")


def _dtypes(values: list[Any], file: str, key: str) -> tuple[str, ...]:
    out = []
    for d in values:
        try:
            parse_dtype(d)
        except SpecError:
            raise SuiteError(file, key, d, "a dtype: fp32, fp16, bf16 (or fp64)") from None
        out.append(str(d).lower())
    return tuple(out)


def _memory_formats(values: list[Any], file: str, key: str) -> tuple[str, ...]:
    for v in values:
        if v not in MEMORY_FORMATS:
            raise SuiteError(file, key, v, "one of " + ", ".join(MEMORY_FORMATS))
    return tuple(values)


def _sweep(i: int, raw: Any, file: str, dtypes: tuple[str, ...], fmts: tuple[str, ...]) -> Sweep:
    p = f"sweep[{i}]."
    if not isinstance(raw, dict):
        raise SuiteError(file, f"sweep[{i}]", raw, "a table ([[sweep]])")
    _check_keys(raw, _SWEEP_KEYS, file, p)
    if "layer" not in raw:
        raise SuiteError(file, f"{p}layer", None, "a layer kind (e.g. conv2d)")
    layer = raw["layer"].lower()
    if layer not in LAYERS:
        raise SuiteError(file, f"{p}layer", raw["layer"], "one of " + ", ".join(sorted(LAYERS)))
    keys = LAYERS[layer].keys()
    inputs = raw.get("input")
    templates = None if inputs is None else tuple([inputs] if isinstance(inputs, str) else inputs)
    if templates is not None and not all(isinstance(t, str) for t in templates):
        raise SuiteError(file, f"{p}input", inputs, "a shape template such as '{batch}x{in}x{size}x{size}'")
    template_names = {m for t in templates or () for m in re.findall(r"{(\w+)}", t)}
    params = tuple((k, v) for k, v in raw.get("params", {}).items())
    axes = tuple((k, _values(v, file, f"{p}axes.{k}")) for k, v in raw.get("axes", {}).items())
    zipped = tuple((k, _values(v, file, f"{p}zip.{k}")) for k, v in raw.get("zip", {}).items())
    if len({len(v) for _, v in zipped}) > 1:
        raise SuiteError(file, f"{p}zip", {k: len(v) for k, v in zipped}, "zipped axes of equal length")
    derive = tuple((k, compile_formula(str(v), file, f"{p}derive.{k}")) for k, v in raw.get("derive", {}).items())
    solve = None
    if "solve" in raw:
        s = raw["solve"]
        _check_keys(s, _SOLVE_KEYS, file, f"{p}solve.")
        for need in ("axis", "keep"):
            if need not in s:
                raise SuiteError(file, f"{p}solve.{need}", None, "a value")
        if ("equal_to" in s) == ("like" in s):
            raise SuiteError(file, f"{p}solve", s, "exactly one of equal_to (a number) or like (a table of axes)")
        keep = compile_formula(s["keep"], file, f"{p}solve.keep")
        if "like" in s:
            ref = dict(params) | dict(s["like"])
            try:
                for name, tree in derive:
                    if name not in ref:
                        try:
                            ref[name] = evaluate(tree, ref)
                        except KeyError:
                            pass
                target = float(evaluate(keep, ref))
            except Exception as e:
                raise SuiteError(file, f"{p}solve.like", s["like"], f"values for every name in keep ({e})") from None
        else:
            target = float(s["equal_to"])
        solve = Solve(axis=s["axis"], keep=keep, keep_text=s["keep"], target=target,
                      multiple_of=s.get("multiple_of"), max=s.get("max", 1 << 16))
    # every name must be used: a layer parameter, an input-template name, or read by a formula
    read = set(template_names)
    for _, tree in derive:
        read |= formula_names(tree)
    if solve:
        read |= formula_names(solve.keep)
        if isinstance(solve.multiple_of, str):
            read.add(solve.multiple_of)
    fields = set(keys.values())
    defined = [(f"params.{k}", k) for k, _ in params] + [(f"axes.{k}", k) for k, _ in axes] + \
              [(f"zip.{k}", k) for k, _ in zipped] + [(f"derive.{k}", k) for k, _ in derive]
    if solve:
        defined.append(("solve.axis", solve.axis))
    seen: set[str] = set()
    for where, name in defined:
        if name in seen:
            raise SuiteError(file, f"{p}{where}", name,
                             "each name defined once (in params, axes, zip, derive or solve)")
        seen.add(name)
        if name not in keys and name not in fields and name not in read:
            raise SuiteError(file, f"{p}{where}", name, f"a parameter of {layer} (" + ", ".join(sorted(keys))
                             + "), a name in the input template, or a name a formula reads")
    for name in read:
        if name not in seen:
            raise SuiteError(file, f"{p}input" if name in template_names else f"{p}derive",
                             name, "a name defined in params, axes, zip, derive or solve")
    family = raw.get("family", layer)
    return Sweep(file=file, index=i, family=family, layer=layer, input=templates,
                 memory_formats=_memory_formats(raw["memory_format"], file, f"{p}memory_format")
                 if "memory_format" in raw else fmts,
                 dtypes=_dtypes(raw["dtypes"], file, f"{p}dtypes") if "dtypes" in raw else dtypes,
                 params=params, axes=axes, zipped=zipped, derive=derive, solve=solve)


def parse_suite(data: Mapping[str, Any], file: str = "<suite>", name: str | None = None) -> Suite:
    """Validate a suite's TOML data (as ``tomllib.loads`` returns it) into a ``Suite``."""
    _check_keys(data, _TOP_KEYS, file, "")
    devices = tuple(data.get("devices", ["cpu"]))
    for d in devices:
        if d not in DEVICES:
            raise SuiteError(file, "devices", d, "cpu or cuda")
    dtypes = _dtypes(data.get("dtypes", ["fp32"]), file, "dtypes")
    fmts = _memory_formats(data.get("memory_format", ["nchw"]), file, "memory_format")
    sweeps = data.get("sweep", [])
    if not sweeps:
        raise SuiteError(file, "sweep", sweeps, "at least one [[sweep]] table")
    mode = data.get("mode", "auto")
    if mode not in MODES:
        raise SuiteError(file, "mode", mode, "hot, cold (CUDA: L2 flushed before each call), graph (CUDA graphs) "
                         "or auto (graph for calls under 20 us on CUDA, else hot)")
    budget = float(data.get("budget_s", 1.0))
    rel = float(data.get("target_rel_ci", 0.01))
    if budget <= 0:
        raise SuiteError(file, "budget_s", budget, "seconds > 0")
    if rel <= 0:
        raise SuiteError(file, "target_rel_ci", rel, "a fraction > 0")
    return Suite(name=data.get("name", name or Path(file).stem), path=file, description=data.get("description", ""),
                 devices=devices, dtypes=dtypes, budget_s=budget, target_rel_ci=rel,
                 warmup_s=float(data.get("warmup_s", 0.1)), min_reps=int(data.get("min_reps", 10)),
                 threads=data.get("threads"), mode=mode,
                 sweeps=tuple(_sweep(i, s, file, dtypes, fmts) for i, s in enumerate(sweeps)))


def builtin_suites() -> list[str]:
    """Names of the suites shipped in ``suites/``."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """Load a suite file, or a built-in suite by name (``quick``, ``conv``, ...)."""
    path = Path(name_or_path)
    if not path.exists() and not path.suffix:
        path = BUILTIN_DIR / f"{name_or_path}.toml"
    if not path.exists():
        raise SuiteError(str(name_or_path), "suite", str(name_or_path),
                         "a suite file or one of the built-in suites: " + ", ".join(builtin_suites()))
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(str(path), "toml", str(e), "valid TOML") from None
    return parse_suite(data, str(path))
