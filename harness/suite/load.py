"""Loading a suite file: every key checked before anything runs, with bounds on every setting,
list and formula, so that a suite is either refused with one line naming the file, the key, the
value and what was expected, or expands into cases (docs/suites.md: the format and "Hostile input")."""

from __future__ import annotations

import difflib
import importlib.resources
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.backends import backend_types
from harness.errors import LayerbenchError, SpecError, shown
from harness.layers.dtypes import canonical_dtype
from harness.layers.spec import LAYERS, LayerSpec
from harness.record import GRADIENTS, MODES, OMP_WAIT_POLICIES, PASSES, SAFE_NAME, safe_name
from harness.suite.formula import FormulaError, compile_formula, evaluate, formula_names
from harness.suite.model import FORWARD, THREADS_AXIS, Solve, Suite, Sweep

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MEMORY_FORMATS = ("nchw", "channels_last")
#: Bounds (docs/suites.md, "Hostile input"): file size, cases per suite, sweeps, values per axis, text.
MAX_FILE_BYTES = 1 << 20
MAX_CASES = 1_000_000
MAX_SWEEPS = 1000
MAX_AXIS_VALUES = 10_000
MAX_TEXT = 2000
#: A suite name becomes a directory name: letters, digits, ``.``, ``_``, ``-``; no leading dot.
MAX_NAME = 64
IDENT = re.compile(r"[A-Za-z_]\w{0,63}")
#: Largest number a suite may hold (2^53: every integer below it is exact in a float).
MAX_NUMBER = 2**53
#: Most input templates of one sweep.
MAX_INPUTS = 16
#: The declared keys (docs/suites.md): key -> the TOML type it must have. Every key a suite may
#: hold is here; tests enumerate these tables so that a new key cannot go untested.
_NUM = (int, float)
TOP_KEYS: dict[str, Any] = {
    "name": str, "description": str, "devices": list, "dtypes": list, "mode": str, "budget_s": _NUM,
    "target_rel_ci": _NUM, "warmup_s": _NUM, "min_reps": int, "threads": int, "processes": int, "omp_wait": str,
    "memory_format": list, "passes": list, "sweep": list}
#: Numeric settings: key -> (lowest, highest, what is expected).
BOUNDS: dict[str, tuple[float, float, str]] = {
    "budget_s": (1e-3, 3600, "seconds in [0.001, 3600]"),
    "target_rel_ci": (1e-6, 1, "a fraction in [0.000001, 1]"),
    "warmup_s": (0, 60, "seconds in [0, 60]"), "min_reps": (1, 100_000, "an integer in [1, 100000]"),
    "threads": (1, 4096, "an integer in [1, 4096]"), "processes": (1, 64, "an integer in [1, 64]")}
#: ``omp_wait``: the OpenMP wait policy the measuring processes get (``OMP_WAIT_POLICY``).
OMP_WAIT = OMP_WAIT_POLICIES
SWEEP_KEYS: dict[str, Any] = {
    "family": str, "layer": str, "input": (str, list), "memory_format": list, "dtypes": list, "passes": list,
    "grads": list, "params": dict, "axes": dict, "zip": dict, "derive": dict, "solve": dict}
SOLVE_KEYS: dict[str, Any] = {
    "axis": str, "keep": str, "equal_to": _NUM, "like": dict, "multiple_of": (str, int), "max": int}
#: An axis given as a range table: ``{start, stop, step}`` or ``{start, stop, mul}`` (stop included).
RANGE_KEYS = ("start", "stop", "step", "mul")
_TYPE_NAMES = {str: "a string", list: "a list", dict: "a table", int: "an integer", _NUM: "a number",
               (str, list): "a string or a list of strings", (str, int): "a name or an integer"}


class SuiteError(LayerbenchError, ValueError):
    """A malformed suite file: names the file, the key (or line) and what was expected."""

    def __init__(self, file: str, key: str, value: Any, expected: str) -> None:
        self.file, self.key, self.value, self.expected = file, key, value, expected
        super().__init__(f"{file}: {key}={shown(value)} is invalid: expected {expected}")


def _type_ok(value: Any, expected: Any) -> bool:
    if expected in (int, _NUM) and isinstance(value, bool):
        return False
    return isinstance(value, expected)


def _check_keys(table: Mapping[str, Any], allowed: Mapping[str, Any], file: str, prefix: str) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise SuiteError(file, f"{prefix}{key}", value, "one of the keys " + ", ".join(sorted(allowed)))
        if not _type_ok(value, allowed[key]):
            raise SuiteError(file, f"{prefix}{key}", value, _TYPE_NAMES.get(allowed[key], str(allowed[key])))


def _setting(data: Mapping[str, Any], key: str, default: Any, file: str) -> Any:
    v = data.get(key, default)
    if v is None:
        return None
    lo, hi, what = BOUNDS[key]
    if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
        raise SuiteError(file, key, v, what)
    return v


def _text(v: Any, file: str, key: str) -> str:
    if not isinstance(v, str) or len(v) > MAX_TEXT or any(ord(ch) < 32 and ch not in "\t" for ch in v):
        raise SuiteError(file, key, v, f"text of at most {MAX_TEXT} characters without control characters")
    return v


def _list(v: Any, file: str, key: str) -> list[Any]:
    if not isinstance(v, list) or not v:
        raise SuiteError(file, key, v, "a non-empty list")
    return v


def _range(v: dict[str, Any], file: str, key: str) -> tuple[Any, ...]:
    extra = set(v) - set(RANGE_KEYS)
    if extra or "start" not in v or "stop" not in v or ("step" in v) == ("mul" in v):
        raise SuiteError(file, key, v, "a range {start, stop, step} or {start, stop, mul} (stop included)")
    start, stop, by = v["start"], v["stop"], v.get("step", v.get("mul"))
    if not all(isinstance(x, int) and not isinstance(x, bool) and abs(x) <= MAX_NUMBER for x in (start, stop, by)):
        raise SuiteError(file, key, v, "integers of magnitude at most 2**53 in a range")
    if "step" in v:
        if by <= 0:
            raise SuiteError(file, key, v, "step > 0")
        count = (stop - start) // by + 1
    else:
        if by <= 1 or start <= 0:
            raise SuiteError(file, key, v, "mul > 1 and start > 0")
        count = int(math.log(stop / start, by) + 1e-9) + 1 if stop >= start else 0
    if count < 1:
        raise SuiteError(file, key, v, "a range with at least one value (start <= stop)")
    if count > MAX_AXIS_VALUES:
        raise SuiteError(file, key, v, f"at most {MAX_AXIS_VALUES} values (this range has {count})")
    if "step" in v:
        return tuple(range(start, stop + 1, by))
    out, x = [], start
    while x <= stop:
        out.append(x)
        x *= by
    return tuple(out)


def _values(v: Any, file: str, key: str, distinct: bool = True) -> tuple[Any, ...]:
    """An axis's values: a non-empty list of scalars (distinct for a crossed axis), or a range table."""
    if isinstance(v, dict):
        return _range(v, file, key)
    if isinstance(v, list):
        _list(v, file, key)
        if len(v) > MAX_AXIS_VALUES:
            raise SuiteError(file, key, f"{len(v)} values", f"at most {MAX_AXIS_VALUES} values")
        for x in v:
            _scalar(x, file, key)
        seen: list[Any] = []
        for x in v if distinct else ():
            if any(type(x) is type(y) and x == y for y in seen):
                raise SuiteError(file, key, v, f"distinct values ({x!r} is listed twice: the case would repeat)")
            seen.append(x)
        return tuple(v)
    return (_scalar(v, file, key),)


def _scalar(x: Any, file: str, key: str) -> Any:
    if isinstance(x, float) and not (math.isfinite(x) and abs(x) <= MAX_NUMBER):
        raise SuiteError(file, key, x, "a finite number of magnitude at most 2**53")
    if isinstance(x, str):
        _text(x, file, key)
    elif not isinstance(x, (int, float, bool)) or (isinstance(x, int) and abs(x) > MAX_NUMBER):
        raise SuiteError(file, key, x, "a number (magnitude at most 2**53), a string or a boolean")
    return x


def _dtypes(values: Any, file: str, key: str) -> tuple[str, ...]:
    """The dtypes under their canonical names (``float16`` -> ``fp16``: one case id for one dtype)."""
    out = []
    for d in _list(values, file, key):
        try:
            out.append(canonical_dtype(d))
        except SpecError as e:
            raise SuiteError(file, key, d, e.expected) from None
    if len(set(out)) != len(out):
        raise SuiteError(file, key, values, "distinct dtypes")
    return tuple(out)


#: How a one-line error lists what ``passes`` and ``grads`` may hold.
PASSES_TEXT = "a list of distinct passes: " + ", ".join(PASSES)
GRADS_TEXT = ("a list of distinct gradients: ['input', 'weight'] (both), ['weight'] (a first layer: the input "
              "needs none) or ['input'] (parameters frozen)")


def parse_passes(values: Any, field: str = "passes") -> tuple[str, ...]:
    """The passes of a suite, a sweep or ``--pass`` (a non-empty list of distinct ``PASSES``), in the
    order given; ``SpecError`` naming ``field`` otherwise."""
    if not isinstance(values, list) or not values:
        raise SpecError(field, values, PASSES_TEXT)
    for v in values:
        if v not in PASSES:
            raise SpecError(field, v, "one of " + ", ".join(PASSES))
    if len(set(values)) != len(values):
        raise SpecError(field, values, PASSES_TEXT)
    return tuple(values)


def _passes(values: Any, file: str, key: str) -> tuple[str, ...]:
    try:
        return parse_passes(values, key)
    except SpecError as e:
        raise SuiteError(file, key, e.value, e.expected) from None


def _grads(values: Any, file: str, key: str) -> tuple[str, ...]:
    """A sweep's ``grads``: distinct names of ``GRADIENTS``, stored in that order (``weight, input`` is
    the same case as ``input, weight``)."""
    if not isinstance(values, list) or not values or len(set(map(str, values))) != len(values):
        raise SuiteError(file, key, values, GRADS_TEXT)
    for v in values:
        if v not in GRADIENTS:
            raise SuiteError(file, key, v, "input or weight (" + GRADS_TEXT + ")")
    return tuple(g for g in GRADIENTS if g in values)


def _memory_formats(values: Any, file: str, key: str) -> tuple[str, ...]:
    for v in _list(values, file, key):
        if v not in MEMORY_FORMATS:
            raise SuiteError(file, key, v, "one of " + ", ".join(MEMORY_FORMATS))
    if len(set(values)) != len(values):
        raise SuiteError(file, key, values, "distinct memory formats")
    return tuple(values)


def _formula(text: Any, file: str, key: str) -> Any:
    try:
        return compile_formula(text)
    except FormulaError as e:
        raise SuiteError(file, key, text, str(e)) from None


def _template(t: Any, file: str, key: str) -> str:
    """Only ``{name}`` placeholders between sizes: ``{batch}x{c}x{size}x{size}``, ``1x{in}x6x6``."""
    if not isinstance(t, str) or not re.fullmatch(r"(\{[A-Za-z_]\w*\}|[0-9]+)(x(\{[A-Za-z_]\w*\}|[0-9]+))*", t):
        raise SuiteError(file, key, t, "a shape template such as '{batch}x{in}x{size}x{size}' ({name} "
                                       "placeholders and integers joined by x)")
    return t


def _names(table: Mapping[str, Any], file: str, key: str) -> None:
    for name in table:
        if not IDENT.fullmatch(str(name)):
            raise SuiteError(file, f"{key}.{name}", name, "a name of letters, digits and _ (not starting with a digit)")


def _solve(s: dict[str, Any], params: tuple[tuple[str, Any], ...], derive: tuple[tuple[str, Any], ...], file: str,
           p: str) -> Solve:
    _check_keys(s, SOLVE_KEYS, file, f"{p}solve.")
    for need in ("axis", "keep"):
        if need not in s:
            raise SuiteError(file, f"{p}solve.{need}", None, "a value")
    if ("equal_to" in s) == ("like" in s):
        raise SuiteError(file, f"{p}solve", s, "exactly one of equal_to (a number) or like (a table of names)")
    keep = _formula(s["keep"], file, f"{p}solve.keep")
    mult = s.get("multiple_of")
    if isinstance(mult, int) and not 1 <= mult <= 2**31:
        raise SuiteError(file, f"{p}solve.multiple_of", mult, "an integer in [1, 2**31] or a name")
    top = s.get("max", 1 << 16)
    if not 1 <= top <= 2**31:
        raise SuiteError(file, f"{p}solve.max", top, "an integer in [1, 2**31]")
    if "like" in s:
        _names(s["like"], file, f"{p}solve.like")
        like = {k: _scalar(v, file, f"{p}solve.like.{k}") for k, v in s["like"].items()}
        ref = dict(params) | like
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
        target = float(_scalar(s["equal_to"], file, f"{p}solve.equal_to"))
    return Solve(axis=s["axis"], keep=keep, keep_text=s["keep"], target=target, multiple_of=mult, max=top)


def _missing_input(sweep: Sweep, p: str) -> SuiteError:
    return SuiteError(sweep.file, f"{p}input", None, f"an input shape template: {sweep.layer} has no default "
                      "input (e.g. input = \"{batch}x{in}x56x56\")")


def _check_names(sweep: Sweep, templates_read: set[str], p: str) -> None:
    """Every name is used (a layer parameter, a template name, or read by a formula) and every name
    read is defined: a typo fails loudly."""
    keys = LAYERS[sweep.layer].keys()
    fields = set(keys.values())
    read = set(templates_read)
    for _, tree in sweep.derive:
        read |= formula_names(tree)
    if sweep.solve:
        read |= formula_names(sweep.solve.keep)
        if isinstance(sweep.solve.multiple_of, str):
            read.add(sweep.solve.multiple_of)
    defined = [(f"params.{k}", k) for k, _ in sweep.params] + [(f"axes.{k}", k) for k, _ in sweep.axes] + \
              [(f"zip.{k}", k) for k, _ in sweep.zipped] + [(f"derive.{k}", k) for k, _ in sweep.derive]
    if sweep.solve:
        defined.append(("solve.axis", sweep.solve.axis))
    seen: set[str] = set()
    for where, name in defined:
        if name in seen:
            raise SuiteError(sweep.file, f"{p}{where}", name,
                             "each name defined once (in params, axes, zip, derive or solve)")
        seen.add(name)
        if name not in keys and name not in fields and name not in read and name != THREADS_AXIS:
            if sweep.input is None and not difflib.get_close_matches(name, list(keys) + list(fields), cutoff=0.75):
                raise _missing_input(sweep, p)          # a name of the template the sweep does not have
            raise SuiteError(sweep.file, f"{p}{where}", name, f"a parameter of {sweep.layer} ("
                             + ", ".join(sorted(keys)) + "), a name in the input template, or a name a formula reads")
    for name in sorted(read - seen):
        raise SuiteError(sweep.file, f"{p}input" if name in templates_read else f"{p}derive",
                         name, "a name defined in params, axes, zip, derive or solve")


def _sweep(i: int, raw: Any, file: str, dtypes: tuple[str, ...], fmts: tuple[str, ...],
           passes: tuple[str, ...] = (FORWARD,)) -> Sweep:
    p = f"sweep[{i}]."
    if not isinstance(raw, dict):
        raise SuiteError(file, f"sweep[{i}]", raw, "a table ([[sweep]])")
    _check_keys(raw, SWEEP_KEYS, file, p)
    layer = str(raw.get("layer", "")).lower()
    if layer not in LAYERS:
        raise SuiteError(file, f"{p}layer", raw.get("layer"), "one of " + ", ".join(sorted(LAYERS)))
    inputs = raw.get("input")
    if isinstance(inputs, list) and len(inputs) > MAX_INPUTS:
        raise SuiteError(file, f"{p}input", f"{len(inputs)} templates", f"at most {MAX_INPUTS} input templates")
    templates = None if inputs is None else tuple(
        _template(t, file, f"{p}input") for t in ([inputs] if isinstance(inputs, str) else _list(inputs, file,
                                                                                                    f"{p}input")))
    for key in ("params", "axes", "zip", "derive"):
        _names(raw.get(key, {}), file, f"{p}{key}")
    params = tuple((k, _scalar(v, file, f"{p}params.{k}")) for k, v in raw.get("params", {}).items())
    axes = tuple((k, _values(v, file, f"{p}axes.{k}")) for k, v in raw.get("axes", {}).items())
    zipped = tuple((k, _values(v, file, f"{p}zip.{k}", distinct=False)) for k, v in raw.get("zip", {}).items())
    if len({len(v) for _, v in zipped}) > 1:
        raise SuiteError(file, f"{p}zip", {k: len(v) for k, v in zipped}, "zipped axes of equal length")
    zrows = [tuple((type(x).__name__, x) for x in r) for r in zip(*(v for _, v in zipped))]
    if len(set(zrows)) != len(zrows):
        raise SuiteError(file, f"{p}zip", dict(zipped), "distinct rows (a repeated row would repeat its case)")
    derive = tuple((k, _formula(v, file, f"{p}derive.{k}")) for k, v in raw.get("derive", {}).items())
    solve = _solve(raw["solve"], params, derive, file, p) if "solve" in raw else None
    sweep = Sweep(file=file, index=i, family=_text(raw.get("family", layer), file, f"{p}family"), layer=layer,
                  input=templates,
                  memory_formats=_memory_formats(raw["memory_format"], file, f"{p}memory_format")
                  if "memory_format" in raw else fmts,
                  dtypes=_dtypes(raw["dtypes"], file, f"{p}dtypes") if "dtypes" in raw else dtypes,
                  params=params, axes=axes, zipped=zipped, derive=derive, solve=solve,
                  passes=_passes(raw["passes"], file, f"{p}passes") if "passes" in raw else passes,
                  grads=_grads(raw["grads"], file, f"{p}grads") if "grads" in raw else None)
    if sweep.grads is not None and sweep.passes == (FORWARD,):
        raise SuiteError(file, f"{p}grads", list(sweep.grads), "grads only where the sweep times a backward "
                         "(passes with backward or forward+backward)")
    _check_names(sweep, {m for t in templates or () for m in re.findall(r"{(\w+)}", t)}, p)
    if templates is None and LAYERS[layer].default_inputs is LayerSpec.default_inputs:
        raise _missing_input(sweep, p)
    return sweep


def parse_suite(data: Mapping[str, Any], file: str = "<suite>", name: str | None = None) -> Suite:
    """Validate a suite's TOML data (as ``tomllib.loads`` returns it) into a ``Suite``."""
    if not isinstance(data, Mapping):
        raise SuiteError(file, "suite", data, "a table of settings and [[sweep]] tables")
    _check_keys(data, TOP_KEYS, file, "")
    suite_name = data.get("name", name or Path(file).stem)
    try:
        safe_name(suite_name, "name", MAX_NAME)
    except SpecError as e:
        raise SuiteError(file, "name", suite_name, e.expected) from None
    devices = tuple(_list(data.get("devices", ["cpu"]), file, "devices"))
    for d in devices:
        if not isinstance(d, str) or d.split(":", 1)[0] not in backend_types():
            raise SuiteError(file, "devices", d, " or ".join(backend_types()))
    if len(set(devices)) != len(devices):
        raise SuiteError(file, "devices", list(devices), "distinct devices")
    omp_wait = data.get("omp_wait")
    if omp_wait is not None and omp_wait not in OMP_WAIT:
        raise SuiteError(file, "omp_wait", omp_wait, "active or passive (OMP_WAIT_POLICY of the measuring "
                         "processes; leave it out to keep the environment's)")
    dtypes = _dtypes(data.get("dtypes", ["fp32"]), file, "dtypes")
    fmts = _memory_formats(data.get("memory_format", ["nchw"]), file, "memory_format")
    passes = _passes(data["passes"], file, "passes") if "passes" in data else (FORWARD,)
    mode = data.get("mode", "auto")
    if mode not in MODES:
        raise SuiteError(file, "mode", mode, "hot, cold (GPU: L2 flushed before each call), graph (CUDA graphs) "
                         "or auto (graph for calls under 20 us on a GPU, else hot)")
    raw_sweeps = _list(data.get("sweep"), file, "sweep")
    if len(raw_sweeps) > MAX_SWEEPS:
        raise SuiteError(file, "sweep", f"{len(raw_sweeps)} sweeps", f"at most {MAX_SWEEPS} [[sweep]] tables")
    suite = Suite(name=suite_name, path=file, description=_text(data.get("description", ""), file, "description"),
                  devices=devices, dtypes=dtypes, budget_s=float(_setting(data, "budget_s", 1.0, file)),
                  target_rel_ci=float(_setting(data, "target_rel_ci", 0.01, file)),
                  warmup_s=float(_setting(data, "warmup_s", 0.1, file)),
                  min_reps=int(_setting(data, "min_reps", 10, file)), threads=_setting(data, "threads", None, file),
                  processes=_setting(data, "processes", None, file), omp_wait=omp_wait, mode=mode, passes=passes,
                  sweeps=tuple(_sweep(i, s, file, dtypes, fmts, passes) for i, s in enumerate(raw_sweeps)))
    if suite.count() > MAX_CASES:
        raise SuiteError(file, "sweep", f"{suite.count():,} cases", f"at most {MAX_CASES:,} cases per suite (split "
                         "it into several suites, or shard it)")
    return suite


def builtin_dir() -> Path:
    """The folder of the suites that ship with layerbench (package data ``harness.builtin_suites``)."""
    return Path(str(importlib.resources.files("harness.builtin_suites")))


def builtin_suites() -> list[str]:
    """Names of the built-in suites."""
    return sorted(p.stem for p in builtin_dir().glob("*.toml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """Load a suite file, or a built-in suite by name (``quick``, ``conv``, ...)."""
    path = Path(name_or_path)
    if not path.exists() and not path.suffix and SAFE_NAME.fullmatch(str(name_or_path)):
        path = builtin_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        raise SuiteError(str(name_or_path), "suite", str(name_or_path),
                         "a suite file or one of the built-in suites: " + ", ".join(builtin_suites()))
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SuiteError(str(path), "file", f"{path.stat().st_size:,} bytes", f"at most {MAX_FILE_BYTES:,} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(str(path), "file", type(e).__name__, f"a readable UTF-8 file ({e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(str(path), "toml", str(e), "valid TOML") from None
    except RecursionError:
        raise SuiteError(str(path), "toml", "nesting too deep", "valid TOML of reasonable depth") from None
    return parse_suite(data, str(path))
